"""The one exception hierarchy of pg_mmretrieval."""

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
    "PermanentLoadError",
    "PluginError",
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


class LoadError(InputError):
    """A table cell could not be turned into encoder input (file, URL, bytes, text)."""


class PermanentLoadError(LoadError):
    """Loading failed and will fail again (missing file, over the size limit, not an image...).

    The worker should not retry the item.
    """


class RetryableLoadError(LoadError):
    """Loading failed for a reason that may pass (timeout, connection reset, HTTP 5xx/429).

    The worker should retry the item later.
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
