"""Encoding a batch so that one bad item fails alone."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from ..encoders import Encoder

__all__ = ["Encodable", "encode_isolating"]


class Encodable(Protocol):
    """What :func:`encode_isolating` needs of an item: the worker's queue items, and the
    encoder service's requests (``pg_mmretrieval.serve``)."""

    extra: dict[str, Any]  # "input": the encoder input (str or bytes)
    vector: npt.NDArray[np.float32] | None
    error: BaseException | None


def encode_isolating(encoder: Encoder, items: Sequence[Encodable]) -> None:
    """Set ``item.vector`` for every item, or ``item.error`` for those that fail.

    The batch is encoded at once; if that raises, it is split in halves and each half is
    retried, down to single items, so a poison item costs ``O(log n)`` extra calls and its
    neighbours still get their vectors in the same batch.
    """
    if not items:
        return
    try:
        vectors = list(encoder.embed_batch([it.extra["input"] for it in items]))
    except Exception as e:  # isolated below; the class decides retry or dead letter
        if len(items) == 1:
            items[0].error = e
            return
        mid = len(items) // 2
        encode_isolating(encoder, items[:mid])
        encode_isolating(encoder, items[mid:])
        return
    for it, v in zip(items, vectors, strict=True):
        it.vector = v
