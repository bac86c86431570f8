"""docs/architecture.md's recipe "add a fusion (composed-search) method", followed on a live
database: a plan builder and a row in the method table, nothing else.  (The encoder and
reranker recipes are the page's own code blocks, run by tests/test_docs_run.py.)"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import psycopg
import pytest

import pg_mmretrieval as mmr

from .fusion_synth import n

D = 16
N = 400

# Step 1: the builder, with the builders' common signature (a copy of mmr._plan_weighted with
# its own formula): the normalised mean of the two query vectors.
BUILDER = """
CREATE FUNCTION mmr._plan_midpoint(
    c mmr._collection, s mmr._space, p mmr._search_plan, m text, prm jsonb,
    p_ref vector, p_mod vector, p_k int, n int, p_filter jsonb, p_exclude jsonb,
    p_ref_key jsonb, p_ef_search int, p_max_scan_tuples int)
RETURNS mmr._search_plan
LANGUAGE plpgsql
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    p.vecs := ARRAY[mmr.vec_normalize(p_ref + p_mod)];
    RETURN p;
END
$$
"""

# Step 2: its row in the method table.  The test keeps the shipped rows by renaming the
# shipped table function and adding one row to it; in the source file the row is one more
# line of mmr._composed_methods().
ROW = """
ALTER FUNCTION mmr._composed_methods() RENAME TO _composed_methods_shipped;
CREATE FUNCTION mmr._composed_methods()
RETURNS TABLE (ord int, name text, params text[], builder text, candidates int, fast boolean)
LANGUAGE sql IMMUTABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT * FROM mmr._composed_methods_shipped()
    UNION ALL SELECT 100, 'midpoint', '{}'::text[], '_plan_midpoint', NULL::int, false;
END
"""


@pytest.fixture(scope="module")
def items(db_url: str) -> Iterator[tuple[psycopg.Connection[Any], np.ndarray[Any, Any]]]:
    rng = np.random.default_rng(7)
    vecs = n(rng.standard_normal((N, D))).astype(np.float32)
    with mmr.connect(db_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE recipe_items (id int PRIMARY KEY)")
        conn.execute("INSERT INTO recipe_items SELECT generate_series(0, %s)", (N - 1,))
        mmr.create_collection(conn, "recipe", "recipe_items")
        mmr.add_space(conn, "recipe", "img", "external", None, D)
        mmr.put_embeddings(conn, "recipe", "img", list(range(N)), vecs)
        yield conn, vecs


def _keys(conn: psycopg.Connection[Any], method: str, params: str, ref: Any, mod: Any) -> list[Any]:
    rows = conn.execute(
        "SELECT key FROM mmr.composed_search('recipe', 'img', %s::vector, %s::vector, %s, 10, "
        "%s::jsonb)",
        (str(list(map(float, ref))), str(list(map(float, mod))), method, params),
    ).fetchall()
    return [r[0] for r in rows]


def test_add_a_fusion_method(items: tuple[psycopg.Connection[Any], np.ndarray[Any, Any]]) -> None:
    conn, vecs = items
    ref, mod = vecs[3], vecs[250]
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="unknown composed-search"):
        _keys(conn, "midpoint", "{}", ref, mod)
    conn.execute(BUILDER)
    conn.execute(ROW)
    got = _keys(conn, "midpoint", "{}", ref, mod)
    # The normalised mean is the weighted method at alpha = 0.5 (same direction).
    assert got == _keys(conn, "weighted", '{"alpha": 0.5}', ref, mod)
    assert len(got) == 10
    # The method's parameters are checked like a shipped method's: it declared none.
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="alpha"):
        _keys(conn, "midpoint", '{"alpha": 0.3}', ref, mod)
