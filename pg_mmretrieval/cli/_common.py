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


def _print_notice(diag: psycopg.errors.Diagnostic) -> None:
    """Server NOTICEs and WARNINGs on stderr (e.g. "rows queued and not yet searchable")."""
    if diag.severity_nonlocalized not in ("NOTICE", "WARNING"):
        return
    click.echo(f"{(diag.severity or 'notice').lower()}: {diag.message_primary}", err=True)
    if diag.message_hint:
        click.echo(f"hint: {diag.message_hint}", err=True)


def connect() -> psycopg.Connection[Any]:
    """A connection for a CLI command (embedded server unless MMR_DATABASE_URL is set);
    the server's notices are printed on stderr."""
    conn = db.connect(application_name="mmr-cli")
    conn.add_notice_handler(_print_notice)
    return conn


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
