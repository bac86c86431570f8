"""Failure classes of the worker: retryable or permanent, and the retry schedule."""

from __future__ import annotations

import random
from dataclasses import dataclass

import psycopg
from PIL import Image, UnidentifiedImageError

from ..errors import EncoderError, InputError, Permanent, Retryable

__all__ = [
    "CRASH",
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

#: the marker bases of :mod:`pg_mmretrieval.errors` under the worker's former names (plugins
#: raise either; ``isinstance`` sees no difference)
PermanentFailure = Permanent
RetryableFailure = Retryable

# Pillow's refusals of an image (an encoder may decode without the loaders' checks); an
# UnidentifiedImageError is an OSError, which alone would be retried.
_PERMANENT_THIRD_PARTY = (UnidentifiedImageError, Image.DecompressionBombError)


def classify(exc: BaseException) -> str:
    """``"permanent"`` or ``"retryable"`` for an exception raised while handling one item.

    By class, never by name: :class:`~pg_mmretrieval.errors.Retryable` first, then
    :class:`~pg_mmretrieval.errors.Permanent`.  Otherwise permanent when the item itself is
    bad (an ``InputError`` or ``EncoderError``, undecodable text or image, a ``ValueError``);
    retryable for I/O, timeouts, transient database errors, and anything unknown (retried up to
    the attempt limit, then dead-lettered).
    """
    if isinstance(exc, Retryable):
        return RETRYABLE
    if isinstance(exc, (Permanent, *_PERMANENT_THIRD_PARTY)):
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
