"""What every system of the benchmark implements."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

Array = np.ndarray[Any, Any]

# HNSW parameters shared by every graph index (pgvector's defaults: m 16, ef_construction 64)
M = 16
EF_CONSTRUCTION = 64


class Skip(Exception):
    """The system cannot run here (its package is missing, ...); the message says why."""


class System:
    """One system: build it over the corpus, then answer one query at a time.

    ``knob`` names the search-time setting the benchmark tunes to matched recall (``None``:
    nothing to tune, e.g. an exact search); ``search`` returns row numbers (0..n-1).
    """

    name = ""
    kind = ""  # "SQL" or "in-process"
    knob: str | None = "ef"
    supports_filter = True
    #: search-time settings tried, smallest first, until recall@k reaches the target
    ladder: tuple[int, ...] = (
        10,
        16,
        20,
        24,
        32,
        40,
        48,
        64,
        80,
        100,
        128,
        160,
        200,
        256,
        320,
        400,
        512,
        640,
        800,
        1000,
    )

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.settings: dict[str, Any] = {}

    @classmethod
    def check(cls) -> None:
        """Raise :class:`Skip` when the system cannot run (called before building)."""

    def build(self, vectors: Array, cats: Array) -> None:
        """Load ``vectors`` (row i has category ``cats[i]``) and build the index."""
        raise NotImplementedError

    def search(self, q: Array, k: int, knob: int | None) -> list[int]:
        raise NotImplementedError

    def search_filtered(self, q: Array, k: int, knob: int | None, cat: int) -> list[int]:
        """The k nearest among rows of category ``cat``."""
        raise NotImplementedError

    def index_bytes(self) -> int | None:
        """Size of the index (or the store) on disk / in memory, when the system tells."""
        return None

    def close(self) -> None:
        pass


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
