"""Built-in loaders: bytea, file path, URL, text, and ``auto`` (decides per cell).

What they may read and fetch is bounded by :class:`~pg_mmretrieval.loaders.LoadLimits` and
enforced by :mod:`pg_mmretrieval.safeload`: URL schemes and hosts checked on every redirect,
a total deadline per URL, paths only inside the allowed roots; image headers are checked
against the pixel and decoded-bytes limits before any decoding, texts against the character
limit (docs/security.md, "What the worker may read and fetch").

Errors say whether retrying can help: a missing file, a refused URL or path, an over-size
item is permanent; a timeout, a reset connection or an HTTP 5xx/408/429 answer is retryable.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable
from typing import ClassVar

from pg_mmretrieval.encoders import Item
from pg_mmretrieval.errors import LimitError, PermanentLoadError
from pg_mmretrieval.hookspecs import hookimpl
from pg_mmretrieval.loaders import Loader, LoadLimits
from pg_mmretrieval.preprocess.image import check_image_size
from pg_mmretrieval.safeload import fetch_url, read_path

__all__ = ["AutoLoader", "ByteaLoader", "PathLoader", "TextLoader", "UrlLoader"]


def _too_big(what: str, size: int, limits: LoadLimits) -> LimitError:
    return LimitError(
        f"{what} is {size} bytes, over the limit of {limits.max_bytes} bytes "
        "(raise MMR_MAX_ITEM_BYTES to accept it)"
    )


def _image(data: bytes, limits: LoadLimits) -> bytes:
    """``data`` after its image header passed the pixel and decoded-bytes limits."""
    check_image_size(data, limits.max_image_pixels, limits.max_image_bytes)
    return data


class ByteaLoader(Loader):
    """A bytea cell: the bytes of an encoded image file."""

    kind: ClassVar[str] = "bytea"

    def load(self, cell: object, limits: LoadLimits) -> Item:
        if not isinstance(cell, bytes | bytearray | memoryview):
            raise PermanentLoadError(f"a bytea cell must hold bytes, not {type(cell).__name__}")
        data = bytes(cell)
        if not data:
            raise PermanentLoadError("the bytea cell is empty")
        if len(data) > limits.max_bytes:
            raise _too_big("the bytea cell", len(data), limits)
        return _image(data, limits)


class PathLoader(Loader):
    """A text cell naming a file inside the allowed roots (``MMR_PATH_ROOTS``)."""

    kind: ClassVar[str] = "path"

    def load(self, cell: object, limits: LoadLimits) -> Item:
        if not isinstance(cell, str) or not cell.strip():
            raise PermanentLoadError(f"a path cell must be a non-empty string, not {cell!r}")
        return _image(read_path(cell, limits), limits)


class UrlLoader(Loader):
    """A text cell holding an http(s) URL: fetched under the host policy, within the total
    deadline and the size limit."""

    kind: ClassVar[str] = "url"

    def load(self, cell: object, limits: LoadLimits) -> Item:
        if not isinstance(cell, str):
            raise PermanentLoadError(f"a url cell must be a string, not {type(cell).__name__}")
        return _image(fetch_url(cell, limits), limits)


class TextLoader(Loader):
    """A text cell embedded as text."""

    kind: ClassVar[str] = "text"

    def load(self, cell: object, limits: LoadLimits) -> Item:
        if not isinstance(cell, str):
            raise PermanentLoadError(f"a text cell must be a string, not {type(cell).__name__}")
        if not cell.strip():
            raise PermanentLoadError("the text cell is empty")
        if len(cell) > limits.max_text_chars:  # first: no UTF-8 copy of a huge text
            raise LimitError(
                f"the text is {len(cell)} characters, over the limit of {limits.max_text_chars} "
                "characters per item (raise MMR_MAX_TEXT_CHARS or mmr worker --max-text-chars "
                "to accept it, or split the text into several rows)"
            )
        if len(cell) * 4 > limits.max_bytes:
            size = len(cell.encode("utf-8"))
            if size > limits.max_bytes:
                raise _too_big("the text", size, limits)
        return cell


class AutoLoader(Loader):
    """``auto`` image cells: bytes are bytea, ``scheme://`` strings URLs, other strings paths.

    A ``file://`` URL is a path: read exactly like a path cell, under the allowed roots.
    """

    kind: ClassVar[str] = "auto"

    def load(self, cell: object, limits: LoadLimits) -> Item:
        if isinstance(cell, bytes | bytearray | memoryview):
            return ByteaLoader().load(cell, limits)
        if isinstance(cell, str):
            parts = urllib.parse.urlsplit(cell)
            scheme = parts.scheme.lower()
            if scheme == "file":
                if parts.netloc not in ("", "localhost"):
                    raise PermanentLoadError(
                        f"{cell!r}: file:// URLs naming another host are not read"
                    )
                return PathLoader().load(urllib.parse.unquote(parts.path), limits)
            if scheme and len(scheme) > 1:
                return UrlLoader().load(cell, limits)
            return PathLoader().load(cell, limits)
        raise PermanentLoadError(f"cannot load a cell of type {type(cell).__name__}")


@hookimpl
def register_loaders(register: Callable[[Loader], None]) -> None:
    for loader in (ByteaLoader(), PathLoader(), UrlLoader(), TextLoader(), AutoLoader()):
        register(loader)
