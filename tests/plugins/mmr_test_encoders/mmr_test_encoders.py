"""Deterministic test encoders: no model, instant, same input -> same vector.

``mmr-test`` embeds text and images (32 dimensions) by hashing the content; it makes the
worker and the SQL paths testable without a model.  It is not meant for real retrieval.

A development-only distribution (``mmr-test-encoders``, this folder): ``make venv`` installs it
in the checkout's environment; the ``pg_mmretrieval`` wheel does not contain it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt

from pg_mmretrieval.encoders import Encoder, Item
from pg_mmretrieval.hookspecs import hookimpl


class HashEncoder(Encoder):
    """Maps each item to a pseudo-random unit vector seeded by its sha256."""

    name = "mmr-test"
    dimension = 32
    modalities = frozenset({"text", "image"})
    model_id = "mmr-test/sha256-v1"

    def _embed(self, batch: Sequence[Item]) -> npt.NDArray[np.float32]:
        out = np.empty((len(batch), self.dimension), dtype=np.float32)
        for i, item in enumerate(batch):
            data = item.encode("utf-8") if isinstance(item, str) else bytes(item)
            seed = int.from_bytes(hashlib.sha256(data).digest()[:8], "little")
            out[i] = np.random.default_rng(seed).standard_normal(self.dimension)
        return out


def encoders() -> list[Encoder]:
    """The encoders of this plugin (kept for callers that build them directly)."""
    return [HashEncoder()]


@hookimpl
def register_encoders(register: Callable[[Encoder], None]) -> None:
    for enc in encoders():
        register(enc)
