"""``mmr demo``: set up a collection, embed it, search it, show results."""

from __future__ import annotations

import time

import click

from . import collections as coll
from . import db, install
from .encoders import get_encoder
from .search import search

CAPTIONS = [
    "a red circle on the left",
    "a blue square at the top",
    "a green triangle in the center",
    "two yellow stars at the bottom",
    "a small purple cross on the right",
]


def run_demo() -> None:
    """Interim demo with the deterministic test encoder (replaced by the shapes demo)."""
    start = time.monotonic()
    url = db.resolve_url()
    install.upgrade(url)
    with db.connect(url, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM mmr.collections WHERE collection = 'demo'").fetchone():
            coll.drop_collection(conn, "demo")
        conn.execute("DROP TABLE IF EXISTS demo_notes")
        conn.execute("CREATE TABLE demo_notes (id int PRIMARY KEY, caption text)")
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO demo_notes VALUES (%s, %s)",
                [(i + 1, c) for i, c in enumerate(CAPTIONS)],
            )
        coll.create_collection(conn, "demo", "demo_notes", text_columns=["caption"])
        encoder = get_encoder("mmr-test")
        coll.add_space(conn, "demo", "vec", "external", None, encoder.dimension)
        vectors = list(encoder.embed_batch(CAPTIONS))
        coll.put_embeddings(conn, "demo", "vec", list(range(1, len(CAPTIONS) + 1)), vectors)
        query = CAPTIONS[2]
        (qvec,) = list(encoder.embed_batch([query]))
        click.echo(f"database: {db.redact(url)}")
        click.echo(f"query: {query!r}")
        for hit in search(conn, "demo", "vec", qvec, k=3):
            (caption,) = conn.execute(
                "SELECT caption FROM demo_notes WHERE id = %s", (hit.key,)
            ).fetchone()  # type: ignore[misc]
            click.echo(f"  {hit.score:6.3f}  {caption}")
    click.echo(f"done in {time.monotonic() - start:.1f} s")


def register(cli: click.Group) -> None:
    @cli.command("demo")
    def demo() -> None:
        """Run the demo: a collection, embeddings, searches and their results.

        \b
        Example:
          mmr demo
        """
        run_demo()
