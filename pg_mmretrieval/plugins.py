"""Plugin manager (placeholder until the pluggy-based system lands; see issue 3)."""

from __future__ import annotations

from typing import Any

__all__ = ["call_prepare_connection", "call_register_commands", "load_encoders"]


def call_prepare_connection(conn: Any) -> None:
    """Run every plugin's ``prepare_connection`` hook on a new connection."""
    return None


def call_register_commands(cli: Any) -> None:
    """Let plugins add commands to the ``mmr`` group."""
    return None


_loaded = False


def load_encoders() -> None:
    """Fill the encoder registry (placeholder: the built-in test encoders only)."""
    global _loaded
    if _loaded:
        return
    import importlib

    from .encoders import register_encoder

    test_encoders = importlib.import_module("pg_mmretrieval_plugins.test_encoders")

    for enc in test_encoders.encoders():
        register_encoder(enc)
    _loaded = True
