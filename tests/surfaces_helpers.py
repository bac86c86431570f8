"""Test helpers for the client/SQLAlchemy/Alembic tests.

``drain_queue`` stands in for the worker (which lands separately): it embeds queued items
with the space's real encoder and writes them the way a worker does, so waiting and search
can be tested end to end.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import psycopg
from pgvector import Vector
from psycopg import sql

from pg_mmretrieval.encoders import get_encoder


def drain_queue(conn: psycopg.Connection[Any], collection: str) -> int:
    """Embed every queued item of ``collection``; return how many were written."""
    c = conn.execute(
        "SELECT id, source::text, key_columns::text[], queue_table::text FROM mmr._collection "
        "WHERE name = %s",
        (collection,),
    ).fetchone()
    assert c is not None
    cid, source, keys, queue = c
    spaces = conn.execute(
        "SELECT id, encoder, source_column::text, embedding_table::text, storage FROM mmr._space "
        "WHERE collection_id = %s AND encoder <> 'external'",
        (cid,),
    ).fetchall()
    written = 0
    klist = sql.SQL(", ").join(sql.Identifier(k) for k in keys)
    for sid, encoder_name, column, emb, storage in spaces:
        match = sql.SQL(" AND ").join(
            sql.SQL("s.{k} = q.{k}").format(k=sql.Identifier(k)) for k in keys
        )
        rows = conn.execute(
            sql.SQL(
                "SELECT q.mmr_id, {qk}, s.{col} FROM {queue} q JOIN {source} s ON {match} "
                "WHERE q.mmr_space_id = %s"
            ).format(
                qk=sql.SQL(", ").join(sql.SQL("q.") + sql.Identifier(k) for k in keys),
                col=sql.Identifier(column),
                queue=sql.SQL(queue),
                source=sql.SQL(source),
                match=match,
            ),
            (sid,),
        ).fetchall()
        if not rows:
            continue
        encoder = get_encoder(encoder_name)
        items = [r[-1] if isinstance(r[-1], str) else bytes(r[-1]) for r in rows]
        vecs = list(encoder.embed_batch(items))
        with conn.transaction():
            for r, v in zip(rows, vecs, strict=True):
                conn.execute(
                    sql.SQL(
                        "INSERT INTO {emb} ({klist}, embedding, model_id) VALUES ({ph}, {vec}, %s) "
                        "ON CONFLICT ({klist}) DO UPDATE SET embedding = EXCLUDED.embedding"
                    ).format(
                        emb=sql.SQL(emb),
                        klist=klist,
                        ph=sql.SQL(", ").join(sql.Placeholder() * len(keys)),
                        vec=sql.SQL("%s::halfvec" if storage == "halfvec" else "%s"),
                    ),
                    [*r[1:-1], Vector(np.asarray(v)), encoder.model_id],
                )
            conn.execute(
                sql.SQL("DELETE FROM {} WHERE mmr_id = ANY(%s)").format(sql.SQL(queue)),
                ([r[0] for r in rows],),
            )
        written += len(rows)
    return written
