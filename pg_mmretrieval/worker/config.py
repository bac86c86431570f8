"""The settings and the counters of one worker process."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from ..loaders import LoadLimits
from .failures import RetryPolicy

__all__ = ["WorkerConfig", "WorkerStats"]


@dataclass(frozen=True)
class WorkerConfig:
    """Settings of one worker process.

    Attributes:
        collections: names to serve (None: all).
        batch_size: queue entries claimed per batch (256: the ONNX encoders sort texts by
            length across up to batch_size x sort_window = 32 x 8 items, so a claim of that
            size pads least; smaller claims sort only within themselves).
        lease_s: how long a claim holds without renewal; a dead worker's entries are
            claimable again after at most this long (renewed every ``lease_s / 3``).
        poll_s: longest sleep without a notification before looking at the queue again.
        once: exit when the queue of the served spaces is empty (drain mode).
        retry: attempts, backoff and crash limits.
        spaces: restrict to these space names (backfill of one space).
        load_threads: threads fetching files and URLs.
        connect_timeout_s: how long the first connection is retried before giving up
            (once connected, a lost connection is retried for ever).
        pipeline: write batch N on a second connection while batch N+1 is encoded, and
            claim batch N+1 on a third while batch N is encoded.
        allow_superuser: run even when the session user is a superuser (default: refuse; user
            code the worker's statements evaluate would run as that superuser).  Also set by
            ``MMR_WORKER_ALLOW_SUPERUSER=1``.
        limits: what loading may read and fetch, and its size/time bounds (None: from the
            ``MMR_*`` variables, :meth:`LoadLimits.from_env`).
    """

    collections: tuple[str, ...] | None = None
    batch_size: int = 256
    lease_s: float = 30.0
    poll_s: float = 5.0
    once: bool = False
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    spaces: tuple[str, ...] | None = None
    load_threads: int = 8
    connect_timeout_s: float = 60.0
    pipeline: bool = True
    allow_superuser: bool = field(
        default_factory=lambda: os.environ.get("MMR_WORKER_ALLOW_SUPERUSER", "") == "1"
    )
    limits: LoadLimits | None = None


@dataclass
class WorkerStats:
    """Counters of one worker process."""

    batches: int = 0
    written: int = 0
    unchanged: int = 0
    removed: int = 0
    released: int = 0
    retried: int = 0
    dead: int = 0
    #: spaces this worker could not serve, with the reason (``mmr worker --once`` exits 3)
    unservable: dict[str, str] = field(default_factory=dict)

    @property
    def done(self) -> int:
        return self.written + self.unchanged + self.removed + self.dead
