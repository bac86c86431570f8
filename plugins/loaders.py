"""Built-in loaders: bytea, file path, URL, text, and ``auto`` (decides per cell).

Errors say whether retrying can help: a missing file or an over-size item is permanent; a
timeout, a reset connection or an HTTP 5xx/408/429 answer is retryable.
"""

from __future__ import annotations

import errno
import http.client
import os
import socket
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

from pg_mmretrieval.encoders import Item
from pg_mmretrieval.errors import PermanentLoadError, RetryableLoadError
from pg_mmretrieval.hookspecs import hookimpl
from pg_mmretrieval.loaders import Loader, LoadLimits

__all__ = ["AutoLoader", "ByteaLoader", "PathLoader", "TextLoader", "UrlLoader"]

# errno values after which reading the same file again may succeed
_RETRYABLE_ERRNO = {errno.EAGAIN, errno.EINTR, errno.EIO, errno.ETIMEDOUT, errno.ESTALE}
_RETRYABLE_HTTP = {408, 425, 429, 500, 502, 503, 504}


def _too_big(what: str, size: int, limits: LoadLimits) -> PermanentLoadError:
    return PermanentLoadError(
        f"{what} is {size} bytes, over the limit of {limits.max_bytes} bytes "
        "(raise MMR_MAX_ITEM_BYTES to accept it)"
    )


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
        return data


class PathLoader(Loader):
    """A text cell naming a file on the worker's file system."""

    kind: ClassVar[str] = "path"

    def load(self, cell: object, limits: LoadLimits) -> Item:
        if not isinstance(cell, str) or not cell.strip():
            raise PermanentLoadError(f"a path cell must be a non-empty string, not {cell!r}")
        path = Path(cell).expanduser()
        try:
            size = path.stat().st_size
            if not path.is_file():
                raise PermanentLoadError(f"{path} is not a regular file")
            if size > limits.max_bytes:
                raise _too_big(str(path), size, limits)
            with path.open("rb") as f:
                data = f.read(limits.max_bytes + 1)
        except (FileNotFoundError, NotADirectoryError):
            raise PermanentLoadError(f"file not found: {path}") from None
        except PermissionError:
            raise PermanentLoadError(f"permission denied reading {path}") from None
        except OSError as e:
            cls = RetryableLoadError if e.errno in _RETRYABLE_ERRNO else PermanentLoadError
            raise cls(f"cannot read {path}: {e.strerror or e}") from e
        if len(data) > limits.max_bytes:
            raise _too_big(str(path), len(data), limits)
        if not data:
            raise PermanentLoadError(f"{path} is empty")
        return data


class UrlLoader(Loader):
    """A text cell holding an http(s) URL; fetched with a timeout and a size limit."""

    kind: ClassVar[str] = "url"

    def load(self, cell: object, limits: LoadLimits) -> Item:
        if not isinstance(cell, str):
            raise PermanentLoadError(f"a url cell must be a string, not {type(cell).__name__}")
        scheme = urllib.parse.urlsplit(cell).scheme.lower()
        if scheme not in limits.allowed_schemes:
            raise PermanentLoadError(
                f"URL scheme {scheme or '(none)'!r} is not allowed in {cell!r} "
                f"(allowed: {', '.join(sorted(limits.allowed_schemes))})"
            )
        request = urllib.request.Request(cell, headers={"User-Agent": "pg_mmretrieval"})
        try:
            with urllib.request.urlopen(request, timeout=limits.url_timeout_s) as resp:
                length = resp.headers.get("Content-Length")
                if length is not None and length.isdigit() and int(length) > limits.max_bytes:
                    raise _too_big(cell, int(length), limits)
                data: bytes = resp.read(limits.max_bytes + 1)
        except urllib.error.HTTPError as e:
            cls = RetryableLoadError if e.code in _RETRYABLE_HTTP else PermanentLoadError
            raise cls(f"HTTP {e.code} fetching {cell}: {e.reason}") from None
        except urllib.error.URLError as e:
            if isinstance(e.reason, socket.gaierror):
                # unknown host names are usually permanent, but DNS outages pass: retry
                raise RetryableLoadError(f"cannot resolve the host of {cell}: {e.reason}") from e
            raise RetryableLoadError(f"cannot fetch {cell}: {e.reason}") from e
        except (TimeoutError, ConnectionError, http.client.HTTPException) as e:
            raise RetryableLoadError(f"fetching {cell} failed: {e or type(e).__name__}") from e
        if len(data) > limits.max_bytes:
            raise _too_big(cell, len(data), limits)
        if not data:
            raise PermanentLoadError(f"{cell} returned no content")
        return data


class TextLoader(Loader):
    """A text cell embedded as text."""

    kind: ClassVar[str] = "text"

    def load(self, cell: object, limits: LoadLimits) -> Item:
        if not isinstance(cell, str):
            raise PermanentLoadError(f"a text cell must be a string, not {type(cell).__name__}")
        if not cell.strip():
            raise PermanentLoadError("the text cell is empty")
        size = len(cell.encode("utf-8"))
        if size > limits.max_bytes:
            raise _too_big("the text", size, limits)
        return cell


class AutoLoader(Loader):
    """``auto`` image cells: bytes are bytea, ``http(s)://`` strings URLs, other strings paths."""

    kind: ClassVar[str] = "auto"

    def load(self, cell: object, limits: LoadLimits) -> Item:
        if isinstance(cell, bytes | bytearray | memoryview):
            return ByteaLoader().load(cell, limits)
        if isinstance(cell, str):
            scheme = urllib.parse.urlsplit(cell).scheme.lower()
            if scheme and scheme != "file" and len(scheme) > 1:
                return UrlLoader().load(cell, limits)
            if scheme == "file":
                return PathLoader().load(urllib.parse.unquote(cell[len("file://") :]), limits)
            return PathLoader().load(os.fspath(cell), limits)
        raise PermanentLoadError(f"cannot load a cell of type {type(cell).__name__}")


@hookimpl
def register_loaders(register: Callable[[Loader], None]) -> None:
    for loader in (ByteaLoader(), PathLoader(), UrlLoader(), TextLoader(), AutoLoader()):
        register(loader)
