"""``mmr search``: nearest rows of a collection."""

from __future__ import annotations

import json

import click

from ..errors import InputError
from ..search import search as run_search
from ._common import connect, echo_json, print_table


def register(cli: click.Group) -> None:
    cli.add_command(search)


def _parse_json(value: str, what: str) -> object:
    try:
        return json.loads(value)
    except json.JSONDecodeError as e:
        raise InputError(f"{what} is not valid JSON ({e.msg} at {e.pos}): {value!r}") from e


@click.command("search")
@click.argument("collection")
@click.argument("space")
@click.option("--vector", "vector_json", help="Query vector as a JSON array.")
@click.option("--text", help="Query text, embedded with the space's encoder.")
@click.option(
    "--image",
    "image_path",
    type=click.Path(exists=True, dir_okay=False),
    help="Query image file, embedded with the space's encoder.",
)
@click.option("-k", "--k", "k", default=10, show_default=True, help="Number of results.")
@click.option("--filter", "filter_json", help='Conditions as JSON, e.g. \'{"price": {"<": 50}}\'.')
@click.option("--ef-search", type=int, help="HNSW candidate list size (default 40, >= k).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def search(
    collection: str,
    space: str,
    vector_json: str | None,
    text: str | None,
    image_path: str | None,
    k: int,
    filter_json: str | None,
    ef_search: int | None,
    as_json: bool,
) -> None:
    """Search SPACE of COLLECTION for the K nearest rows.

    \b
    Example:
      mmr search products clip_image --text "a red circle" -k 5
      mmr search products ext --vector "[0.1, 0.2, 0.3]" --filter '{"price": {"<": 50}}' --json
    """
    given = [x for x in (vector_json, text, image_path) if x is not None]
    if len(given) != 1:
        raise click.UsageError("give exactly one of --vector, --text or --image")
    filt = _parse_json(filter_json, "--filter") if filter_json else None
    if filt is not None and not isinstance(filt, dict):
        raise InputError("--filter must be a JSON object of column conditions")
    with connect() as conn:
        if vector_json is not None:
            vec = _parse_json(vector_json, "--vector")
            if not isinstance(vec, list) or not all(isinstance(x, int | float) for x in vec):
                raise InputError("--vector must be a JSON array of numbers")
            query = [float(x) for x in vec]
        else:
            from ..query import embed_query

            query = embed_query(conn, collection, space, text=text, image_path=image_path)
        hits = run_search(conn, collection, space, query, k, filter=filt, ef_search=ef_search)
    rows = [{"rank": i + 1, "key": h.key, "score": h.score} for i, h in enumerate(hits)]
    if as_json:
        echo_json(rows)
    else:
        print_table(
            [{**r, "key": json.dumps(r["key"]), "score": f"{r['score']:.4f}"} for r in rows],
            ["rank", "key", "score"],
        )
