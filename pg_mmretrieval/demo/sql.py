"""The SQL the demo page shows for each of its sections: what a psql user would run.

The demo computes its query vectors in Python (the same encoder as the worker); the statements
shown embed their queries in the database with ``mmr.embed`` instead, with the demo's real
values (collection, space, k, method, texts), so that each one can be copied into psql.  A
query image that is not in the table is read by psql itself: ``\\set img `base64 < file```
puts the file into a variable, ``decode(:'img', 'base64')`` turns it into bytea.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "composed_sql",
    "hybrid_sql",
    "image_search_sql",
    "literal",
    "text_search_sql",
]


def literal(value: str) -> str:
    """``value`` as a SQL string literal (standard_conforming_strings, no backslash escapes)."""
    return "'" + value.replace("'", "''") + "'"


def _embed(collection: str, space: str, item: str) -> str:
    return f"mmr.embed({literal(collection)}, {literal(space)}, {item})"


def _json(value: Mapping[str, Any]) -> str:
    return literal(json.dumps(value, ensure_ascii=False))


def text_search_sql(
    collection: str, space: str, text: str, k: int, filter: Mapping[str, Any] | None = None
) -> str:
    """Text → the space (a text→image query when the space is a CLIP image space)."""
    args = f"k => {k}" + (f", filter => {_json(filter)}" if filter is not None else "")
    return (
        "SELECT key, score\n"  # noqa: S608 (shown, not run here; values quoted by literal())
        f"  FROM mmr.search({literal(collection)}, {literal(space)},\n"
        f"                  {_embed(collection, space, literal(text))},\n"
        f"                  {args});"
    )


def image_search_sql(collection: str, space: str, image_file: Path, k: int) -> str:
    """An image file → the space: psql reads the file into ``:img``, base64 as text."""
    item = "decode(:'img', 'base64')"
    return (
        f"\\set img `base64 < {shlex.quote(str(image_file))}`\n"
        "SELECT key, score\n"
        f"  FROM mmr.search({literal(collection)}, {literal(space)},\n"
        f"                  {_embed(collection, space, item)},\n"
        f"                  k => {k});"
    )


def composed_sql(
    collection: str,
    space: str,
    reference_key: Any,
    modifier: str,
    method: str,
    k: int,
    params: Mapping[str, Any],
) -> str:
    """A stored row's image, changed by a text (composed query by key)."""
    key = literal(json.dumps(reference_key)) + "::jsonb"
    return (
        "SELECT key, score\n"  # noqa: S608 (shown, not run here; values quoted by literal())
        f"  FROM mmr.composed_search({literal(collection)}, {literal(space)}, {key},\n"
        f"                           {_embed(collection, space, literal(modifier))},\n"
        f"                           {literal(method)}, k => {k}, params => {_json(params)});"
    )


def hybrid_sql(collection: str, text: str, spaces: list[str], k: int) -> str:
    """Full text plus every listed space, each embedding the query text itself."""
    listed = ", ".join(literal(s) for s in spaces)
    return (
        "SELECT key, score\n"  # noqa: S608 (shown, not run here; values quoted by literal())
        f"  FROM mmr.hybrid_search({literal(collection)}, {literal(text)},\n"
        f"                         spaces => ARRAY[{listed}], k => {k});"
    )
