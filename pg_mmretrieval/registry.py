"""The plugin manager and every registry (encoders, loaders, rerankers) it fills.

This module owns the pluggy ``PluginManager`` and the registries; the base classes
(``pg_mmretrieval.bases``: Encoder, Loader, Reranker) know nothing of it (the shape of
``llm``'s ``plugins.py``).  ``pg_mmretrieval.plugins``, ``encoders``, ``loaders`` and
``rerankers`` re-export what they always offered from here.

Plugins (first-party ones in ``pg_mmretrieval_plugins`` included) are modules or objects
named in the ``pg_mmretrieval`` entry-point group.  ``MMR_LOAD_PLUGINS`` restricts loading to a
comma-separated list of entry-point names (an empty value loads none).  A plugin whose
functions look like hooks but match no hook specification (a misspelling) is refused.

Slightly over ~400 lines: the three registries share one loading and origin-tracking path,
which is the point of having one module own them.
"""

from __future__ import annotations

import importlib.metadata
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pluggy

from . import hookspecs
from .bases import Encoder, Loader, Reranker
from .config import ENV_LOAD_PLUGINS
from .errors import MMRError, NotFoundError, PluginError

__all__ = [
    "PluginInfo",
    "call_prepare_connection",
    "call_register_commands",
    "encoder_origins",
    "get_encoder",
    "get_loader",
    "get_plugin_manager",
    "get_reranker",
    "list_encoders",
    "list_loaders",
    "list_plugins",
    "list_rerankers",
    "load_encoders",
    "load_loaders",
    "load_rerankers",
    "register_encoder",
    "register_loader",
    "register_plugin",
    "register_reranker",
    "reset",
    "unregister_plugin",
]

ENTRY_POINT_GROUP = hookspecs.PROJECT


@dataclass
class PluginInfo:
    """What ``mmr plugins`` shows about one plugin."""

    name: str
    hooks: list[str]
    distribution: str | None = None
    version: str | None = None
    encoders: list[str] = field(default_factory=list)


_lock = threading.RLock()
_pm: pluggy.PluginManager | None = None
_dists: dict[str, tuple[str | None, str | None]] = {}
_done: set[str] = set()
# The registries.  Each dict is created once and only ever cleared (the historical
# ``_REGISTRY`` names of encoders, loaders and rerankers are these same objects).
_ENCODERS: dict[str, Encoder] = {}
_LOADERS: dict[str, Loader] = {}
_RERANKERS: dict[str, Reranker] = {}
#: which plugin registered each encoder / reranker (absent: registered by hand)
_encoder_origin: dict[str, str] = {}
_reranker_origin: dict[str, str] = {}


def _allowed() -> set[str] | None:
    raw = os.environ.get(ENV_LOAD_PLUGINS)
    if raw is None:
        return None
    return {p.strip() for p in raw.split(",") if p.strip()}


def _check(pm: pluggy.PluginManager) -> None:
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as e:
        raise PluginError(
            f"plugin {e.plugin!r} has a hook implementation that matches no hook: {e}. "
            "Check the spelling against docs/plugins.md."
        ) from e


def _load_entry_points(pm: pluggy.PluginManager) -> None:
    allowed = _allowed()
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if allowed is not None and ep.name not in allowed:
            continue
        if pm.get_plugin(ep.name) is not None or pm.is_blocked(ep.name):
            continue
        try:
            plugin = ep.load()
        except Exception as e:
            raise PluginError(f"plugin {ep.name!r} ({ep.value}) failed to import: {e}") from e
        try:
            pm.register(plugin, name=ep.name)
        except (ValueError, pluggy.PluginValidationError) as e:
            raise PluginError(f"plugin {ep.name!r} ({ep.value}) is invalid: {e}") from e
        dist = ep.dist
        _dists[ep.name] = (dist.name, dist.version) if dist is not None else (None, None)


def get_plugin_manager() -> pluggy.PluginManager:
    """The process's plugin manager, created (and entry points loaded) on first use.

    Raises:
        PluginError: a plugin failed to import or has a misspelled hook implementation.
    """
    global _pm
    with _lock:
        if _pm is None:
            pm = pluggy.PluginManager(hookspecs.PROJECT)
            pm.add_hookspecs(hookspecs)
            _load_entry_points(pm)
            _check(pm)
            _pm = pm
        return _pm


def _clear() -> None:
    _done.clear()
    for registry in (_ENCODERS, _LOADERS, _RERANKERS, _encoder_origin, _reranker_origin):
        registry.clear()


def reset() -> None:
    """Forget every plugin and registry (the next look-up loads them again).

    Use it after changing ``MMR_LOAD_PLUGINS`` or installing a plugin in the same process.
    """
    global _pm
    with _lock:
        _pm = None
        _dists.clear()
        _clear()


def register_plugin(plugin: object, name: str) -> None:
    """Register a plugin object by hand (tests, applications); registries are rebuilt.

    Raises:
        PluginError: the name is taken or the plugin has a misspelled hook implementation.
    """
    pm = get_plugin_manager()
    with _lock:
        try:
            pm.register(plugin, name=name)
        except (ValueError, pluggy.PluginValidationError) as e:
            raise PluginError(f"cannot register plugin {name!r}: {e}") from e
        try:
            _check(pm)
        except PluginError:
            pm.unregister(name=name)
            raise
        _clear()


def unregister_plugin(name: str) -> None:
    """Remove a plugin registered by :func:`register_plugin` (or an entry-point one)."""
    pm = get_plugin_manager()
    with _lock:
        if pm.get_plugin(name) is not None:
            pm.unregister(name=name)
        _clear()


def _call_each(hook_name: str, make_register: Callable[[str], Callable[[Any], None]]) -> None:
    """Call every implementation of a ``register_*`` hook, telling each register who calls."""
    pm = get_plugin_manager()
    caller = getattr(pm.hook, hook_name)
    # Registration order (pluggy itself calls LIFO): a later plugin's loader replaces an
    # earlier one for the same kind.
    for impl in caller.get_hookimpls():
        register = make_register(impl.plugin_name)
        try:
            impl.function(**{a: register for a in impl.argnames})
        except MMRError:
            raise
        except Exception as e:
            raise PluginError(f"plugin {impl.plugin_name!r} failed in {hook_name}: {e}") from e


def _forget(registry: dict[str, Any], origin: dict[str, str]) -> None:
    for name in origin:
        registry.pop(name, None)
    origin.clear()


def _load(what: str, hook_name: str, make: Callable[[str], Callable[[Any], None]]) -> None:
    """Fill one registry from its hook, once; on failure the next look-up tries again."""
    with _lock:
        if what in _done:
            return
        try:
            _call_each(hook_name, make)
        except BaseException:
            # forget what plugins registered (what was registered by hand stays)
            if what == "encoders":
                _forget(_ENCODERS, _encoder_origin)
            elif what == "rerankers":
                _forget(_RERANKERS, _reranker_origin)
            raise
        _done.add(what)


def load_encoders() -> None:
    """Fill the encoder registry from every plugin's ``register_encoders`` (once).

    Raises:
        PluginError: a plugin failed, registered a non-encoder, or a duplicate name.
    """

    def make(plugin: str) -> Callable[[Any], None]:
        def register(encoder: Any) -> None:
            if not isinstance(encoder, Encoder):
                raise PluginError(
                    f"plugin {plugin!r} registered {encoder!r}, which is not an Encoder"
                )
            if not encoder.name:
                raise PluginError(f"plugin {plugin!r} registered an encoder without a name")
            if encoder.name in _encoder_origin:
                raise PluginError(
                    f"plugins {_encoder_origin[encoder.name]!r} and {plugin!r} both "
                    f"register an encoder named {encoder.name!r}; disable one with "
                    f"{ENV_LOAD_PLUGINS}"
                )
            if encoder.name not in _ENCODERS:  # one registered by hand wins
                _ENCODERS[encoder.name] = encoder
                _encoder_origin[encoder.name] = plugin

        return register

    _load("encoders", "register_encoders", make)


def load_loaders() -> None:
    """Fill the loader registry from every plugin's ``register_loaders`` (once)."""

    def make(plugin: str) -> Callable[[Any], None]:
        def register(loader: Any) -> None:
            if not isinstance(loader, Loader) or not loader.kind:
                raise PluginError(f"plugin {plugin!r} registered an invalid loader {loader!r}")
            _LOADERS[loader.kind] = loader

        return register

    _load("loaders", "register_loaders", make)


def load_rerankers() -> None:
    """Fill the reranker registry from every plugin's ``register_rerankers`` (once)."""

    def make(plugin: str) -> Callable[[Any], None]:
        def register(reranker: Any) -> None:
            if not isinstance(reranker, Reranker) or not reranker.name:
                raise PluginError(f"plugin {plugin!r} registered an invalid reranker {reranker!r}")
            if reranker.name in _reranker_origin:
                raise PluginError(f"two plugins register a reranker named {reranker.name!r}")
            if reranker.name not in _RERANKERS:  # one registered by hand wins
                _RERANKERS[reranker.name] = reranker
                _reranker_origin[reranker.name] = plugin

        return register

    _load("rerankers", "register_rerankers", make)


# -- the registries' public API (re-exported by encoders, loaders and rerankers) --------------


def register_encoder(encoder: Encoder) -> None:
    """Add an encoder to the registry (plugins do this through ``register_encoders``)."""
    _ENCODERS[encoder.name] = encoder


def list_encoders() -> dict[str, Encoder]:
    """Registered encoders by name."""
    load_encoders()
    return dict(_ENCODERS)


def get_encoder(name: str, **options: Any) -> Encoder:
    """The registered encoder called ``name``, configured by ``options`` when given.

    Args:
        name: an encoder name (``mmr plugins`` lists them), e.g. ``minilm`` or ``minilm:int8``.
        options: encoder options, e.g. ``truncate=True`` (see :meth:`Encoder.with_options`).

    Raises:
        NotFoundError: no such encoder; the message lists the registered ones.
        InputError: an unknown option.
    """
    load_encoders()
    try:
        encoder = _ENCODERS[name]
    except KeyError:
        known = ", ".join(sorted(_ENCODERS)) or "none"
        raise NotFoundError(
            f"no encoder named {name!r}; registered encoders: {known}. "
            "Install or enable the plugin that provides it (`mmr plugins` lists them)."
        ) from None
    return encoder.with_options(**options) if options else encoder


def register_loader(loader: Loader) -> None:
    """Add a loader (plugins do this through ``register_loaders``); replaces the same kind."""
    _LOADERS[loader.kind] = loader


def list_loaders() -> dict[str, Loader]:
    """Registered loaders by kind."""
    load_loaders()
    return dict(_LOADERS)


def get_loader(kind: str) -> Loader:
    """The loader for cells of ``kind``.

    Raises:
        NotFoundError: no loader handles that kind.
    """
    load_loaders()
    try:
        return _LOADERS[kind]
    except KeyError:
        known = ", ".join(sorted(_LOADERS)) or "none"
        raise NotFoundError(f"no loader for cells of kind {kind!r}; known kinds: {known}") from None


def register_reranker(reranker: Reranker) -> None:
    """Add a Python reranker by hand (plugins do this through ``register_rerankers``); it
    replaces one of the same name.  A function ``(QueryInfo, hits) -> hits`` is registered as
    ``register_reranker(FunctionReranker(fn, name))``."""
    _RERANKERS[reranker.name] = reranker
    _reranker_origin.pop(reranker.name, None)


def list_rerankers() -> dict[str, Reranker]:
    """Registered rerankers by name."""
    load_rerankers()
    return dict(_RERANKERS)


def get_reranker(name: str) -> Reranker:
    """The reranker called ``name``.

    Raises:
        NotFoundError: no such reranker; the message lists the registered ones.
    """
    load_rerankers()
    try:
        return _RERANKERS[name]
    except KeyError:
        known = ", ".join(sorted(_RERANKERS)) or "none"
        raise NotFoundError(f"no reranker named {name!r}; registered rerankers: {known}") from None


# -- other hooks and introspection ------------------------------------------------------------


def call_prepare_connection(conn: Any) -> None:
    """Run every plugin's ``prepare_connection`` hook on a new connection."""
    try:
        get_plugin_manager().hook.prepare_connection(conn=conn)
    except MMRError:
        raise
    except Exception as e:
        raise PluginError(f"a plugin failed in prepare_connection: {e}") from e


def call_register_commands(cli: Any) -> None:
    """Let plugins add commands to the ``mmr`` group."""
    try:
        get_plugin_manager().hook.register_commands(cli=cli)
    except MMRError:
        raise
    except Exception as e:
        raise PluginError(f"a plugin failed in register_commands: {e}") from e


def encoder_origins() -> dict[str, str]:
    """Which plugin registered each encoder (encoder name -> plugin name)."""
    load_encoders()
    return dict(_encoder_origin)


def list_plugins() -> list[PluginInfo]:
    """Every loaded plugin with the hooks it implements and the encoders it registered."""
    pm = get_plugin_manager()
    origins = encoder_origins()
    out = []
    for name, plugin in sorted(pm.list_name_plugin(), key=lambda np: np[0]):
        if plugin is None:
            continue
        hooks = sorted(h.name for h in pm.get_hookcallers(plugin) or [])
        dist, version = _dists.get(name, (None, None))
        out.append(
            PluginInfo(
                name=name,
                hooks=hooks,
                distribution=dist,
                version=version,
                encoders=sorted(e for e, p in origins.items() if p == name),
            )
        )
    return out
