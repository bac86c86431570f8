"""Settings of the encoder service, each with an upper bound (docs/serve.md)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from ..errors import ConfigError
from ..loaders import LoadLimits

__all__ = ["BOUNDS", "ServeConfig", "is_loopback"]

#: (lowest, highest) accepted value of each bounded setting
BOUNDS: dict[str, tuple[float, float]] = {
    "max_batch": (1, 4096),
    "max_wait_ms": (0, 1000),
    "threads": (1, 64),
    "max_items": (1, 1024),
    "max_queue": (1, 100_000),
    "catalog_ttl_s": (0, 3600),
}


def is_loopback(host: str) -> bool:
    """``host`` is ``localhost`` or a loopback address (127.0.0.0/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ServeConfig:
    """How ``mmr serve`` runs.

    Attributes:
        database_url: where the catalog is read (read-only); None: ``MMR_WORKER_DATABASE_URL``,
            else ``MMR_DATABASE_URL``, else the embedded server as ``mmr_worker``.
        token: the bearer token every request but ``/healthz`` must carry (None: no token).
        max_batch: most items in one encoder run.
        max_wait_ms: how long the first item of a batch waits for others to join it.
        threads: encoder runs at once (threads of the executor).
        max_items: most items in one request of the batch form (``texts``/``images_base64``).
        max_queue: items admitted but not yet encoded; a request beyond gets HTTP 503.
        max_body_bytes: largest request body; None: room for one image of
            ``limits.max_bytes`` in base64 (times ``max_items`` is *not* added: a batch of
            images must fit in the same body).
        catalog_ttl_s: seconds the catalog (spaces, active versions) is cached.
        limits: the loaders' limits (``MMR_*`` variables), applied to every item.
    """

    database_url: str | None = None
    token: str | None = None
    max_batch: int = 64
    max_wait_ms: float = 5.0
    threads: int = 1
    max_items: int = 64
    max_queue: int = 1024
    max_body_bytes: int | None = None
    catalog_ttl_s: float = 5.0
    limits: LoadLimits = field(default_factory=LoadLimits.from_env)

    def __post_init__(self) -> None:
        for name, (low, high) in BOUNDS.items():
            value = getattr(self, name)
            if not low <= value <= high:
                raise ConfigError(
                    f"{name.replace('_', '-')} must be between {low:g} and {high:g}, not {value}"
                )
        if self.max_body_bytes is not None and self.max_body_bytes < 1024:
            raise ConfigError(f"max-body-bytes must be at least 1024, not {self.max_body_bytes}")
        if self.token is not None and len(self.token) < 16:
            raise ConfigError(
                "the token must be at least 16 characters (e.g. `python -c "
                "'import secrets; print(secrets.token_urlsafe(32))'`)"
            )

    @property
    def body_limit(self) -> int:
        """The largest request body accepted, in bytes."""
        if self.max_body_bytes is not None:
            return self.max_body_bytes
        return (self.limits.max_bytes + 2) // 3 * 4 + 64 * 1024
