"""Rerankers: rescore a list of search candidates in Python (filled by ``register_rerankers``)."""

from __future__ import annotations

from collections.abc import Sequence

from .encoders import Item
from .errors import NotFoundError

__all__ = ["Reranker", "get_reranker", "list_rerankers", "register_reranker"]


class Reranker:
    """Base class of rerankers; subclasses set ``name`` and implement ``score``."""

    name: str = ""

    def score(self, query: Item, candidates: Sequence[Item]) -> list[float]:
        """One score per candidate, higher is better, in the candidates' order."""
        raise NotImplementedError


_REGISTRY: dict[str, Reranker] = {}


def register_reranker(reranker: Reranker) -> None:
    """Add a reranker (plugins do this through ``register_rerankers``)."""
    _REGISTRY[reranker.name] = reranker


def _ensure_loaded() -> None:
    from .plugins import load_rerankers

    load_rerankers()


def list_rerankers() -> dict[str, Reranker]:
    """Registered rerankers by name."""
    _ensure_loaded()
    return dict(_REGISTRY)


def get_reranker(name: str) -> Reranker:
    """The reranker called ``name``.

    Raises:
        NotFoundError: no such reranker; the message lists the registered ones.
    """
    _ensure_loaded()
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY)) or "none"
        raise NotFoundError(f"no reranker named {name!r}; registered rerankers: {known}") from None
