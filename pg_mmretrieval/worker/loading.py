"""Loading: the worker's part that turns claimed cells into encoder input.

Each cell goes through the loader registered for its kind (:func:`pg_mmretrieval.loaders.
get_loader`, filled by the ``register_loaders`` hook) with the worker's
:class:`~pg_mmretrieval.loaders.LoadLimits`, so every limit and policy of the loaders (sizes,
URL hosts and deadline, path roots, image and text bounds) applies to the worker.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from ..loaders import LoadLimits, get_loader
from .catalog import CatalogCollection, CatalogSpace

__all__ = ["ItemLoader", "cell_kind"]

#: image kinds whose cells are read from files or fetched: loaded on the thread pool
_SLOW_KINDS = ("path", "url", "auto")


class _Loadable(Protocol):
    space: CatalogSpace
    content: object
    extra: dict[str, Any]
    error: BaseException | None


def cell_kind(coll: CatalogCollection, space: CatalogSpace) -> str:
    """The loader kind of ``space``'s cells: ``text``, else the collection's ``image_kind``."""
    return "text" if space.modality == "text" else (coll.image_kind or "bytea")


class ItemLoader:
    """Loads claimed items: ``item.extra["input"]`` is set, or ``item.error``.

    Owns the threads that read files and fetch URLs (``load_threads`` of them).
    """

    def __init__(self, limits: LoadLimits, threads: int) -> None:
        self.limits = limits
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="mmr-load")

    def load(self, coll: CatalogCollection, items: Sequence[_Loadable]) -> None:
        """Load every item of ``coll``; a failure is the item's own, never the batch's."""

        def one(it: _Loadable) -> None:
            try:
                loader = get_loader(cell_kind(coll, it.space))
                it.extra["input"] = loader.load(it.content, self.limits)
            except Exception as e:  # classified per item; never fails the batch
                it.error = e

        if coll.image_kind in _SLOW_KINDS:
            list(self._pool.map(one, items))
        else:
            for it in items:
                one(it)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
