"""The plugin manager's public functions, kept here for compatibility.

They live in :mod:`pg_mmretrieval.registry` (the plugin manager and every registry); this
module re-exports them so ``from pg_mmretrieval import plugins; plugins.reset()`` keeps
working.  New code imports ``pg_mmretrieval.registry``.
"""

from __future__ import annotations

from .registry import (
    ENTRY_POINT_GROUP,
    PluginInfo,
    call_prepare_connection,
    call_register_commands,
    encoder_origins,
    get_plugin_manager,
    list_plugins,
    load_encoders,
    load_loaders,
    load_rerankers,
    register_plugin,
    reset,
    unregister_plugin,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "PluginInfo",
    "call_prepare_connection",
    "call_register_commands",
    "encoder_origins",
    "get_plugin_manager",
    "list_plugins",
    "load_encoders",
    "load_loaders",
    "load_rerankers",
    "register_plugin",
    "reset",
    "unregister_plugin",
]
