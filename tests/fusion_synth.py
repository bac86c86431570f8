"""The synthetic, model-free generator of FUSION.md §6 and loaders into an external space.

d = 64; E = orthonormal rows of qr(randn(64, 64)); concept c ↦ a row of E; modality offsets
g_img = gap·E[40], g_txt = gap·E[41];
img(S) = n(Σ e_c + √|S|·g_img + σ_i·N), txt(S) = n(Σ e_c + √|S|·g_txt + σ_t·N).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import psycopg
from pgvector import Vector

D = 64
F32 = np.float32


def n(x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    return np.asarray(x / np.linalg.norm(x, axis=-1, keepdims=True))


class Gen:
    """One seed's concept basis and embedding functions."""

    def __init__(
        self,
        seed: int,
        gap: float = 0.8,
        sigma_i: float = 0.10,
        sigma_t: float = 0.05,
        sqrt_offset: bool = True,
    ) -> None:
        self.rng = np.random.default_rng(seed)
        q, _ = np.linalg.qr(self.rng.standard_normal((D, D)))
        self.E = q.T
        self.gap, self.si, self.st, self.sqrt_offset = gap, sigma_i, sigma_t, sqrt_offset
        self.idx: dict[str, int] = {}

    def e(self, c: str) -> np.ndarray[Any, Any]:
        if c not in self.idx:
            self.idx[c] = len(self.idx)
        return np.asarray(self.E[self.idx[c]])

    def _emb(
        self,
        s: Sequence[str],
        off: np.ndarray[Any, Any],
        sigma: float,
        weights: Sequence[float] | None = None,
    ) -> np.ndarray[Any, Any]:
        w = weights or [1.0] * len(s)
        base = sum(wi * self.e(c) for wi, c in zip(w, s, strict=True))
        scale = np.sqrt(len(s)) if self.sqrt_offset else 1.0
        return n(base + scale * off + sigma * self.rng.standard_normal(D))

    def img(
        self, s: Sequence[str], sigma: float | None = None, weights: Sequence[float] | None = None
    ) -> np.ndarray[Any, Any]:
        return self._emb(s, self.gap * self.E[40], self.si if sigma is None else sigma, weights)

    def txt(self, s: Sequence[str]) -> np.ndarray[Any, Any]:
        return self._emb(s, self.gap * self.E[41], self.st)


OBJ = ["dog", "cat", "car"]
COL = ["red", "blue", "green"]
CTX = ["beach", "snow", "city"]


@dataclass
class Case:
    """One seed: gallery (item id -> vector), queries, target id, extra vectors."""

    seed: int
    gallery: list[np.ndarray[Any, Any]] = field(default_factory=list)
    target: int = 0
    ref: Any = None
    mod: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


def t1_case(
    seed: int,
    sigma_i: float = 0.10,
    captions: int = 0,
    ref_triple: tuple[str, ...] = ("dog", "beach"),
) -> Case:
    """T1 (and T5 with sigma_i=0.4, captions=3): target (dog, red, beach)."""
    g = Gen(seed, sigma_i=sigma_i)
    items: list[tuple[str, ...]] = [("dog", "red", "beach")]
    items += [ref_triple] * 5
    items += [("car", "red", "city")] * 3
    items += [t for t in itertools.product(OBJ, COL, CTX) if t != ("dog", "red", "beach")]
    case = Case(seed)
    case.gallery = [g.img(t) for t in items]
    case.target = 0
    case.ref = g.img(ref_triple)
    case.mod = g.txt(["red"])
    if captions:
        case.extra["captions"] = [[g.txt(t) for t in items] for _ in range(captions)]
        case.extra["ref_captions"] = [g.txt(ref_triple) for _ in range(captions)]
    case.extra["gen"] = g
    return case


def t2_case(seed: int) -> Case:
    """T2: reference (dog, blue, beach) x5 in the gallery; PDV texts."""
    case = t1_case(seed, ref_triple=("dog", "blue", "beach"))
    g: Gen = case.extra["gen"]
    case.extra["f_t"] = g.txt(["dog", "blue", "beach"])
    case.extra["f_tc"] = g.txt(["dog", "red", "beach"])
    return case


T3_OBJ = ["dog", "cat", "car", "tower", "shoe", "vase"]
T3_STY = ["photo", "sketch", "painting", "cartoon"]


def t3_case(seed: int) -> Case:
    """T3: domain conversion; img(o,s) = n(e_o + 1.2 e_s + g_img + σN), no √|S| offsets."""
    g = Gen(seed, gap=1.0, sqrt_offset=False)
    for c in T3_OBJ + T3_STY:
        g.e(c)
    items: list[tuple[str, str]] = [("dog", "sketch")]
    items += [("dog", "photo")] * 5 + [("cat", "sketch")] * 5
    for o, s in itertools.product(T3_OBJ, T3_STY):
        if (o, s) not in {("dog", "sketch"), ("dog", "photo"), ("cat", "sketch")}:
            items += [(o, s)] * 3
    case = Case(seed)
    case.gallery = [g.img([o, s], weights=[1.0, 1.2]) for o, s in items]
    case.ref = g.img(["dog", "photo"], weights=[1.0, 1.2])
    case.mod = g.txt(["sketch"])
    case.extra["pos"] = np.stack([g.txt([o]) for o in T3_OBJ])
    case.extra["neg"] = np.stack([g.txt([s]) for s in T3_STY])
    return case


def load(
    conn: psycopg.Connection[Any],
    name: str,
    cases: Sequence[Case],
    caption_spaces: int = 0,
    index: bool = False,
) -> None:
    """One collection for all seeds: table (id, seed), space `img` (+ `cap1..`), external.

    Items of seed s have ids s*1000 + i; a filter {"seed": s} selects one seed's gallery.  The
    HNSW index is dropped unless ``index`` (exact scans: the pass rates test the formulas).
    """
    import pg_mmretrieval as mmr

    conn.execute(f"CREATE TABLE {name} (id int PRIMARY KEY, seed int NOT NULL)")
    ids = [c.seed * 1000 + i for c in cases for i in range(len(c.gallery))]
    with conn.cursor() as cur:
        cur.executemany(f"INSERT INTO {name} VALUES (%s, %s)", [(i, i // 1000) for i in ids])
    conn.execute(f"CREATE INDEX ON {name} (seed)")
    mmr.create_collection(conn, name, name)
    spaces = ["img"] + [f"cap{j + 1}" for j in range(caption_spaces)]
    for sp in spaces:
        emb = mmr.add_space(conn, name, sp, "external", None, D)
        if not index:
            conn.execute(f"DROP INDEX {emb}_hnsw")
    mmr.put_embeddings(conn, name, "img", ids, np.concatenate([np.stack(c.gallery) for c in cases]))
    for j in range(caption_spaces):
        vecs = np.concatenate([np.stack(c.extra["captions"][j]) for c in cases])
        mmr.put_embeddings(conn, name, f"cap{j + 1}", ids, vecs)
    conn.execute(f"ANALYZE {name}")


def vec(x: np.ndarray[Any, Any]) -> Vector:
    return Vector(np.asarray(x, dtype=F32))


def vec_text(x: np.ndarray[Any, Any]) -> str:
    return "[" + ",".join(f"{float(v):.9g}" for v in np.asarray(x, dtype=F32)) + "]"
