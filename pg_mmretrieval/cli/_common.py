"""Shared pieces of the CLI: connections and output."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import click
import psycopg
from rich.console import Console
from rich.table import Table

from .. import db


def connect() -> psycopg.Connection[Any]:
    """A connection for a CLI command (embedded server unless MMR_DATABASE_URL is set)."""
    return db.connect(application_name="mmr-cli")


def _default(o: Any) -> Any:
    if isinstance(o, datetime):
        return o.isoformat()
    return str(o)


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, default=_default, ensure_ascii=False))


def print_table(
    rows: Sequence[dict[str, Any]], columns: Sequence[str], title: str | None = None
) -> None:
    table = Table(title=title)
    for col in columns:
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(*("" if row.get(c) is None else str(row.get(c)) for c in columns))
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)  # pipes and files: don't squeeze columns into 80
    console.print(table)
