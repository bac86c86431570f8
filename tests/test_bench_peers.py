"""bench/peers.py's core on a tiny corpus (the real encoder, the real server), and bench/gpu.py
on CPU: outputs have their fields, recall lies in [0, 1], missing peers skip with a reason."""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))

from peerbench import core, corpus  # noqa: E402
from peerbench.base import Skip, System  # noqa: E402
from peerbench.systems_lib import PEERS  # noqa: E402
from peerbench.systems_pg import BarePgvector, Database, MmrSearch, cost_breakdown  # noqa: E402

from .models import minilm_dir  # noqa: E402

DOCS, QUERIES = 300, 20


@pytest.fixture(scope="module")
def tiny() -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """320 sentences of a few standard-library packages' docstrings, embedded by MiniLM."""
    minilm_dir()
    col = corpus._Collector()
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for package in ("email", "json", "asyncio", "collections", "logging"):
        for doc in corpus._docstrings(stdlib / package):
            col.add(doc)
    assert len(col.out) >= DOCS + QUERIES, len(col.out)
    texts = col.out[: DOCS + QUERIES]
    vecs = corpus.embed(texts)
    assert vecs.shape == (DOCS + QUERIES, 384)
    return vecs[:DOCS], vecs[DOCS:]


class _Missing(System):
    name = "a peer that is not installed"

    @classmethod
    def check(cls) -> None:
        raise Skip("not installed here")


def test_core_on_a_tiny_corpus(
    tiny: tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]],
    server_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    docs, queries = tiny
    monkeypatch.setitem(sys.modules, "hnswlib", None)  # import hnswlib -> ImportError
    database = Database(server_url)
    try:
        systems = {
            "mmr": lambda: MmrSearch(tmp_path, database),
            "pgvector": lambda: BarePgvector(tmp_path, database),
            "numpy": lambda: core.NumpyExact(tmp_path),
            "hnswlib": lambda: PEERS["hnswlib"](tmp_path),
            "missing": lambda: _Missing(tmp_path),
        }
        result = core.run(
            docs,
            queries,
            systems,
            k=10,
            log=lambda _: None,
            breakdown=lambda res: cost_breakdown(database, queries, 10, res["pgvector"]["setting"]),
        )
    finally:
        database.drop()
    json.dumps(result)  # JSON-ready
    assert result["n"] == DOCS and result["queries"] == QUERIES and result["k"] == 10
    assert result["dim"] == 384 and result["filter_selectivity"] == 0.01
    res = result["systems"]
    assert res["hnswlib"]["status"] == "skipped"
    assert "hnswlib is not installed" in res["hnswlib"]["reason"]
    assert res["missing"] == {
        "key": "missing",
        "name": "a peer that is not installed",
        "kind": "",
        "knob": "ef",
        "status": "skipped",
        "reason": "not installed here",
    }
    for key in ("mmr", "pgvector", "numpy"):
        r = res[key]
        assert r["status"] == "ok", r
        assert r["build_s"] > 0 and r["index_bytes"] > 0
        for what in ("search", "filtered"):
            m = r[what]
            assert 0.0 <= m["recall"] <= 1.0
            assert 0 < m["p50_ms"] <= m["p99_ms"]
            assert m["qps"] > 0
        assert r["search"]["rows_mean"] == 10
    for key in ("mmr", "pgvector"):
        assert res[key]["knob"] == "ef_search"
        assert res[key]["setting"] >= 10
        assert res[key]["search"]["recall"] >= 0.9  # matched recall on 300 rows
        # 1 % of 300 rows is ~3 rows per category: all of them come back
        assert res[key]["filtered"]["recall"] == 1.0
    assert res["numpy"]["search"]["recall"] == 1.0 and res["numpy"]["setting"] is None
    cost = result["postgres_cost_ms"]
    assert set(cost) == {"round trip", "bare prepared", "planning", "execution"}, cost
    assert all(v > 0 for v in cost.values())
    table = core.markdown(result)
    assert "| system | setting at recall@10 ≥ 0.95 |" in table
    for name in ("mmr.search (SQL)", "pgvector, bare prepared SQL", "numpy exact (brute force)"):
        assert f"| {name} |" in table
    assert "hnswlib: skipped: hnswlib is not installed" in table
    assert "Where a bare pgvector query's time goes" in table


def test_cli_refuses_unknown_systems() -> None:
    out = subprocess.run(
        [sys.executable, str(REPO / "bench" / "peers.py"), "--systems", "mmr,oracle"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2
    assert "unknown systems oracle" in out.stderr


def test_gpu_script_runs_on_cpu(tmp_path: Path) -> None:
    """bench/gpu.py without a GPU: CUDA cells skipped with the reason, CPU cells measured."""
    out = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "gpu.py"),
            "--out",
            str(tmp_path),
            "--seconds",
            "0.1",
            "--skip-worker",
            "--image-batch",
            "4",
            "--text-batch",
            "4",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**__import__("os").environ, "MMR_ONNX_PROVIDERS": ""},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads((tmp_path / "gpu.json").read_text())
    cells = result["towers"]
    assert {(c["tower"], c["precision"], c["provider"]) for c in cells} == {
        (t, p, d) for t in ("text", "image") for p in ("fp32", "fp16") for d in ("cuda", "cpu")
    }
    cpu32 = [c for c in cells if c["provider"] == "cpu" and c["precision"] == "fp32"]
    assert all(c["items_per_s"] > 0 for c in cpu32)
    if result["machine"]["cuda"] != "available":
        assert all(
            c["skipped"] == result["machine"]["cuda"] for c in cells if c["provider"] == "cuda"
        )
    assert "| model | tower | precision |" in out.stdout
