"""The ingestion worker: fills embedding tables from the queues, exactly once in effect.

See docs/worker.md for the guarantees and the protocol.
"""

from __future__ import annotations

from ..errors import Permanent, Retryable
from .failures import PermanentFailure, RetryableFailure, RetryPolicy, classify
from .runner import Worker, WorkerConfig, WorkerStats

__all__ = [
    "Permanent",
    "PermanentFailure",
    "RetryPolicy",
    "Retryable",
    "RetryableFailure",
    "Worker",
    "WorkerConfig",
    "WorkerStats",
    "classify",
]
