"""Turn a queued cell into encoder input: text, bytea, a file path or a URL.

Delegates to the loader plugins (``pg_mmretrieval.loaders``, the ``register_loaders`` hook)
when they are installed; until then the small built-in loaders below do the work with the
same limits and the same failure classes.
"""

from __future__ import annotations

import functools
import importlib
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from ..encoders import Item
from .failures import PermanentFailure, RetryableFailure

__all__ = ["Limits", "load"]

_RETRYABLE_HTTP = {408, 425, 429, 500, 502, 503, 504}


@dataclass(frozen=True)
class Limits:
    """Size and time limits of loading (``MMR_MAX_ITEM_BYTES``, ``MMR_URL_TIMEOUT``)."""

    max_bytes: int = 32 * 1024 * 1024
    url_timeout_s: float = 15.0

    @classmethod
    def from_env(cls) -> Limits:
        return cls(
            max_bytes=int(os.environ.get("MMR_MAX_ITEM_BYTES", cls.max_bytes)),
            url_timeout_s=float(os.environ.get("MMR_URL_TIMEOUT", cls.url_timeout_s)),
        )


@functools.cache
def _plugin_loader() -> Any | None:
    try:
        return importlib.import_module("pg_mmretrieval.loaders")
    except ImportError:
        return None


def _too_big(what: str, size: int, limits: Limits) -> PermanentFailure:
    return PermanentFailure(
        f"{what} is {size} bytes, over the limit of {limits.max_bytes} bytes "
        "(raise MMR_MAX_ITEM_BYTES to accept it)"
    )


def _load_path(cell: str, limits: Limits) -> bytes:
    try:
        size = os.stat(cell).st_size
    except FileNotFoundError:
        raise PermanentFailure(f"file {cell!r} does not exist") from None
    except PermissionError:
        raise PermanentFailure(f"file {cell!r} is not readable by the worker") from None
    if size > limits.max_bytes:
        raise _too_big(f"file {cell!r}", size, limits)
    with open(cell, "rb") as f:
        data = f.read(limits.max_bytes + 1)
    if not data:
        raise PermanentFailure(f"file {cell!r} is empty")
    return data


def _load_url(cell: str, limits: Limits) -> bytes:
    if not cell.startswith(("http://", "https://")):
        raise PermanentFailure(f"{cell!r} is not an http(s) URL")
    try:
        with urllib.request.urlopen(cell, timeout=limits.url_timeout_s) as resp:
            data: bytes = resp.read(limits.max_bytes + 1)
    except urllib.error.HTTPError as e:
        if e.code in _RETRYABLE_HTTP:
            raise RetryableFailure(f"GET {cell} answered HTTP {e.code}") from e
        raise PermanentFailure(f"GET {cell} answered HTTP {e.code}") from e
    except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
        raise RetryableFailure(f"GET {cell} failed: {e}") from e
    if len(data) > limits.max_bytes:
        raise _too_big(f"the answer of {cell}", len(data), limits)
    if not data:
        raise PermanentFailure(f"GET {cell} returned no content")
    return data


def load(kind: str, cell: object, limits: Limits) -> Item:
    """Encoder input for ``cell``: ``str`` for text, ``bytes`` (an image file) otherwise.

    Args:
        kind: ``text`` for text spaces, else the collection's ``image_kind`` (``bytea``,
            ``path``, ``url``, ``auto``: a URL when it starts with http(s)://, else a path).

    Raises:
        PermanentFailure: empty content, over the size limit, missing file, HTTP 4xx.
        RetryableFailure: timeouts, connection errors, HTTP 5xx/429.
    """
    plugin = _plugin_loader()
    if plugin is not None:
        loaded: Item = plugin.load_cell(cell, kind)
        return loaded
    if kind == "text":
        if not isinstance(cell, str):
            raise PermanentFailure(f"a text cell must hold text, not {type(cell).__name__}")
        if not cell.strip():
            raise PermanentFailure("the text is empty")
        if len(cell) * 4 > limits.max_bytes and len(cell.encode()) > limits.max_bytes:
            raise _too_big("the text", len(cell.encode()), limits)
        return cell
    if kind == "bytea":
        if not isinstance(cell, bytes | bytearray | memoryview):
            raise PermanentFailure(f"a bytea cell must hold bytes, not {type(cell).__name__}")
        data = bytes(cell)
        if not data:
            raise PermanentFailure("the bytea cell is empty")
        if len(data) > limits.max_bytes:
            raise _too_big("the bytea cell", len(data), limits)
        return data
    if not isinstance(cell, str):
        raise PermanentFailure(f"a {kind} cell must hold text, not {type(cell).__name__}")
    if kind == "url" or (kind == "auto" and cell.startswith(("http://", "https://"))):
        return _load_url(cell, limits)
    if kind in ("path", "auto"):
        return _load_path(cell, limits)
    raise PermanentFailure(f"no loader for cells of kind {kind!r}")
