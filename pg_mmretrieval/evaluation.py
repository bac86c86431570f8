"""Retrieval evaluation: Recall@K, Recall_subset@K (CIRR), mAP@K (CIRCO / INQUIRE), nDCG@K,
cumulative Hits@K over dialog rounds (ChatIR), from a JSONL query file run against a collection.

Query file: one JSON object per line, e.g.
    {"id": "q1", "text": "a red circle", "relevant": [12, 40]}
    {"id": "q2", "reference": 7, "modifier": "make it blue", "target": 8, "subset": [8, 9, 10]}
    {"id": "q3", "vector": [0.1, ...], "relevant": {"12": 2, "40": 1}}
Fields: ``text`` / ``vector`` / ``image`` (a path) for plain search; ``reference`` (a stored key)
or ``reference_vector`` plus ``modifier`` (text) or ``modifier_vector`` for composed search;
``relevant`` (keys, or key -> grade) and/or ``target`` (one key); ``subset`` (CIRR group
members).  Keys are compared as JSON values (``7`` and ``"7"`` differ).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from .errors import InputError

__all__ = [
    "EvalQuery",
    "average_precision_at_k",
    "cumulative_hits_at_k",
    "evaluate",
    "load_queries",
    "ndcg_at_k",
    "recall_at_k",
    "recall_subset_at_k",
    "run_queries",
    "summarize",
]


def _k(key: Any) -> str:
    """A canonical form of a key (JSON text) for comparisons."""
    return json.dumps(key, sort_keys=True)


def recall_at_k(
    ranking: Sequence[Any], relevant: Iterable[Any], k: int, exclude: Iterable[Any] = ()
) -> float:
    """1 if any relevant key is in the top k (after removing ``exclude``, e.g. the CIRR
    reference), else 0.  Averaged over queries this is CIRR/FashionIQ R@K and COCO I2T R@K."""
    rel = {_k(r) for r in relevant}
    ex = {_k(e) for e in exclude}
    top = [r for r in ranking if _k(r) not in ex][:k]
    return 1.0 if any(_k(r) in rel for r in top) else 0.0


def recall_subset_at_k(
    ranking: Sequence[Any], target: Any, subset: Iterable[Any], k: int, exclude: Iterable[Any] = ()
) -> float:
    """CIRR Recall_subset@K: the same global ranking restricted to the query's group members
    (reference excluded); 1 if the target is in the top k of that restricted list."""
    members = {_k(s) for s in subset} - {_k(e) for e in exclude}
    restricted = [r for r in ranking if _k(r) in members][:k]
    return 1.0 if _k(target) in {_k(r) for r in restricted} else 0.0


def average_precision_at_k(
    ranking: Sequence[Any], relevant: Iterable[Any], k: int, exclude: Iterable[Any] = ()
) -> float:
    """CIRCO / INQUIRE AP@K = (1/min(|G|, K))·Σ_{i≤K} P@i·rel_i."""
    rel = {_k(r) for r in relevant}
    if not rel:
        return 0.0
    ex = {_k(e) for e in exclude}
    top = [r for r in ranking if _k(r) not in ex][:k]
    hits, total = 0, 0.0
    for i, r in enumerate(top, start=1):
        if _k(r) in rel:
            hits += 1
            total += hits / i
    return total / min(len(rel), k)


def ndcg_at_k(
    ranking: Sequence[Any],
    grades: Mapping[Any, float] | Iterable[Any],
    k: int,
    exclude: Iterable[Any] = (),
) -> float:
    """nDCG@K with linear gains and log2(i+1) discounts (trec_eval's ndcg_cut)."""
    g = (
        {_k(key): float(v) for key, v in grades.items()}
        if isinstance(grades, Mapping)
        else {_k(key): 1.0 for key in grades}
    )
    ex = {_k(e) for e in exclude}
    top = [r for r in ranking if _k(r) not in ex][:k]
    dcg = sum(g.get(_k(r), 0.0) / math.log2(i + 1) for i, r in enumerate(top, start=1))
    ideal = sorted((v for v in g.values() if v > 0), reverse=True)[:k]
    idcg = sum(v / math.log2(i + 1) for i, v in enumerate(ideal, start=1))
    return dcg / idcg if idcg > 0 else 0.0


def cumulative_hits_at_k(
    rankings_per_round: Sequence[Sequence[Any]], target: Any, k: int = 10
) -> list[float]:
    """ChatIR: for each round r, 1 if the target was in the top k at any round ≤ r."""
    out, hit = [], False
    for ranking in rankings_per_round:
        hit = hit or _k(target) in {_k(x) for x in list(ranking)[:k]}
        out.append(1.0 if hit else 0.0)
    return out


@dataclass
class EvalQuery:
    """One labelled query of a query file."""

    id: str
    spec: dict[str, Any]
    relevant: dict[str, float] = field(default_factory=dict)
    relevant_keys: list[Any] = field(default_factory=list)
    target: Any = None
    subset: list[Any] | None = None
    exclude: list[Any] = field(default_factory=list)


def load_queries(path: str | Path) -> list[EvalQuery]:
    """Parse a JSONL query file (see the module docstring)."""
    out: list[EvalQuery] = []
    for n, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"{path}:{n}: not valid JSON ({e.msg})") from e
        if not isinstance(obj, dict):
            raise InputError(f"{path}:{n}: each line must be a JSON object")
        rel = obj.get("relevant")
        q = EvalQuery(
            id=str(obj.get("id", n)), spec=obj, target=obj.get("target"), subset=obj.get("subset")
        )
        if isinstance(rel, dict):
            q.relevant = {
                _k(json.loads(k) if _looks_json(k) else k): float(v) for k, v in rel.items()
            }
            q.relevant_keys = [json.loads(k) if _looks_json(k) else k for k in rel]
        elif isinstance(rel, list):
            q.relevant = {_k(r): 1.0 for r in rel}
            q.relevant_keys = list(rel)
        if q.target is not None and _k(q.target) not in q.relevant:
            q.relevant[_k(q.target)] = 1.0
            q.relevant_keys.append(q.target)
        if not q.relevant:
            raise InputError(f"{path}:{n}: query {q.id} has neither relevant nor target")
        if "reference" in obj and obj.get("exclude_reference", True):
            q.exclude = [obj["reference"]]
        out.append(q)
    if not out:
        raise InputError(f"{path}: no queries")
    return out


def _looks_json(s: str) -> bool:
    try:
        json.loads(s)
    except ValueError:
        return False
    return True


def evaluate(
    rankings: Mapping[str, Sequence[Any]],
    queries: Sequence[EvalQuery],
    ks: Sequence[int] = (1, 5, 10, 50),
) -> dict[str, float]:
    """Mean metrics over queries: R@K, Rsubset@K (K ≤ 3, when queries have a subset), mAP@K,
    nDCG@K."""
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}

    def add(name: str, v: float) -> None:
        sums[name] = sums.get(name, 0.0) + v
        counts[name] = counts.get(name, 0) + 1

    for q in queries:
        ranking = rankings.get(q.id, [])
        for k in ks:
            add(f"R@{k}", recall_at_k(ranking, q.relevant_keys, k, q.exclude))
            add(f"mAP@{k}", average_precision_at_k(ranking, q.relevant_keys, k, q.exclude))
            grades = {json.loads(key): v for key, v in q.relevant.items()}
            add(f"nDCG@{k}", ndcg_at_k(ranking, grades, k, q.exclude))
        if q.subset is not None and q.target is not None:
            for k in (1, 2, 3):
                add(f"Rsubset@{k}", recall_subset_at_k(ranking, q.target, q.subset, k, q.exclude))
    return {name: sums[name] / counts[name] for name in sums}


SearchFn = Callable[[EvalQuery, int], Sequence[Any]]


def run_queries(
    conn: psycopg.Connection[Any],
    collection: str,
    space: str,
    queries: Sequence[EvalQuery],
    *,
    k: int = 50,
    method: str | None = None,
    params: Mapping[str, Any] | None = None,
    hybrid: bool = False,
) -> dict[str, list[Any]]:
    """Run each query (plain, composed or hybrid search) and return its ranking (keys)."""
    import numpy as np

    from . import retrieval
    from .query import embed_query

    def embed(text: str | None = None, image: str | None = None) -> Any:
        return np.asarray(embed_query(conn, collection, space, text=text, image_path=image))

    out: dict[str, list[Any]] = {}
    for q in queries:
        s = q.spec
        if "modifier" in s or "modifier_vector" in s:
            mod = s.get("modifier_vector")
            mod = np.asarray(mod) if mod is not None else embed(text=s["modifier"])
            ref_vec = s.get("reference_vector")
            hits = retrieval.composed_search(
                conn,
                collection,
                space,
                None if ref_vec is None else np.asarray(ref_vec),
                mod,
                reference_key=s.get("reference") if ref_vec is None else None,
                method=method or "weighted",
                k=k,
                params=params,
            )
        else:
            if "vector" in s:
                vec = np.asarray(s["vector"])
            elif "image" in s:
                vec = embed(image=s["image"])
            elif "text" in s:
                vec = embed(text=s["text"])
            else:
                raise InputError(f"query {q.id}: give text, vector, image or reference+modifier")
            if hybrid:
                hits = retrieval.hybrid_search(
                    conn, collection, s.get("text"), [(space, vec)], k=k, params=params
                )
            else:
                hits = retrieval.search(conn, collection, space, vec, k)
        out[q.id] = [h.key for h in hits]
    return out


def summarize(metrics: Mapping[str, float]) -> list[dict[str, Any]]:
    """Rows (metric, value) in a stable order for printing."""
    order = {"R": 0, "Rsubset": 1, "mAP": 2, "nDCG": 3}

    def key(name: str) -> tuple[int, int]:
        base, _, kk = name.partition("@")
        return order.get(base, 9), int(kk or 0)

    return [{"metric": m, "value": round(metrics[m], 4)} for m in sorted(metrics, key=key)]
