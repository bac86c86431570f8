"""``mmr eval``: retrieval metrics of a labelled JSONL query file against a collection."""

from __future__ import annotations

import json

import click

from ..evaluation import evaluate, load_queries, run_queries, summarize
from ._common import connect, echo_json, print_table
from .search_cmd import parse_params


def register(cli: click.Group) -> None:
    cli.add_command(eval_)


@click.command("eval")
@click.argument("collection")
@click.argument("space")
@click.argument("queries", type=click.Path(exists=True, dir_okay=False))
@click.option("--method", help="Composed-search method for queries with a modifier.")
@click.option("--param", "params", multiple=True, help="Method parameter NAME=VALUE (repeat).")
@click.option("--hybrid", is_flag=True, help="Hybrid (lexical + vector, RRF) for text queries.")
@click.option("--k", "ks", multiple=True, type=int, help="Cut-offs (default 1 5 10 50).")
@click.option("--run-out", type=click.Path(dir_okay=False), help="Write the rankings (JSON).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def eval_(
    collection: str,
    space: str,
    queries: str,
    method: str | None,
    params: tuple[str, ...],
    hybrid: bool,
    ks: tuple[int, ...],
    run_out: str | None,
    as_json: bool,
) -> None:
    """Evaluate search over SPACE of COLLECTION on the labelled QUERIES (JSONL).

    Reports Recall@K (CIRR style: the reference is removed), Recall_subset@K (queries with a
    "subset"), mAP@K (CIRCO/INQUIRE form) and nDCG@K.

    \b
    Example:
      mmr eval shapes clip_image cir.jsonl --method weighted --param alpha=0.6 --json
    """
    qs = load_queries(queries)
    cut = tuple(ks) or (1, 5, 10, 50)
    with connect() as conn:
        runs = run_queries(
            conn,
            collection,
            space,
            qs,
            k=max(cut),
            method=method,
            params=parse_params(params),
            hybrid=hybrid,
        )
    metrics = evaluate(runs, qs, cut)
    if run_out:
        with open(run_out, "w") as f:
            json.dump(runs, f)
    if as_json:
        echo_json({"queries": len(qs), "metrics": metrics})
    else:
        print_table(summarize(metrics), ["metric", "value"], title=f"{len(qs)} queries")
