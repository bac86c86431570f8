"""Side by side with what users would pick instead: pg_mmretrieval's ``mmr.search``, bare
pgvector on the same server, and the in-process / embedded peers (faiss, hnswlib, Chroma,
LanceDB, Qdrant local mode), on real English text embedded by the project's MiniLM.

    .venv/bin/pip install -e '.[bench]'          # the peers (optional; each skips if missing)
    .venv/bin/python bench/peers.py --quick      # 10k documents, a few minutes on 2 cores
    .venv/bin/python bench/peers.py              # 100k documents (embedding cached once)
    .venv/bin/python bench/peers.py --quick --systems mmr,pgvector,faiss

Corpus: sentences of the Python standard library's docstrings and of /usr/share/doc (see
bench/peerbench/corpus.py), embedded once with ``minilm`` and cached in ``.bench-cache/``; the
last 500 sentences are held-out queries.  Each system is built, its search knob set to the
smallest value reaching recall@10 >= 0.95, then every query goes to every system in turn
(order rotated per query), unfiltered and with a 1 % filter.  Writes
``<out>/peers-<n>.json`` and ``<out>/peers-<n>.md`` (default out: .bench-cache/) and prints
the table.  On a shared machine serialise benchmarks: ``flock /tmp/bench.lock ...``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
if not os.environ.get("MMR_DATABASE_URL"):
    os.environ.setdefault("MMR_DATA_DIR", str(REPO / ".mmr-test-data"))

from peerbench import core, corpus  # noqa: E402
from peerbench.base import Array, System  # noqa: E402
from peerbench.systems_lib import PEERS  # noqa: E402
from peerbench.systems_pg import BarePgvector, Database, MmrSearch, cost_breakdown  # noqa: E402

ALL = ["mmr", "pgvector", "numpy", *PEERS]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Example: .venv/bin/python bench/peers.py --quick --systems mmr,pgvector,hnswlib",
    )
    ap.add_argument("--quick", action="store_true", help="10k documents (default 100k)")
    ap.add_argument("--n", type=int, default=None, help="documents (overrides --quick)")
    ap.add_argument("--queries", type=int, default=500, help="held-out queries (default 500)")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--target", type=float, default=0.95, help="recall@k to match (0.95)")
    ap.add_argument(
        "--systems", default=",".join(ALL), help=f"comma list of {', '.join(ALL)} (default: all)"
    )
    ap.add_argument("--encoder", default="minilm", help="the project's encoder for the corpus")
    ap.add_argument("--out", type=Path, default=REPO / ".bench-cache", help="result directory")
    ap.add_argument("--cache", type=Path, default=REPO / ".bench-cache", help="embedding cache")
    ap.add_argument("--keep-db", action="store_true", help="keep the benchmark's database")
    args = ap.parse_args(argv)
    wanted = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = sorted(set(wanted) - set(ALL))
    if unknown:
        ap.error(f"unknown systems {', '.join(unknown)} (choose from {', '.join(ALL)})")
    n = args.n or (10_000 if args.quick else 100_000)
    data = corpus.load(n, args.queries, args.cache, args.encoder)
    with tempfile.TemporaryDirectory(prefix="peers-") as tmp:
        workdir = Path(tmp)
        database = Database() if {"mmr", "pgvector"} & set(wanted) else None
        try:
            result = core.run(
                data.docs,
                data.queries,
                factories(wanted, workdir, database),
                k=args.k,
                target=args.target,
                breakdown=_breakdown(database, data.queries, args.k),
            )
        finally:
            if database is not None and not args.keep_db:
                database.drop()
    result["corpus"] = {
        "encoder": data.encoder,
        "texts_sha256": data.texts_sha256,
        "sources": data.sources,
        "embed_seconds": data.embed_seconds,
    }
    table = core.markdown(result)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"peers-{n}.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / f"peers-{n}.md").write_text(table)
    print()
    print(table)
    print(f"wrote {args.out / f'peers-{n}.json'} and .md")


def _breakdown(
    database: Database | None, queries: Array, k: int
) -> Callable[[dict[str, dict[str, Any]]], dict[str, float]] | None:
    """Where the bare table's query time goes, when the bare table was built."""
    if database is None:
        return None

    def run(results: dict[str, dict[str, Any]]) -> dict[str, float]:
        bare = results.get("pgvector", {})
        if bare.get("status") != "ok":
            raise RuntimeError("no bare pgvector table (--systems without pgvector)")
        return cost_breakdown(database, queries, k, bare.get("setting"))

    return run


def factories(
    wanted: list[str], workdir: Path, database: Database | None
) -> dict[str, Callable[[], System]]:
    """One constructor per wanted system, in the order given."""
    out: dict[str, Callable[[], System]] = {}
    for key in wanted:
        if key == "mmr":
            assert database is not None
            out[key] = lambda db=database: MmrSearch(workdir, db)
        elif key == "pgvector":
            assert database is not None
            out[key] = lambda db=database: BarePgvector(workdir, db)
        elif key == "numpy":
            out[key] = lambda: core.NumpyExact(workdir)
        else:
            out[key] = lambda cls=PEERS[key]: cls(workdir)
    return out


if __name__ == "__main__":
    main()
