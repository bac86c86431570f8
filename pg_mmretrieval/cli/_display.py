"""What the CLI shows of rows and status in a terminal of 80-100 columns."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb
from rich import box
from rich.console import Console
from rich.table import Table

__all__ = ["STATUS_WIDTH", "hit_rows", "print_hits", "print_status"]

#: the width `mmr status` and `mmr search` are laid out for when stdout is not a terminal
STATUS_WIDTH = 100
_CELL = 60  # characters of a text cell shown


def _console() -> Console:
    """The terminal's width, else $COLUMNS, else 100 (pipes and files)."""
    console = Console()
    if console.is_terminal:
        return console
    columns = os.environ.get("COLUMNS", "")
    return Console(width=int(columns) if columns.isdigit() else STATUS_WIDTH)


def _short(value: Any) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= _CELL else text[: _CELL - 1] + "…"


def hit_rows(
    conn: psycopg.Connection[Any], collection: str, keys: Sequence[Any]
) -> dict[str, dict[str, str]] | None:
    """The text columns (and the image column's path/URL, or its size) of the rows with these
    keys, by the key's JSON text; None when the rows cannot be read (e.g. no privilege)."""
    if not keys:
        return {}
    meta = conn.execute(
        "SELECT source::text, key_columns::text[], image_column, image_kind, "
        "text_columns::text[] FROM mmr.collections WHERE collection = %s",
        (collection,),
    ).fetchone()
    if meta is None:
        return None
    source, key_cols, image_col, image_kind, text_cols = meta
    shown = [sql.SQL("s.{}::text").format(sql.Identifier(c)) for c in text_cols]
    names = list(text_cols)
    if image_col:
        if image_kind == "bytea":
            shown.append(
                sql.SQL("pg_catalog.octet_length(s.{})::text || ' bytes'").format(
                    sql.Identifier(image_col)
                )
            )
        else:
            shown.append(sql.SQL("s.{}::text").format(sql.Identifier(image_col)))
        names.append(image_col)
    if not shown:
        return {}
    key_expr = (
        sql.SQL("pg_catalog.to_jsonb(s.{})").format(sql.Identifier(key_cols[0]))
        if len(key_cols) == 1
        else sql.SQL("pg_catalog.jsonb_build_object({})").format(
            sql.SQL(", ").join(
                sql.SQL("{}, s.{}").format(sql.Literal(k), sql.Identifier(k)) for k in key_cols
            )
        )
    )
    # Keys as records of the table's row type: the join uses its primary-key index.
    objs = [key if len(key_cols) != 1 else {key_cols[0]: key} for key in keys]
    join = sql.SQL(" AND ").join(
        sql.SQL("s.{0} = k.{0}").format(sql.Identifier(k)) for k in key_cols
    )
    query = sql.SQL(
        "SELECT {key}, {cols} FROM {src} s "
        "JOIN pg_catalog.jsonb_populate_recordset(NULL::{src}, %s) k ON {join}"
    ).format(key=key_expr, cols=sql.SQL(", ").join(shown), src=sql.SQL(source), join=join)
    try:
        with conn.transaction():
            rows = conn.execute(query, (Jsonb(objs),)).fetchall()
    except psycopg.Error:
        return None
    out: dict[str, dict[str, str]] = {}
    for r in rows:
        out[json.dumps(r[0])] = {
            n: "" if v is None else _short(v) for n, v in zip(names, r[1:], strict=True)
        }
    return out


def print_hits(
    conn: psycopg.Connection[Any], collection: str, hits: Sequence[tuple[int, Any, float]]
) -> None:
    """rank, score, key and the row's text/image columns, one table row per hit."""
    found = hit_rows(conn, collection, [h[1] for h in hits]) or {}
    extra: list[str] = []
    for cells in found.values():
        extra.extend(c for c in cells if c not in extra)
    table = Table()
    for col in ["rank", "score", "key", *extra]:
        table.add_column(col, overflow="fold")
    for rank, key, score in hits:
        cells = found.get(json.dumps(key), {})
        table.add_row(
            str(rank), f"{score:.4f}", json.dumps(key), *(cells.get(c, "") for c in extra)
        )
    _console().print(table)


def print_status(rows: Sequence[dict[str, Any]]) -> None:
    """``mmr status`` stacked: one table per collection; a space's name, version and encoder
    share its first cell (two lines), the counters are narrow columns; providers below."""
    console = _console()
    by_coll: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_coll.setdefault(str(r["collection"]), []).append(r)
    if not rows:
        console.print("no collections (create one with `mmr collection create`)")
    for coll, spaces in by_coll.items():
        table = Table(
            title=f"collection {coll}",
            title_justify="left",
            box=box.SIMPLE_HEAD,
            pad_edge=False,
            padding=(0, 1, 0, 0),
        )
        table.add_column("space / encoder", overflow="fold", min_width=16)
        for col in ("rows", "embedded", "queued", "failed", "/min", "lag s", "workers"):
            table.add_column(col, justify="right", no_wrap=True)
        providers: set[str] = set()
        for r in spaces:
            lag = r.get("lag_seconds")
            shadow = "" if r["active"] else " (shadow)"
            table.add_row(
                f"{r['space']} v{r['version']}{shadow}\n[dim]{r['encoder']}[/dim]",
                *(
                    "" if r.get(c) is None else str(r[c])
                    for c in ("rows", "embedded", "queued", "failed", "throughput_1m")
                ),
                "" if lag is None else f"{lag:.1f}",
                str(r.get("workers_alive") or 0),
            )
            if r.get("providers"):
                providers.add(f"{r['encoder']}: {r['providers']}")
        console.print(table)
        for p in sorted(providers):
            console.print(f"  provider {p}", markup=False)
