"""The base classes plugins implement (Encoder, Loader, Reranker) and the values they handle
(Item, Hit, QueryInfo).

This module knows nothing of the plugin manager (``pg_mmretrieval.registry`` imports it, never
the other way round: the shape of ``llm``'s ``models.py``).  The classes stay importable from
their historical homes: ``pg_mmretrieval.encoders``, ``pg_mmretrieval.loaders`` and
``pg_mmretrieval.rerankers``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import numpy.typing as npt

from .errors import EncoderError, InputError

if TYPE_CHECKING:
    from .loaders import LoadLimits

__all__ = [
    "Encoder",
    "FunctionReranker",
    "Hit",
    "Item",
    "Loader",
    "QueryInfo",
    "RerankFunction",
    "Reranker",
]

#: an encoder's input: ``str`` is text, ``bytes`` an encoded image file
Item = str | bytes


# -- encoders ---------------------------------------------------------------------------------


class Encoder:
    """Base class of encoders (the shape of ``llm``'s embedding models).

    Subclasses set ``name``, ``dimension`` and ``modalities`` and implement ``_embed``; the
    base class splits input into batches and checks modalities and results.
    """

    name: str = ""
    dimension: int = 0
    modalities: frozenset[str] = frozenset({"text"})
    batch_size: int = 32
    #: identifies the exact weights and preprocessing (stored with every embedding)
    model_id: str = ""

    @property
    def provider(self) -> str:
        """The ONNX Runtime execution provider in use (``CPUExecutionProvider`` etc.)."""
        return "python"

    def with_options(self, **options: Any) -> Encoder:
        """A copy of this encoder configured by ``options`` (e.g. ``truncate=True``).

        Raises:
            InputError: an option this encoder does not know.
        """
        if options:
            raise InputError(
                f"encoder {self.name!r} takes no options (got {', '.join(sorted(options))})"
            )
        return self

    def embed_batch(self, items: Iterable[Item]) -> Iterator[npt.NDArray[np.float32]]:
        """Yield one L2-normalised float32 vector per item, in order.

        Raises:
            InputError: an item's modality is not supported, or it is empty.
            EncoderError: the model failed.
        """
        batch: list[Item] = []
        for item in items:
            self._check_item(item)
            batch.append(item)
            if len(batch) >= self.batch_size:
                yield from self._run(batch)
                batch = []
        if batch:
            yield from self._run(batch)

    def _check_item(self, item: Item) -> None:
        if isinstance(item, str):
            modality = "text"
        elif isinstance(item, bytes | bytearray | memoryview):
            modality = "image"
        else:
            raise InputError(
                f"encoder {self.name!r}: items must be str (text) or bytes (an image file), "
                f"not {type(item).__name__}"
            )
        if modality not in self.modalities:
            raise InputError(
                f"encoder {self.name!r} does not embed {modality} (it embeds "
                f"{', '.join(sorted(self.modalities))})"
            )
        if len(item) == 0:
            raise InputError(f"encoder {self.name!r}: empty {modality} item")

    def _run(self, batch: Sequence[Item]) -> Iterator[npt.NDArray[np.float32]]:
        out = np.asarray(self._embed(batch), dtype=np.float32)
        if out.shape != (len(batch), self.dimension):
            raise EncoderError(
                f"encoder {self.name!r} returned shape {out.shape}, expected "
                f"({len(batch)}, {self.dimension})"
            )
        if not np.all(np.isfinite(out)):
            raise EncoderError(f"encoder {self.name!r} produced NaN or infinite values")
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        if np.any(norms == 0):
            raise EncoderError(f"encoder {self.name!r} produced a zero vector")
        yield from out / norms

    def _embed(self, batch: Sequence[Item]) -> npt.NDArray[np.float32]:
        raise NotImplementedError


# -- loaders ----------------------------------------------------------------------------------


class Loader:
    """Base class of loaders; subclasses set ``kind`` and implement ``load``."""

    #: the kind of cell handled: ``bytea``, ``path``, ``url``, ``text``, ``auto`` or custom
    kind: ClassVar[str] = ""

    def load(self, cell: object, limits: LoadLimits) -> Item:
        """Turn ``cell`` into ``str`` (text) or ``bytes`` (an encoded image file).

        Raises:
            PermanentLoadError: the cell can never be loaded.
            RetryableLoadError: loading failed for a reason that may pass.
        """
        raise NotImplementedError


# -- search results and rerankers -------------------------------------------------------------


@dataclass(frozen=True)
class Hit:
    """One search result: the row's key (plain value, or dict for a composite key) and score."""

    key: Any
    score: float


@dataclass(frozen=True)
class QueryInfo:
    """What a reranker learns about the query."""

    collection: str
    space: str
    method: str
    vector: np.ndarray[Any, Any] | None = None
    text: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    item: str | bytes | None = None


#: a reranking function: the query and the candidates (best first) in, a new list out (it may
#: drop candidates or change scores)
RerankFunction = Callable[[QueryInfo, list[Hit]], list[Hit]]


class Reranker:
    """Base class of Python rerankers (plugins' ``register_rerankers``, applications).

    Subclasses set ``name`` and implement one of:

    * ``score(query, candidates)``: a *content* reranker.  The search reads each candidate's
      content (text, or image bytes) from the table (``mmr.row_contents``, the caller's
      rights) and sorts the candidates by these scores; ``query`` is the query's text or
      image bytes (``query_item=``, else the query text).
    * ``rerank(query, hits)``: reorders the hits from :class:`QueryInfo` and the hits' keys
      and scores alone (no content read).

    A plain function ``(QueryInfo, hits) -> hits`` is adapted by :class:`FunctionReranker`.
    """

    name: str = ""

    @property
    def scores_content(self) -> bool:
        """True for a content reranker (``score``), False when ``rerank`` is implemented."""
        return type(self).rerank is Reranker.rerank

    def score(self, query: Item, candidates: Sequence[Item]) -> list[float]:
        """One score per candidate content, higher is better, in the candidates' order."""
        raise NotImplementedError

    def rerank(self, query: QueryInfo, candidates: list[Hit]) -> list[Hit]:
        """The candidates (best first) in a new order; may drop some or change scores."""
        raise NotImplementedError


class FunctionReranker(Reranker):
    """A function ``(QueryInfo, hits) -> hits`` as a :class:`Reranker`.

    Example::

        register_reranker(FunctionReranker(by_key, "by-key"))
    """

    def __init__(self, fn: RerankFunction, name: str = "") -> None:
        self.fn = fn
        self.name = name or str(getattr(fn, "__name__", ""))

    def rerank(self, query: QueryInfo, candidates: list[Hit]) -> list[Hit]:
        return self.fn(query, candidates)

    def __repr__(self) -> str:
        return f"FunctionReranker({self.fn!r}, {self.name!r})"
