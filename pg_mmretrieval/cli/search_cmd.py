"""``mmr search``: nearest rows of a collection."""

from __future__ import annotations

import json
from typing import Any

import click
import numpy as np
import psycopg

from ..errors import InputError
from ..query import embed_query
from ..search import COMPOSED_METHODS, composed_search, hybrid_search, reranked_search
from ..search import search as run_search
from ._common import connect, echo_json
from ._display import print_hits


def parse_params(items: tuple[str, ...] | list[str]) -> dict[str, object]:
    """NAME=VALUE pairs; values are parsed as JSON when they can be (numbers, lists, ...)."""
    out: dict[str, object] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise InputError(f"--param must be NAME=VALUE, not {item!r}")
        try:
            out[name] = json.loads(value)
        except json.JSONDecodeError:
            out[name] = value
    return out


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
@click.option("-k", "--k", "k", default=10, show_default=True, help="Number of results (1-1000).")
@click.option("--filter", "filter_json", help='Conditions as JSON, e.g. \'{"price": {"<": 50}}\'.')
@click.option("--ef-search", type=int, help="HNSW candidate list size (1-1000; default 40, >= k).")
@click.option("--ref", "ref_key", help="Composed search: the reference row's key (JSON).")
@click.option("--modifier", help="Composed search: the modification text.")
@click.option("--method", type=click.Choice(COMPOSED_METHODS), help="Composed-search method.")
@click.option(
    "--param",
    "params",
    multiple=True,
    help="Method parameter NAME=VALUE (repeat), e.g. --param steps=20 (GQR: 0-200).",
)
@click.option("--hybrid", is_flag=True, help="Lexical + vector (RRF) search with --text.")
@click.option("--rerank", help="Reranker name (SQL registry or a plugin's).")
@click.option(
    "--rerank-depth", type=int, help="Candidates the reranker sees (k-1000; default 100)."
)
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
    ref_key: str | None,
    modifier: str | None,
    method: str | None,
    params: tuple[str, ...],
    hybrid: bool,
    rerank: str | None,
    rerank_depth: int | None,
    as_json: bool,
) -> None:
    """Search SPACE of COLLECTION for the K nearest rows.

    \b
    Example:
      mmr search products clip_image --text "a red circle" -k 5
      mmr search products ext --vector "[0.1, 0.2, 0.3]" --filter '{"price": {"<": 50}}' --json
      mmr search products clip_image --ref 42 --modifier "in blue" --method weimocir \\
          --param caption_space=clip_caption --param beta=0.1
      mmr search products clip_image --text "red circle" --hybrid --rerank exact
    """
    if ref_key is not None or modifier is not None:
        _composed(
            collection,
            space,
            ref_key,
            modifier,
            vector_json,
            image_path,
            method or "weighted",
            params,
            k,
            filter_json,
            ef_search,
            rerank,
            rerank_depth,
            as_json,
        )
        return
    if method is not None:
        raise click.UsageError("--method needs --ref and --modifier")
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
            query = embed_query(conn, collection, space, text=text, image_path=image_path)
        if hybrid:
            if text is None:
                raise click.UsageError("--hybrid needs --text")
            hits = hybrid_search(
                conn,
                collection,
                text,
                [(space, query)],
                k=k,
                filter=filt,
                ef_search=ef_search,
                params=parse_params(params),
                rerank=rerank,
                rerank_depth=rerank_depth,
            )
        elif rerank is not None:
            hits = reranked_search(
                conn,
                collection,
                space,
                query,
                k,
                filter=filt,
                ef_search=ef_search,
                rerank=rerank,
                rerank_depth=rerank_depth,
                query_item=text if text is not None else _read(image_path),
            )
        else:
            hits = run_search(conn, collection, space, query, k, filter=filt, ef_search=ef_search)
        _print(hits, as_json, conn, collection)


def _read(path: str | None) -> bytes | None:
    if path is None:
        return None
    with open(path, "rb") as f:
        return f.read()


def _print(hits: list[Any], as_json: bool, conn: psycopg.Connection[Any], collection: str) -> None:
    """JSON (rank, key, score), or a table with the rows' text columns and image column."""
    if as_json:
        echo_json([{"rank": i + 1, "key": h.key, "score": h.score} for i, h in enumerate(hits)])
    else:
        print_hits(conn, collection, [(i + 1, h.key, h.score) for i, h in enumerate(hits)])


def _composed(
    collection: str,
    space: str,
    ref_key: str | None,
    modifier: str | None,
    vector_json: str | None,
    image_path: str | None,
    method: str,
    params: tuple[str, ...],
    k: int,
    filter_json: str | None,
    ef_search: int | None,
    rerank: str | None,
    rerank_depth: int | None,
    as_json: bool,
) -> None:
    """Composed search: reference (--ref KEY, or --image / --vector) + --modifier text."""
    if modifier is None:
        raise click.UsageError("composed search needs --modifier")
    refs = [x for x in (ref_key, vector_json, image_path) if x is not None]
    if len(refs) != 1:
        raise click.UsageError("give exactly one reference: --ref KEY, --image or --vector")
    filt = _parse_json(filter_json, "--filter") if filter_json else None
    if filt is not None and not isinstance(filt, dict):
        raise InputError("--filter must be a JSON object of column conditions")
    with connect() as conn:
        mod = np.asarray(embed_query(conn, collection, space, text=modifier))
        ref_vec = None
        key = None
        if ref_key is not None:
            try:
                key = json.loads(ref_key)
            except json.JSONDecodeError:
                key = ref_key
        elif vector_json is not None:
            ref_vec = np.asarray(_parse_json(vector_json, "--vector"), dtype=np.float32)
        else:
            ref_vec = np.asarray(embed_query(conn, collection, space, image_path=image_path))
        hits = composed_search(
            conn,
            collection,
            space,
            ref_vec,
            mod,
            reference_key=key,
            method=method,
            k=k,
            params=parse_params(params),
            filter=filt,
            ef_search=ef_search,
            rerank=rerank,
            rerank_depth=rerank_depth,
        )
        _print(hits, as_json, conn, collection)
