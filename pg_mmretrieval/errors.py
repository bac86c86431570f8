"""The one exception hierarchy of pg_mmretrieval.

Every error is an :class:`MMRError`.  Two marker bases say whether trying again can help:
:class:`Retryable` (a timeout, a connection reset, HTTP 5xx: try later) and :class:`Permanent`
(the item itself is bad: it will fail again however often it is tried).  The worker classifies
a failed item by them (``isinstance``, never by class name); a plugin's own error class opts
in by inheriting from one of them::

    class QuotaExceeded(pg_mmretrieval.errors.Retryable): ...

:class:`RetryableLoadError` and :class:`PermanentLoadError` are the loaders' two; only the
permanent one is also an :class:`InputError` (a bad cell is a bad input, a timeout is not).
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DatabaseError",
    "DependentObjectsError",
    "EncoderError",
    "InputError",
    "LimitError",
    "LoadError",
    "MMRError",
    "NotFoundError",
    "Permanent",
    "PermanentLoadError",
    "PluginError",
    "Retryable",
    "RetryableLoadError",
    "ServerError",
    "ServiceError",
    "UnsupportedServerError",
]


class MMRError(Exception):
    """Base class of every error raised by pg_mmretrieval.

    The message always says what was wrong and what to do about it.  ``sqlstate`` is
    PostgreSQL's error code when the error came from the database.
    """

    sqlstate: str | None = None


class ConfigError(MMRError):
    """A setting (environment variable, option, file) is missing or invalid."""


class ServerError(MMRError):
    """The embedded PostgreSQL server could not be started, stopped or reached."""


class DatabaseError(MMRError):
    """A database operation failed; ``sqlstate`` carries PostgreSQL's error code when known."""

    def __init__(self, message: str, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


class UnsupportedServerError(DatabaseError):
    """PostgreSQL or pgvector is older than pg_mmretrieval supports."""


class NotFoundError(MMRError):
    """A named object (collection, space, encoder, model, plugin) does not exist."""


class InputError(MMRError):
    """An argument or a data item is invalid (wrong dimension, NaN, empty content...)."""


class PluginError(MMRError):
    """A plugin failed to load or registered something invalid."""


class EncoderError(MMRError):
    """An encoder failed or rejected its input."""


class Retryable(MMRError):
    """Marker base: the failure may pass (I/O, a timeout, a busy service).

    The worker gives the item back to the queue with a backoff and dead-letters it only after
    ``--max-attempts`` attempts.
    """


class Permanent(MMRError):
    """Marker base: the failure will recur however often the item is retried (empty or
    undecodable content, over a size limit).

    The worker dead-letters the item at once.
    """


class LoadError(MMRError):
    """A table cell could not be turned into encoder input (file, URL, bytes, text).

    Raised as one of its two kinds: :class:`PermanentLoadError` or :class:`RetryableLoadError`.
    """


class PermanentLoadError(LoadError, InputError, Permanent):
    """Loading failed and will fail again (missing file, over the size limit, not an image...).

    The worker does not retry the item.  Also an :class:`InputError`: the cell is bad input
    (``mmr`` exits 2 on it, ``mmr serve`` answers 400).
    """


class RetryableLoadError(LoadError, Retryable):
    """Loading failed for a reason that may pass (timeout, connection reset, HTTP 5xx/429).

    The worker retries the item later.  Not an :class:`InputError`: nothing is wrong with the
    input.
    """


class LimitError(PermanentLoadError):
    """An item is over a configured size limit (bytes, characters, text windows, image pixels
    or decoded bytes); the message names the limit and the setting that raises it.

    A :class:`PermanentLoadError` for the worker (dead-lettered, not retried); the encoder
    service (``mmr serve``) answers it with HTTP 413.
    """


class ServiceError(MMRError):
    """A request to the encoder service (``mmr serve``) failed.

    ``status`` is the HTTP status the service answers with, ``hint`` what the caller can do.
    """

    def __init__(self, status: int, message: str, hint: str) -> None:
        super().__init__(message)
        self.status = status
        self.hint = hint


class DependentObjectsError(DatabaseError):
    """Objects outside schema ``mmr`` (a user's columns, views, indexes...) depend on it.

    ``objects`` lists them as ``(kind, object, depends_on)`` descriptions.
    """

    def __init__(self, message: str, objects: list[tuple[str, str, str]]) -> None:
        super().__init__(message, sqlstate="2BP01")
        self.objects = objects
