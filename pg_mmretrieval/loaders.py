"""Loaders: turn a table cell (bytea, file path, URL, text) into encoder input.

The registry is filled by plugins through the ``register_loaders`` hook; the built-in
loaders live in ``pg_mmretrieval_plugins.loaders``.  Errors are
:class:`~pg_mmretrieval.errors.PermanentLoadError` (do not retry) or
:class:`~pg_mmretrieval.errors.RetryableLoadError` (retry later).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import ClassVar

from .encoders import Item
from .errors import ConfigError, NotFoundError

__all__ = ["LoadLimits", "Loader", "get_loader", "list_loaders", "load_cell", "register_loader"]

ENV_MAX_ITEM_BYTES = "MMR_MAX_ITEM_BYTES"
ENV_URL_TIMEOUT = "MMR_URL_TIMEOUT"


def _env_number(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None
    if value <= 0:
        raise ConfigError(f"{name} must be positive, not {raw}")
    return value


@dataclass(frozen=True)
class LoadLimits:
    """Limits every loader enforces.

    Attributes:
        max_bytes: largest accepted item (image file or UTF-8 text), in bytes.
        url_timeout_s: connect/read timeout for URLs, in seconds.
        allowed_schemes: URL schemes the URL loader fetches.
    """

    max_bytes: int = 32 * 1024 * 1024
    url_timeout_s: float = 15.0
    allowed_schemes: frozenset[str] = frozenset({"http", "https"})

    @classmethod
    def from_env(cls) -> LoadLimits:
        """Limits from ``MMR_MAX_ITEM_BYTES`` and ``MMR_URL_TIMEOUT`` (defaults otherwise)."""
        return cls(
            max_bytes=int(_env_number(ENV_MAX_ITEM_BYTES, cls.max_bytes)),
            url_timeout_s=_env_number(ENV_URL_TIMEOUT, cls.url_timeout_s),
        )


class Loader:
    """Base class of loaders; subclasses set ``kind`` and implement ``load``."""

    #: the kind of cell handled: ``bytea``, ``path``, ``url``, ``text``, ``auto`` or custom
    kind: ClassVar[str] = ""

    def load(self, cell: object, limits: LoadLimits) -> Item:
        """Turn ``cell`` into ``str`` (text) or ``bytes`` (an encoded image file).

        Raises:
            PermanentLoadError: the cell can never be loaded.
            RetryableLoadError: loading failed for a reason that may pass.
        """
        raise NotImplementedError


_REGISTRY: dict[str, Loader] = {}


def register_loader(loader: Loader) -> None:
    """Add a loader (plugins do this through ``register_loaders``); replaces the same kind."""
    _REGISTRY[loader.kind] = loader


def _ensure_loaded() -> None:
    from .plugins import load_loaders

    load_loaders()


def list_loaders() -> dict[str, Loader]:
    """Registered loaders by kind."""
    _ensure_loaded()
    return dict(_REGISTRY)


def get_loader(kind: str) -> Loader:
    """The loader for cells of ``kind``.

    Raises:
        NotFoundError: no loader handles that kind.
    """
    _ensure_loaded()
    try:
        return _REGISTRY[kind]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY)) or "none"
        raise NotFoundError(f"no loader for cells of kind {kind!r}; known kinds: {known}") from None


def load_cell(cell: object, kind: str, limits: LoadLimits | None = None) -> Item:
    """Load one cell with the loader registered for ``kind``.

    Args:
        cell: the value read from the table (``bytes``/``memoryview`` for bytea, ``str``).
        kind: ``bytea``, ``path``, ``url``, ``text``, ``auto`` (a collection's ``image_kind``).
        limits: defaults to :meth:`LoadLimits.from_env`.

    Raises:
        NotFoundError: no loader for ``kind``.
        PermanentLoadError, RetryableLoadError: as the loader decides.
    """
    return get_loader(kind).load(cell, limits or LoadLimits.from_env())
