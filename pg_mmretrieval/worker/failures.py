"""Failure classes of the worker: retryable or permanent, and the retry schedule."""

from __future__ import annotations

import random
from dataclasses import dataclass

import psycopg

from ..errors import EncoderError, InputError, MMRError

__all__ = [
    "PERMANENT",
    "RETRYABLE",
    "PermanentFailure",
    "RetryPolicy",
    "RetryableFailure",
    "classify",
]

RETRYABLE = "retryable"
PERMANENT = "permanent"
CRASH = "crash"

# Classes of the loader plugins (pg_mmretrieval.errors once the plugin system lands); matched
# by name so the worker classifies them before and after that merge.
_PERMANENT_NAMES = {"PermanentLoadError", "UnidentifiedImageError", "DecompressionBombError"}
_RETRYABLE_NAMES = {"RetryableLoadError"}


class PermanentFailure(MMRError):
    """An item that will fail again however often it is retried (empty, undecodable, too big)."""


class RetryableFailure(MMRError):
    """An item that failed for a reason that may pass (I/O, timeout, a busy service)."""


def classify(exc: BaseException) -> str:
    """``"permanent"`` or ``"retryable"`` for an exception raised while handling one item.

    Permanent: the item itself is bad (empty or undecodable content, over the size limit, an
    encoder rejecting it).  Retryable: I/O, timeouts, transient database errors, and anything
    unknown (retried up to the attempt limit, then dead-lettered).
    """
    names = {cls.__name__ for cls in type(exc).__mro__}
    if names & _RETRYABLE_NAMES or isinstance(exc, RetryableFailure):
        return RETRYABLE
    if names & _PERMANENT_NAMES or isinstance(exc, PermanentFailure):
        return PERMANENT
    if isinstance(exc, InputError | EncoderError | UnicodeError | ValueError):
        return PERMANENT
    if isinstance(exc, OSError | TimeoutError | psycopg.OperationalError):
        return RETRYABLE
    return RETRYABLE


@dataclass(frozen=True)
class RetryPolicy:
    """Attempts and exponential backoff with jitter.

    Attributes:
        max_attempts: failed attempts after which an item is dead-lettered.
        base_s: delay after the first failure; doubles with every further one.
        max_s: the longest delay.
        max_claims: claims that ended without an outcome (the worker died) after which an
            item is dead-lettered as a ``crash``: a poison item that kills its worker.
    """

    max_attempts: int = 3
    base_s: float = 2.0
    max_s: float = 300.0
    max_claims: int = 5

    def delay(self, attempts: int, rng: random.Random | None = None) -> float:
        """Seconds before attempt ``attempts + 1``: ``base * 2^(attempts-1)``, jittered ±50 %."""
        r = rng or random
        raw = min(self.max_s, self.base_s * (2 ** max(0, attempts - 1)))
        return float(raw * (0.5 + r.random()))
