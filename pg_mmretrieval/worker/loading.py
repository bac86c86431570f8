"""Turn a queued cell into encoder input: text, bytea, a file path or a URL.

Delegates to the loader registered for the kind (``pg_mmretrieval.loaders``, filled by the
``register_loaders`` hook; the built-in ones are ``pg_mmretrieval_plugins.loaders``) with the
worker's limits, so every limit and policy of :class:`~pg_mmretrieval.loaders.LoadLimits`
(sizes, URL hosts and deadline, path roots, image and text bounds) applies to the worker.
"""

from __future__ import annotations

from ..encoders import Item
from ..loaders import LoadLimits, get_loader

__all__ = ["Limits", "load"]

#: the worker's limits are the loaders' limits (``MMR_*`` variables, ``mmr worker`` flags)
Limits = LoadLimits


def load(kind: str, cell: object, limits: LoadLimits) -> Item:
    """Encoder input for ``cell``: ``str`` for text, ``bytes`` (an image file) otherwise.

    Args:
        kind: ``text`` for text spaces, else the collection's ``image_kind`` (``bytea``,
            ``path``, ``url``, ``auto``).

    Raises:
        PermanentLoadError: empty content, over a limit, refused by the URL or path policy,
            missing file, HTTP 4xx.
        RetryableLoadError: timeouts, the URL deadline, connection errors, HTTP 5xx/429.
        NotFoundError: no loader is registered for ``kind``.
    """
    return get_loader(kind).load(cell, limits)
