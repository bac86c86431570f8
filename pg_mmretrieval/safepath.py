"""What loaders may read from the filesystem: files under the allowed path roots only.

Paths are resolved with symlinks and ``..`` (realpath) and read only when inside one of
``LoadLimits.path_roots``; a refusal says nothing about the file (the same message whether it
exists or not).  Re-exported by :mod:`pg_mmretrieval.safeload` with the URL policy.
"""

from __future__ import annotations

import os
import stat
from typing import TYPE_CHECKING

from .errors import PermanentLoadError, RetryableLoadError

if TYPE_CHECKING:
    from .loaders import LoadLimits

__all__ = ["read_path", "resolve_path"]


def resolve_path(cell: str, limits: LoadLimits) -> str:
    """The real path of ``cell`` (symlinks and ``..`` resolved) if inside an allowed root.

    Raises:
        PermanentLoadError: no roots are configured, or the path lies outside them; the
            message is the same whether the file exists or not.
    """
    if not limits.path_roots:
        raise PermanentLoadError(
            "reading files is disabled: no allowed roots are configured (set MMR_PATH_ROOTS "
            "or mmr worker --path-root to the directories path cells may name)"
        )
    outside = PermanentLoadError(
        f"path {cell!r} is outside the allowed roots once symlinks and '..' are resolved "
        "(MMR_PATH_ROOTS, mmr worker --path-root)"
    )
    try:
        real = os.path.realpath(os.path.expanduser(cell))
    except (ValueError, OSError):
        raise outside from None
    for root in limits.path_roots:
        base = os.path.realpath(root)
        if real == base or real.startswith(base.rstrip(os.sep) + os.sep):
            return real
    raise outside


def read_path(cell: str, limits: LoadLimits) -> bytes:
    """The bytes of the file ``cell`` names, inside the allowed roots and size limit.

    Opened without following a symlink in the last component (the resolved path has none,
    one swapped in since is refused) and without blocking on a FIFO.

    Raises:
        PermanentLoadError: outside the roots, missing, not a regular file, unreadable,
            empty or over ``max_bytes``.
        RetryableLoadError: an I/O error that may pass.
    """
    real = resolve_path(cell, limits)
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(real, flags)
    except (FileNotFoundError, NotADirectoryError):
        raise PermanentLoadError(f"file not found: {cell}") from None
    except PermissionError:
        raise PermanentLoadError(f"permission denied reading {cell}") from None
    except OSError as e:
        raise _os_error(cell, e) from e
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise PermanentLoadError(f"{cell} is not a regular file")
    with os.fdopen(fd, "rb") as f:
        if st.st_size > limits.max_bytes:
            raise PermanentLoadError(
                f"{cell} is {st.st_size} bytes, over the limit of {limits.max_bytes} bytes "
                "(raise MMR_MAX_ITEM_BYTES to accept it)"
            )
        try:
            data = f.read(limits.max_bytes + 1)
        except OSError as e:
            raise _os_error(cell, e) from e
    if len(data) > limits.max_bytes:
        raise PermanentLoadError(
            f"{cell} is over the limit of {limits.max_bytes} bytes "
            "(raise MMR_MAX_ITEM_BYTES to accept it)"
        )
    if not data:
        raise PermanentLoadError(f"{cell} is empty")
    return data


def _os_error(cell: str, e: OSError) -> PermanentLoadError | RetryableLoadError:
    import errno

    retry = {errno.EAGAIN, errno.EINTR, errno.EIO, errno.ETIMEDOUT, errno.ESTALE}
    cls = RetryableLoadError if e.errno in retry else PermanentLoadError
    if e.errno == errno.ELOOP:
        return PermanentLoadError(f"{cell} changed into a symlink while being read: refused")
    return cls(f"cannot read {cell}: {e.strerror or e}")
