"""Exact search, matched-recall settings, interleaved timing, and the JSON / Markdown outputs.

Method (the same for every system, in one process, one query per call):

1. every row gets a category ``0..CATEGORIES-1`` (seeded), so ``cat = c`` selects 1 % of rows;
2. each system is built (load + index) and timed; its index size is read;
3. **matched recall**: for systems with a search-time knob (``ef`` / ``ef_search``), the
   smallest value of its ladder whose recall@k over the queries reaches ``target`` is chosen;
4. **interleaved timing**: query i is sent to every system in turn, the order rotated with i,
   so a slow phase of a shared machine hits every system alike; p50/p99 of the per-query
   latencies, QPS = 1 / mean latency (one client, one query at a time);
5. **filtered search**: the same, with ``cat = c`` (a per-query category), at the chosen
   setting: rows returned (k expected) and recall against the exact filtered top-k.
"""

from __future__ import annotations

import datetime
import os
import platform
import time
import traceback
from collections.abc import Callable
from typing import Any

import numpy as np

from .base import Array, Skip, System

CATEGORIES = 100  # 1 % selectivity
WARMUP = 20


class NumpyExact(System):
    """Brute force in numpy (one matrix-vector product per query): the ground truth's method."""

    name = "numpy exact (brute force)"
    kind = "in-process"
    knob = None

    def build(self, vectors: Array, cats: Array) -> None:
        self.docs = np.ascontiguousarray(vectors, dtype=np.float32)
        self.cats = cats
        self._rows: dict[int, Array] = {}
        self.settings = {"index": "none"}

    def search(self, q: Array, k: int, knob: int | None) -> list[int]:
        return [int(i) for i in _topk(self.docs @ q, k)]

    def search_filtered(self, q: Array, k: int, knob: int | None, cat: int) -> list[int]:
        if cat not in self._rows:
            self._rows[cat] = np.flatnonzero(self.cats == cat)
        rows = self._rows[cat]
        return [int(rows[i]) for i in _topk(self.docs[rows] @ q, k)]

    def index_bytes(self) -> int | None:
        return int(self.docs.nbytes)


def _topk(scores: Array, k: int) -> Array:
    k = min(k, len(scores))
    part = np.argpartition(-scores, k - 1)[:k]
    return part[np.argsort(-scores[part], kind="stable")]


def exact(docs: Array, queries: Array, k: int) -> Array:
    """(q, k) row numbers of the exact top-k by cosine (vectors are unit length)."""
    return np.stack([_topk(docs @ q, k) for q in queries])


def exact_filtered(docs: Array, cats: Array, queries: Array, qcats: Array, k: int) -> list[Array]:
    out = []
    for q, c in zip(queries, qcats, strict=True):
        rows = np.flatnonzero(cats == c)
        out.append(rows[_topk(docs[rows] @ q, k)])
    return out


def recall(found: list[list[int]], truth: list[Array] | Array, k: int) -> float:
    """Mean over queries of |found ∩ exact top-k| / min(k, rows that qualify)."""
    hits = []
    for f, t in zip(found, truth, strict=True):
        want = min(k, len(t))
        hits.append(len(set(f[:k]) & set(t.tolist())) / want if want else float(not f))
    return float(np.mean(hits)) if hits else 0.0


def _pct(times: list[float], p: float) -> float:
    return float(np.percentile(np.asarray(times) * 1e3, p))


def run(
    docs: Array,
    queries: Array,
    systems: dict[str, Callable[[], System]],
    *,
    k: int = 10,
    target: float = 0.95,
    seed: int = 3,
    log: Callable[[str], None] = print,
    breakdown: Callable[[dict[str, dict[str, Any]]], dict[str, float]] | None = None,
) -> dict[str, Any]:
    """Build, calibrate and time every system; the result as a JSON-ready dict.

    ``breakdown(results)`` (run last, its result stored as ``postgres_cost_ms``): where a bare
    SQL query's time goes (:func:`.systems_pg.cost_breakdown`)."""
    rng = np.random.default_rng(seed)
    cats = rng.integers(0, CATEGORIES, len(docs))
    qcats = rng.integers(0, CATEGORIES, len(queries))
    truth = exact(docs, queries, k)
    ftruth = exact_filtered(docs, cats, queries, qcats, k)
    results: dict[str, dict[str, Any]] = {}
    live: dict[str, System] = {}
    for key, make in systems.items():
        res: dict[str, Any] = {"key": key}
        results[key] = res
        try:
            system = make()
            res.update(name=system.name, kind=system.kind, knob=system.knob)
            type(system).check()
            log(f"build: {system.name} ...")
            t0 = time.perf_counter()
            system.build(docs, cats)
            res["build_s"] = time.perf_counter() - t0
            res["index_bytes"] = system.index_bytes()
            res["settings"] = dict(system.settings)
            res["status"] = "ok"
            live[key] = system
        except Skip as e:
            res.update(status="skipped", reason=str(e))
            log(f"skip: {key}: {e}")
        except Exception as e:
            res.update(status="failed", reason=f"{type(e).__name__}: {e}")
            log(f"failed: {key}: {traceback.format_exc(limit=3)}")
    chosen: dict[str, int | None] = {}
    for key, system in list(live.items()):
        try:
            chosen[key] = _calibrate(system, queries, truth, k, target, results[key], log)
        except Exception as e:
            results[key].update(status="failed", reason=f"{type(e).__name__}: {e}")
            system.close()
            del live[key]
    for label, filtered in (("search", False), ("filtered", True)):
        log(f"timing: {label}, {len(queries)} queries, interleaved over {len(live)} systems")
        timed = _interleaved(live, queries, qcats, k, chosen, filtered, results, log)
        for key, (times, found) in timed.items():
            t = truth if not filtered else ftruth
            entry = {
                "recall": recall(found, t, k),
                "rows_mean": float(np.mean([len(f) for f in found])),
                "p50_ms": _pct(times, 50),
                "p99_ms": _pct(times, 99),
                "qps": float(len(times) / sum(times)),
            }
            results[key][label] = entry
    for system in live.values():
        system.close()
    extra: dict[str, Any] = {}
    if breakdown is not None:
        try:
            extra["postgres_cost_ms"] = breakdown(results)
        except Exception as e:
            extra["postgres_cost_ms"] = {"error": f"{type(e).__name__}: {e}"}
    return {
        "benchmark": "bench/peers.py",
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": _machine(),
        "n": len(docs),
        "dim": int(docs.shape[1]),
        "queries": len(queries),
        "k": k,
        "target_recall": target,
        "filter_selectivity": 1 / CATEGORIES,
        "systems": results,
        **extra,
    }


def _calibrate(
    system: System,
    queries: Array,
    truth: Array,
    k: int,
    target: float,
    res: dict[str, Any],
    log: Callable[[str], None],
) -> int | None:
    if system.knob is None:
        res["setting"] = None
        return None
    tried: list[tuple[int, float]] = []
    for value in (v for v in system.ladder if v >= k):
        found = [system.search(q, k, value) for q in queries]
        r = recall(found, truth, k)
        tried.append((value, r))
        if r >= target:
            break
    value, r = tried[-1]
    res["setting"] = value
    res["calibration"] = tried
    res["target_reached"] = r >= target
    log(f"calibrate: {system.name}: {system.knob} {value} -> recall@{k} {r:.3f}")
    return value


def _interleaved(
    live: dict[str, System],
    queries: Array,
    qcats: Array,
    k: int,
    chosen: dict[str, int | None],
    filtered: bool,
    results: dict[str, dict[str, Any]],
    log: Callable[[str], None],
) -> dict[str, tuple[list[float], list[list[int]]]]:
    keys = [key for key, s in live.items() if s.supports_filter or not filtered]

    def call(key: str, i: int) -> list[int]:
        s = live[key]
        if filtered:
            return s.search_filtered(queries[i], k, chosen[key], int(qcats[i]))
        return s.search(queries[i], k, chosen[key])

    failed: set[str] = set()
    for i in range(min(WARMUP, len(queries))):
        for key in keys:
            if key in failed:
                continue
            try:
                call(key, i)
            except Exception as e:
                failed.add(key)
                what = "filtered search" if filtered else "search"
                results[key][f"{what} error"] = f"{type(e).__name__}: {e}"
                log(f"{what} failed: {key}: {e}")
    keys = [key for key in keys if key not in failed]
    times: dict[str, list[float]] = {key: [] for key in keys}
    found: dict[str, list[list[int]]] = {key: [] for key in keys}
    for i in range(len(queries)):
        r = i % max(1, len(keys))
        for key in keys[r:] + keys[:r]:
            t0 = time.perf_counter()
            ids = call(key, i)
            times[key].append(time.perf_counter() - t0)
            found[key].append(ids)
    return {key: (times[key], found[key]) for key in keys}


def _machine() -> dict[str, Any]:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(
                (line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu
            )
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "load_average_at_end": [round(x, 2) for x in load],
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def _mb(b: int | None) -> str:
    return "–" if b is None else f"{b / 2**20:.1f}"


def markdown(result: dict[str, Any]) -> str:
    """The result as a Markdown table (one row per system) with a header line."""
    k = result["k"]
    m = result["machine"]
    lines = [
        f"{result['n']} documents × {result['dim']}-d, {result['queries']} held-out queries, "
        f"k = {k}, one query per call, recall@{k} against exact search; "
        f"{result['date']}, {m['cpus']} CPUs ({m['cpu']}), load average at the end "
        f"{m['load_average_at_end'][0]}.",
        "",
        f"| system | setting at recall@{k} ≥ {result['target_recall']} | recall@{k} | p50 ms "
        f"| p99 ms | QPS | build / load s | index MB | filtered 1 %: rows | recall | p50 ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    notes = []
    for res in result["systems"].values():
        if res.get("status") != "ok":
            notes.append(
                f"* {res.get('name', res['key'])}: {res.get('status')}: {res.get('reason')}"
            )
            continue
        s = res.get("search", {})
        f = res.get("filtered")
        setting = "exact" if res.get("knob") is None else f"{res['knob']} {res.get('setting')}"
        if res.get("target_reached") is False:
            setting += " (target not reached)"
        fcols = (
            f"{f['rows_mean']:.1f} | {f['recall']:.3f} | {f['p50_ms']:.2f}" if f else "– | – | –"
        )
        lines.append(
            f"| {res['name']} | {setting} | {s.get('recall', float('nan')):.3f} "
            f"| {s.get('p50_ms', float('nan')):.2f} | {s.get('p99_ms', float('nan')):.2f} "
            f"| {s.get('qps', float('nan')):.0f} | {res['build_s']:.1f} "
            f"| {_mb(res['index_bytes'])} | {fcols} |"
        )
        for what in ("search error", "filtered search error"):
            if what in res:
                notes.append(f"* {res['name']}: {what}: {res[what]}")
    if notes:
        lines += ["", *notes]
    cost = result.get("postgres_cost_ms")
    if cost and "error" not in cost:
        lines += [
            "",
            "Where a bare pgvector query's time goes (p50, ms): "
            + ", ".join(f"{name} {ms:.3f}" for name, ms in cost.items())
            + ".",
        ]
    return "\n".join(lines) + "\n"
