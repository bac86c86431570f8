"""The encoder catalog in the database (``mmr._encoder``) and the spaces no worker can serve.

``mmr.add_space`` checks a space against the catalog, so the catalog must know the encoders
the installed plugins provide: :func:`publish` writes them; ``mmr db upgrade``, ``mmr models
export`` and every worker at start call it.  Encoders that only a remote worker has are
declared in SQL with ``mmr.declare_encoder(name, dimensions, modalities)``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from .encoders import Encoder, list_encoders
from .errors import MMRError

__all__ = ["Unservable", "publish", "publish_quietly", "unservable"]

_log = logging.getLogger("pg_mmretrieval.encoders")


@dataclass(frozen=True)
class Unservable:
    """A space no worker can serve, and why."""

    collection: str
    space: str
    version: int
    encoder: str
    reason: str

    def line(self) -> str:
        return (
            f"space {self.space!r} (version {self.version}) of collection {self.collection!r} "
            f"cannot be served: {self.reason}"
        )


def _rows(encoders: Iterable[Encoder]) -> list[tuple[str, int, list[str], str | None]]:
    return [
        (e.name, int(e.dimension), sorted(e.modalities), e.model_id or None)
        for e in encoders
        if e.name and 1 <= int(e.dimension) <= 16000
    ]


def publish(
    conn: psycopg.Connection[Any], by: str, encoders: Iterable[Encoder] | None = None
) -> int:
    """Write the encoders of the installed plugins (or ``encoders``) into ``mmr._encoder``.

    Entries of other encoders stay (another host's worker may have them).  Returns how many
    were written.

    Raises:
        PluginError: a plugin failed to load.
        psycopg.Error: the catalog could not be written (e.g. no privilege).
    """
    rows = _rows(list_encoders().values() if encoders is None else encoders)
    if not rows:
        return 0
    with conn.cursor() as cur:
        cur.executemany(_PUBLISH, [(*r, by[:200]) for r in rows])
    return len(rows)


_PUBLISH = (
    "INSERT INTO mmr._encoder AS x (name, dimensions, modalities, model_id, origin, "
    "published_by) VALUES (%s, %s, %s, %s, 'plugin', %s) "
    "ON CONFLICT (name) DO UPDATE SET dimensions = excluded.dimensions, "
    "modalities = excluded.modalities, model_id = excluded.model_id, origin = 'plugin', "
    "published_by = excluded.published_by, updated_at = now() "
    "WHERE (x.dimensions, x.modalities, x.model_id, x.origin) IS DISTINCT FROM "
    "(excluded.dimensions, excluded.modalities, excluded.model_id, 'plugin')"
)


def publish_sql(by: str, encoders: Iterable[Encoder] | None = None) -> str:
    """The statements :func:`publish` runs, as SQL text for a script applied with psql
    (``mmr db upgrade --sql``): the encoders of the plugins installed where it is written."""
    rows = _rows(list_encoders().values() if encoders is None else encoders)
    stmt = sql.SQL(_PUBLISH.replace("%s", "{}"))  # the values go through sql.Literal
    return "".join(
        stmt.format(*(sql.Literal(v) for v in (*r, by[:200]))).as_string(None) + ";\n" for r in rows
    )


def publish_quietly(conn: psycopg.Connection[Any], by: str) -> int:
    """:func:`publish`, logging instead of raising (callers whose own job comes first).

    Runs in a savepoint when ``conn`` is in a transaction, so a failure leaves it usable.
    """
    try:
        if conn.autocommit:
            return publish(conn, by)
        with conn.transaction():
            return publish(conn, by)
    except (MMRError, psycopg.Error) as e:
        _log.warning("the encoder catalog was not refreshed: %s", e)
        return 0


def unservable(conn: psycopg.Connection[Any], collection: str | None = None) -> list[Unservable]:
    """Spaces no worker can serve (``mmr.unservable_spaces``), with the reason."""
    rows = conn.execute(
        "SELECT collection, space, version, encoder, reason FROM mmr.unservable_spaces(%s)",
        (collection,),
    ).fetchall()
    return [Unservable(*r) for r in rows]
