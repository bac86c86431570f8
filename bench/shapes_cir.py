"""Shapes-CIR benchmark: composed retrieval (reference image + modification text) over the
procedural shapes world, with the ``shapes-clip`` model, for every composed-search method.

    .venv/bin/python bench/shapes_cir.py [--model-dir onnx_models/shapes-clip] [--n 3000]
                                         [--queries 300] [--json]

Corpus: ``generate(n, seed)`` images; an image space (the model's image tower) and a caption
space (its text tower on each image's canonical caption).  Queries: a corpus image as the
reference (stored row, excluded from the ranking: CIRR protocol), one attribute changed by a
paraphrased instruction (``pg_mmretrieval.demo.shapes.cir``); relevant = every corpus image with the
target's attributes.  Reports R@1/5/10/50 and mAP@10 per method.  Needs the shapes module and
the trained model; exits with a message when either is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
if not os.environ.get("MMR_DATABASE_URL"):
    os.environ.setdefault("MMR_DATA_DIR", str(REPO / ".mmr-test-data"))

from pg_mmretrieval import db, install, put_embeddings  # noqa: E402
from pg_mmretrieval import evaluation as ev  # noqa: E402
from pg_mmretrieval import retrieval as rt  # noqa: E402

METHODS: list[tuple[str, str, dict[str, Any]]] = [
    ("image_only", "image_only", {}),
    ("text_only", "text_only", {}),
    ("weighted a=0.5", "weighted", {"alpha": 0.5}),
    ("weighted a=0.7", "weighted", {"alpha": 0.7}),
    ("slerp a=0.6", "slerp", {"alpha": 0.6}),
    ("score_sum", "score_sum", {}),
    ("product", "product", {}),
    ("weimocir a=.8 b=.1", "weimocir", {"alpha": 0.8, "beta": 0.1, "caption_space": "cap"}),
    ("weimocir a=.6 b=.3", "weimocir", {"alpha": 0.6, "beta": 0.3, "caption_space": "cap"}),
    ("pdv (caption, P)", "pdv", {"caption_space": "cap"}),
    ("basic", "basic", {}),
    ("gqr", "gqr", {"caption_space": "cap"}),
]


def n(x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    return np.asarray(x / np.linalg.norm(x, axis=-1, keepdims=True))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model-dir", type=Path, default=REPO / "onnx_models" / "shapes-clip")
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    try:
        from pg_mmretrieval.demo.shapes import cir, generator
        from pg_mmretrieval.demo.shapes.evaluate import OnnxShapesModel
    except ImportError as e:
        print(f"shapes module unavailable ({e}); merge the shapes work first", file=sys.stderr)
        return 2
    if not (args.model_dir / "manifest.json").is_file():
        print(f"no model in {args.model_dir}: train/export shapes-clip first", file=sys.stderr)
        return 2
    model = OnnxShapesModel(args.model_dir)
    corpus = generator.generate(args.n, args.seed)
    attrs = [s.attributes for s in corpus]
    img = n(model.embed_images([s.image for s in corpus]))
    captions = [generator.canonical_caption(a) for a in attrs]
    cap = n(model.embed_texts(captions))
    rng = np.random.default_rng([args.seed, 1])
    queries, mods, composed = [], [], []
    by_attr: dict[Any, list[int]] = {}
    for i, a in enumerate(attrs):
        by_attr.setdefault(a.key, []).append(i)
    i = 0
    while len(queries) < args.queries and i < 50 * args.queries:
        ref = int(rng.integers(args.n))
        kind = cir.KINDS[i % len(cir.KINDS)]
        i += 1
        tgt = cir.change(attrs[ref], kind, rng)
        rel = by_attr.get(tgt.key, [])
        if not rel:
            continue
        text = cir.modification_text(attrs[ref], tgt, rng)
        queries.append(
            ev.EvalQuery(
                id=str(len(queries)),
                spec={"reference": ref},
                relevant={json.dumps(r): 1.0 for r in rel},
                relevant_keys=list(rel),
                exclude=[ref],
            )
        )
        mods.append(text)
        composed.append(f"{captions[ref]}, {text}")
    t_mod = n(model.embed_texts(mods))
    t_comp = n(model.embed_texts(composed))

    server = db.resolve_url()
    name = f"shapes_cir_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server, autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    from tests.conftest import _with_database

    url = _with_database(server, name)
    results: dict[str, dict[str, float]] = {}
    try:
        install.upgrade(url)
        conn = db.connect(url, autocommit=True)
        conn.execute("CREATE TABLE shapes (id int PRIMARY KEY, caption text)")
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO shapes VALUES (%s, %s)", list(enumerate(captions)))
        conn.execute(
            "SELECT mmr.create_collection('shapes', 'shapes', text_columns => '{caption}')"
        )
        ids = list(range(args.n))
        for sp, vecs in (("img", img), ("cap", cap)):
            conn.execute(
                "SELECT mmr.add_space('shapes', %s, 'external', NULL, %s)", (sp, vecs.shape[1])
            )
            put_embeddings(conn, "shapes", sp, ids, vecs)
        # BASIC: positives = object words (shapes, counts), negatives = style words (colours,
        # sizes, positions): the projection keeps "what" and drops "how".
        pos = [f"a {s}" for s in generator.SHAPES] + [
            f"{c} shapes" for c in ("one", "two", "three")
        ]
        neg = (
            [f"{c}" for c in generator.COLOURS] + list(generator.SIZES) + list(generator.POSITIONS)
        )
        basis, mu_t = rt.basic_projection(model.embed_texts(pos), model.embed_texts(neg))
        rt.store_basic_projection(conn, "shapes", "img", basis, mu_t)
        for label, method, params in METHODS:
            runs = {}
            for qi, q in enumerate(queries):
                mod = t_comp[qi] if method == "pdv" else t_mod[qi]
                hits = rt.composed_search(
                    conn,
                    "shapes",
                    "img",
                    None,
                    mod,
                    reference_key=q.spec["reference"],
                    method=method,
                    k=50,
                    params=params,
                    ef_search=100,
                )
                runs[q.id] = [h.key for h in hits]
            m = ev.evaluate(runs, queries, (1, 5, 10, 50))
            results[label] = {x: m[x] for x in ("R@1", "R@5", "R@10", "R@50", "mAP@10")}
            if not args.json:
                print(
                    f"{label:22s} "
                    + " ".join(f"{x} {100 * v:5.1f}" for x, v in results[label].items()),
                    flush=True,
                )
        conn.close()
    finally:
        with psycopg.connect(server, autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    if args.json:
        print(json.dumps({"queries": len(queries), "corpus": args.n, "results": results}))
    best = max((v["R@10"], k) for k, v in results.items() if k not in ("image_only", "text_only"))
    margin = best[0] - max(results["image_only"]["R@10"], results["text_only"]["R@10"])
    print(
        f"# best composed: {best[1]} R@10 {100 * best[0]:.1f}; margin over the best "
        f"uni-modal: {100 * margin:+.1f} points",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
