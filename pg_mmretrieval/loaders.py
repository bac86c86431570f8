"""Loaders: turn a table cell (bytea, file path, URL, text) into encoder input.

The base class :class:`Loader` lives in :mod:`pg_mmretrieval.bases` and the registry (filled
by plugins through the ``register_loaders`` hook) in :mod:`pg_mmretrieval.registry`; both are
re-exported here.  The built-in loaders live in ``pg_mmretrieval_plugins.loaders``.  Errors are
:class:`~pg_mmretrieval.errors.PermanentLoadError` (do not retry) or
:class:`~pg_mmretrieval.errors.RetryableLoadError` (retry later).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .bases import Item, Loader
from .errors import ConfigError
from .registry import _LOADERS as _REGISTRY  # noqa: F401  (kept for code that reached in)
from .registry import get_loader, list_loaders, register_loader
from .safeload import parse_host_list

__all__ = [
    "SUPPORTED_SCHEMES",
    "LoadLimits",
    "Loader",
    "get_loader",
    "list_loaders",
    "load_cell",
    "register_loader",
]

ENV_MAX_ITEM_BYTES = "MMR_MAX_ITEM_BYTES"
ENV_URL_TIMEOUT = "MMR_URL_TIMEOUT"
ENV_URL_DEADLINE = "MMR_URL_DEADLINE"
ENV_URL_MAX_REDIRECTS = "MMR_URL_MAX_REDIRECTS"
ENV_URL_SCHEMES = "MMR_URL_SCHEMES"
ENV_URL_ALLOW_HOSTS = "MMR_URL_ALLOW_HOSTS"
ENV_URL_DENY_HOSTS = "MMR_URL_DENY_HOSTS"
ENV_PATH_ROOTS = "MMR_PATH_ROOTS"
ENV_MAX_IMAGE_PIXELS = "MMR_MAX_IMAGE_PIXELS"
ENV_MAX_IMAGE_BYTES = "MMR_MAX_IMAGE_BYTES"
ENV_MAX_TEXT_CHARS = "MMR_MAX_TEXT_CHARS"
ENV_MAX_TEXT_WINDOWS = "MMR_MAX_TEXT_WINDOWS"

#: the URL schemes the URL loader implements (MMR_URL_SCHEMES may only narrow them)
SUPPORTED_SCHEMES = frozenset({"http", "https"})
#: Pillow's own decompression-bomb limit (the warning; twice it is an error)
_PILLOW_BOMB_PIXELS = 89_478_485


def _env_number(name: str, default: float, *, zero_ok: bool = False) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None
    if value < 0 or (value == 0 and not zero_ok) or value != value:
        raise ConfigError(f"{name} must be positive, not {raw}")
    return value


def _env_list(name: str, sep: str = ",") -> tuple[str, ...] | None:
    raw = os.environ.get(name)
    if raw is None:
        return None
    return tuple(p.strip() for p in raw.split(sep) if p.strip())


@dataclass(frozen=True)
class LoadLimits:
    """Limits and policies every loader enforces (docs/security.md, "What the worker may read
    and fetch").

    Attributes:
        max_bytes: largest accepted item (image file or UTF-8 text), in bytes.
        url_timeout_s: timeout of each connect and each read of a URL, in seconds.
        url_deadline_s: total time one URL item may take: connects, redirects, headers and
            body together; the download is cut when it passes.
        url_max_redirects: redirects followed per URL (each one checked like the first URL).
        allowed_schemes: URL schemes the URL loader fetches (a subset of http, https).
        url_allow_hosts: when not empty, the only hosts fetched: names (``img.example.com``,
            ``*.example.com``) or addresses/networks (``127.0.0.1``, ``10.0.0.0/8``).  Listing
            a loopback or private address or a name is what opts it in.
        url_deny_hosts: names or networks never fetched (on top of the built-in denials).
        path_roots: directories path cells may name files in (after resolving symlinks and
            ``..``); empty: path cells are refused.
        max_image_pixels: width x height above which an image is refused before decoding.
        max_image_bytes: width x height x channels x bytes per sample above which an image is
            refused before decoding (the memory its decoded pixels take).
        max_text_chars: longest text item, in characters.
        max_text_windows: most context windows one text may need (encoders that window long
            texts refuse more instead of encoding them all).
    """

    max_bytes: int = 32 * 1024 * 1024
    url_timeout_s: float = 15.0
    url_deadline_s: float = 30.0
    url_max_redirects: int = 5
    allowed_schemes: frozenset[str] = SUPPORTED_SCHEMES
    url_allow_hosts: tuple[str, ...] = ()
    url_deny_hosts: tuple[str, ...] = ()
    path_roots: tuple[str, ...] = ()
    max_image_pixels: int = 8192 * 8192
    max_image_bytes: int = 96 * 1024 * 1024
    max_text_chars: int = 100_000
    max_text_windows: int = 128

    def __post_init__(self) -> None:
        extra = set(self.allowed_schemes) - SUPPORTED_SCHEMES
        if extra:
            raise ConfigError(
                f"URL schemes {sorted(extra)} cannot be allowed: the URL loader fetches only "
                f"{', '.join(sorted(SUPPORTED_SCHEMES))} (file paths go through MMR_PATH_ROOTS)"
            )
        if self.max_image_pixels > _PILLOW_BOMB_PIXELS:
            raise ConfigError(
                f"{ENV_MAX_IMAGE_PIXELS}={self.max_image_pixels} is above Pillow's "
                f"decompression-bomb limit of {_PILLOW_BOMB_PIXELS} pixels; use a lower value"
            )
        parse_host_list(self.url_allow_hosts, ENV_URL_ALLOW_HOSTS)
        parse_host_list(self.url_deny_hosts, ENV_URL_DENY_HOSTS)
        for root in self.path_roots:
            if not os.path.isabs(root):
                raise ConfigError(
                    f"{ENV_PATH_ROOTS}: {root!r} is not an absolute path; give absolute "
                    "directories separated by ':'"
                )

    @classmethod
    def from_env(cls) -> LoadLimits:
        """Limits from the ``MMR_*`` variables above (the defaults for those not set).

        Raises:
            ConfigError: a variable holds an invalid value.
        """
        schemes = _env_list(ENV_URL_SCHEMES)
        return cls(
            max_bytes=int(_env_number(ENV_MAX_ITEM_BYTES, cls.max_bytes)),
            url_timeout_s=_env_number(ENV_URL_TIMEOUT, cls.url_timeout_s),
            url_deadline_s=_env_number(ENV_URL_DEADLINE, cls.url_deadline_s),
            url_max_redirects=int(
                _env_number(ENV_URL_MAX_REDIRECTS, cls.url_max_redirects, zero_ok=True)
            ),
            allowed_schemes=(
                frozenset(s.lower() for s in schemes) if schemes is not None else SUPPORTED_SCHEMES
            ),
            url_allow_hosts=_env_list(ENV_URL_ALLOW_HOSTS) or (),
            url_deny_hosts=_env_list(ENV_URL_DENY_HOSTS) or (),
            path_roots=_env_list(ENV_PATH_ROOTS, os.pathsep) or (),
            max_image_pixels=int(_env_number(ENV_MAX_IMAGE_PIXELS, cls.max_image_pixels)),
            max_image_bytes=int(_env_number(ENV_MAX_IMAGE_BYTES, cls.max_image_bytes)),
            max_text_chars=int(_env_number(ENV_MAX_TEXT_CHARS, cls.max_text_chars)),
            max_text_windows=int(_env_number(ENV_MAX_TEXT_WINDOWS, cls.max_text_windows)),
        )


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
