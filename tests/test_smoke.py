"""The smallest end-to-end path: install, register, put vectors, search."""

from __future__ import annotations

from typing import Any

import numpy as np
import psycopg

import pg_mmretrieval as mmr


def test_external_space_search_returns_nearest(conn: psycopg.Connection[Any]) -> None:
    conn.execute("CREATE TABLE smoke (id int PRIMARY KEY, caption text)")
    conn.execute("INSERT INTO smoke SELECT g, 'row ' || g FROM generate_series(1, 200) g")
    mmr.create_collection(conn, "smoke", "smoke", text_columns=["caption"])
    mmr.add_space(conn, "smoke", "ext", "external", None, 16)
    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((200, 16)).astype(np.float32)
    assert mmr.put_embeddings(conn, "smoke", "ext", list(range(1, 201)), vecs) == 200
    hits = mmr.search(conn, "smoke", "ext", vecs[9], k=5)
    assert hits[0].key == 10
    assert abs(hits[0].score - 1.0) < 1e-5
    assert len(hits) == 5
