"""Metrics (FUSION.md §6 T11) checked by hand and against trec_eval (pytrec_eval), plus the
``mmr eval`` and ``mmr search`` (composed, hybrid, rerank) commands end to end."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
import pytrec_eval
from click.testing import CliRunner

import pg_mmretrieval as mmr
from pg_mmretrieval import evaluation as ev
from pg_mmretrieval.cli import cli
from pg_mmretrieval.encoders import get_encoder
from pg_mmretrieval.plugins import load_encoders


def test_t11_hand_built() -> None:
    # CIRCO AP@5 with |G| = 3, hits at ranks 1 and 3: (1/3)(1 + 2/3).
    assert (
        abs(
            ev.average_precision_at_k(["a", "x", "b", "y", "z"], ["a", "b", "c"], 5)
            - (1 + 2 / 3) / 3
        )
        < 1e-12
    )
    # INQUIRE normalisation: min(|G|, k) in the denominator.
    assert abs(ev.average_precision_at_k(["a", "b"], ["a", "b", "c", "d"], 2) - 1.0) < 1e-12
    # CIRR: the reference is removed before cutting at K.
    ranking = ["ref", "x", "t"]
    assert ev.recall_at_k(ranking, ["t"], 2) == 0.0
    assert ev.recall_at_k(ranking, ["t"], 2, exclude=["ref"]) == 1.0
    # Recall_subset: the global ranking restricted to the group (minus the reference).
    ranking = ["x", "ref", "g2", "y", "t", "g3"]
    assert ev.recall_subset_at_k(ranking, "t", ["ref", "t", "g2", "g3"], 1, ["ref"]) == 0.0
    assert ev.recall_subset_at_k(ranking, "t", ["ref", "t", "g2", "g3"], 2, ["ref"]) == 1.0
    # FashionIQ R@10/50 and COCO I2T "any of 5 captions" are hit rates.
    assert ev.recall_at_k(list(range(60)), [55], 50) == 0.0
    assert ev.recall_at_k(list(range(60)), [3, 70, 71, 72, 73], 10) == 1.0
    # ChatIR cumulative Hits@10.
    rounds = [list(range(100, 120)), [5, *range(20)], list(range(200, 220))]
    assert ev.cumulative_hits_at_k(rounds, 5) == [0.0, 1.0, 1.0]
    assert (
        abs(
            ev.ndcg_at_k(["b", "a"], {"a": 2, "b": 1}, 2)
            - (1 + 2 / np.log2(3)) / (2 + 1 / np.log2(3))
        )
        < 1e-12
    )


def test_metrics_equal_trec_eval() -> None:
    rng = np.random.default_rng(0)
    runs: dict[str, list[int]] = {}
    qrels: dict[str, dict[str, int]] = {}
    queries = []
    for q in range(40):
        ranking = [int(x) for x in rng.permutation(200)[:50]]
        rel = {
            int(x): int(rng.integers(1, 4))
            for x in rng.choice(200, int(rng.integers(1, 6)), replace=False)
        }
        if q % 3 == 0:
            rel[ranking[int(rng.integers(0, 10))]] = 2
        runs[f"q{q}"] = ranking
        qrels[f"q{q}"] = {str(k): v for k, v in rel.items()}
        queries.append(
            ev.EvalQuery(
                id=f"q{q}",
                spec={},
                relevant={json.dumps(k): float(v) for k, v in rel.items()},
                relevant_keys=list(rel),
            )
        )
    ours = ev.evaluate(runs, queries, (1, 5, 10))
    trec_run = {q: {str(d): float(100 - i) for i, d in enumerate(r)} for q, r in runs.items()}
    te = pytrec_eval.RelevanceEvaluator(qrels, {"success.1,5,10", "map_cut.10", "ndcg_cut.5,10"})
    res = te.evaluate(trec_run)
    for k in (1, 5, 10):
        assert abs(ours[f"R@{k}"] - np.mean([r[f"success_{k}"] for r in res.values()])) < 1e-12
    for k in (5, 10):
        assert abs(ours[f"nDCG@{k}"] - np.mean([r[f"ndcg_cut_{k}"] for r in res.values()])) < 1e-9
    # trec_eval's map_cut divides by |G|, CIRCO by min(|G|, K): equal here since |G| ≤ 10.
    assert abs(ours["mAP@10"] - np.mean([r["map_cut_10"] for r in res.values()])) < 1e-9


@pytest.fixture()
def shop(
    conn: psycopg.Connection[Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, db_url: str
) -> str:
    """A collection whose 'txt' space holds mmr-test embeddings of its captions."""
    load_encoders()
    enc = get_encoder("mmr-test")
    conn.execute("CREATE TABLE shop (id int PRIMARY KEY, caption text)")
    caps = [
        f"{c} {s}"
        for c in ("red", "blue", "green", "gold")
        for s in ("circle", "square", "star", "ring", "cube")
    ]
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO shop VALUES (%s, %s)", list(enumerate(caps)))
    mmr.create_collection(conn, "shop", "shop", text_columns=["caption"])
    emb = mmr.add_space(conn, "shop", "txt", "mmr-test", "caption", 32, backfill=False)
    vecs = list(enc.embed_batch(caps))
    with conn.cursor() as cur:
        cur.executemany(
            f"INSERT INTO {emb} (id, embedding, model_id) VALUES (%s, %s, 'mmr-test')",
            [(i, np.asarray(v, dtype=np.float32)) for i, v in enumerate(vecs)],
        )
    monkeypatch.setenv("MMR_DATABASE_URL", db_url)
    lines = [
        {"id": "a", "text": "blue star", "relevant": [7]},
        {"id": "b", "reference": 0, "modifier": "green ring", "target": 13, "subset": [13, 1, 2]},
    ]
    path = tmp_path / "q.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines))
    return str(path)


def test_cli_eval_and_search(shop: str) -> None:
    runner = CliRunner()
    res = runner.invoke(
        cli,
        ["eval", "shop", "txt", shop, "--method", "text_only", "--k", "1", "--k", "5", "--json"],
    )
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["queries"] == 2 and out["metrics"]["R@1"] == 1.0
    assert out["metrics"]["Rsubset@1"] == 1.0
    res = runner.invoke(
        cli,
        [
            "search",
            "shop",
            "txt",
            "--ref",
            "0",
            "--modifier",
            "green ring",
            "--method",
            "weighted",
            "--param",
            "alpha=0.9",
            "-k",
            "3",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)[0]["key"] == 13
    res = runner.invoke(
        cli,
        [
            "search",
            "shop",
            "txt",
            "--text",
            "gold cube",
            "--hybrid",
            "--rerank",
            "exact",
            "-k",
            "2",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)[0]["key"] == 19
    res = runner.invoke(cli, ["search", "shop", "txt", "--ref", "0", "-k", "3"])
    assert res.exit_code != 0 and "--modifier" in res.output
