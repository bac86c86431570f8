"""Issue 12, items 3 and 8: column privileges and shared aggregates.

A space over column C (its embedding table, the collection view's column for it, every search
over it, under both bindings of the search functions) is readable only by roles that may read C;
spaces of no declared column (external vectors, multi-vector spaces) need SELECT on every column.
BASIC projections (mmr._projection) aggregate a whole space: visible only to roles that may read
all of it.  Nothing internal that holds data derived from user columns is readable by PUBLIC.

Roles: ``reader`` may read (id, title) of ``docs`` but not secret_caption; ``cleared`` may read
every column, by column grants; ``tablewide`` has SELECT on the table; ``nobody`` has nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import psycopg
import pytest
from psycopg import sql

import pg_mmretrieval as mmr
from pg_mmretrieval import install, retrieval
from pg_mmretrieval.errors import DatabaseError

from .helpers import plan_nodes, unit_vectors

Conn = psycopg.Connection[Any]
N = 60
D = 8
DENIED = "42501"


@pytest.fixture(scope="module")
def setup(db_url: str) -> Iterator[tuple[Conn, dict[str, str], dict[str, Any]]]:
    suffix = uuid.uuid4().hex[:8]
    roles = {r: f"{r}_{suffix}" for r in ("reader", "cleared", "tablewide", "nobody")}
    vecs = {s: unit_vectors(N, D, seed=i) for i, s in enumerate(("sec", "ttl", "ext"))}
    with mmr.connect(db_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE docs (id int PRIMARY KEY, title text, secret_caption text)")
        conn.execute(
            "INSERT INTO docs SELECT g, 'title ' || g, 'secret word' || g "
            f"FROM generate_series(0, {N - 1}) g"
        )
        mmr.create_collection(conn, "docs", "docs", text_columns=["title", "secret_caption"])
        mmr.add_space(conn, "docs", "sec", "external", "secret_caption", D)
        mmr.add_space(conn, "docs", "ttl", "external", "title", D)
        mmr.add_space(conn, "docs", "ext", "external", None, D)
        for s, v in vecs.items():
            mmr.put_embeddings(conn, "docs", s, list(range(N)), v)
        retrieval.create_text_index(conn, "docs")
        retrieval.add_multivector_space(conn, "docs", "mv", D)
        for i in range(N):
            retrieval.put_multivectors(conn, "docs", "mv", i, vecs["sec"][[i, (i + 1) % N]])
        basis, mu_t = retrieval.basic_projection(vecs["ttl"][:20], vecs["ttl"][20:40])
        retrieval.store_basic_projection(conn, "docs", "sec", basis, mu_t)
        retrieval.store_basic_projection(conn, "docs", "ttl", basis, mu_t)
        for r in roles.values():
            conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(r)))
        grant = "GRANT SELECT {} ON docs TO {}"
        for role, cols in (
            ("reader", "(id, title)"),
            ("cleared", "(id, title, secret_caption)"),
            ("tablewide", ""),
        ):
            conn.execute(sql.SQL(grant.format(cols, "{}")).format(sql.Identifier(roles[role])))
        try:
            yield conn, roles, vecs
        finally:
            conn.execute("RESET ROLE")
            for r in roles.values():
                conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(r)))
                conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(r)))


@pytest.fixture(params=["native", "plpgsql"])
def binding(db_url: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """mmr.search / mmr.composed_search bound to the native module or to the PL/pgSQL reference
    functions (089-native.sql), as in tests/test_search_fast_path.py."""
    with mmr.connect(db_url, autocommit=True) as conn:
        conn.execute("SELECT mmr._bind_search(%s)", (request.param == "native",))
    yield str(request.param)
    with mmr.connect(db_url, autocommit=True) as conn:
        conn.execute("SELECT mmr._bind_search(true)")


@pytest.fixture()
def as_role(setup: tuple[Conn, dict[str, str], dict[str, Any]]) -> Iterator[Any]:
    conn, roles, _ = setup

    def become(role: str) -> None:
        conn.execute("RESET ROLE")
        conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(roles[role])))

    yield become
    conn.execute("RESET ROLE")


def _table(conn: Conn, space: str) -> str:
    row = conn.execute(
        "SELECT embedding_table::text FROM mmr.spaces WHERE collection = 'docs' AND space = %s",
        (space,),
    ).fetchone()
    assert row is not None
    return str(row[0])


def _denied(err: pytest.ExceptionInfo[DatabaseError], column: str | None) -> None:
    assert err.value.sqlstate == DENIED, err.value
    text = str(err.value)
    if column is None:
        assert "GRANT SELECT ON public.docs TO" in text, text
    else:
        assert f"GRANT SELECT ({column}) ON public.docs TO" in text, text


def test_item3_embedding_table_needs_the_column_privilege(setup: Any, as_role: Any) -> None:
    conn, _, _ = setup
    sec, ttl = _table(conn, "sec"), _table(conn, "ttl")
    as_role("reader")
    assert conn.execute(f"SELECT count(*) FROM {ttl}").fetchone() == (N,)
    with pytest.raises(psycopg.errors.InsufficientPrivilege) as e:
        conn.execute(f"SELECT embedding FROM {sec} LIMIT 1")
    assert "column secret_caption of table public.docs" in str(e.value)
    assert "GRANT SELECT (secret_caption) ON public.docs" in (e.value.diag.message_hint or "")
    # no way around the policy: a leaky function in the query, an aggregate, a join
    for q in (
        f"SELECT count(*) FROM {sec}",
        f"SELECT avg(embedding) FROM {sec}",
        f"SELECT d.id FROM docs d JOIN {sec} e ON e.id = d.id WHERE e.embedding IS NOT NULL",
    ):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(q)
    for role in ("cleared", "tablewide"):
        as_role(role)
        assert conn.execute(f"SELECT count(*) FROM {sec}").fetchone() == (N,)


def test_item3_collection_view_needs_the_column(setup: Any, as_role: Any) -> None:
    conn, _, vecs = setup
    as_role("reader")  # the view selects every source column and every active space
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("SELECT id, title FROM docs_mmr")
    as_role("cleared")
    rows = conn.execute("SELECT id, sec FROM docs_mmr ORDER BY id").fetchall()
    assert len(rows) == N
    assert np.allclose(np.array([r[1].to_numpy() for r in rows]), vecs["sec"], atol=1e-6)


def test_item3_search_refused_under_both_bindings(setup: Any, as_role: Any, binding: str) -> None:
    conn, roles, vecs = setup
    q = vecs["sec"][3]
    as_role("reader")
    # fast path, general path (filter, max_scan_tuples), explain: all refused with the GRANT
    for kw in ({}, {"filter": {"title": "title 3"}}, {"max_scan_tuples": 20000}):
        with pytest.raises(DatabaseError) as e:
            mmr.search(conn, "docs", "sec", q, k=5, **kw)
        _denied(e, "secret_caption")
    # the same role searches the space over the column it may read
    assert len(mmr.search(conn, "docs", "ttl", vecs["ttl"][3], k=5)) == 5
    as_role("cleared")
    hits = mmr.search(conn, "docs", "sec", q, k=5)
    assert hits[0].key == 3 and len(hits) == 5
    # revoking takes effect at once, also for a session whose statements are kept (native)
    conn.execute("RESET ROLE")
    conn.execute(
        sql.SQL("REVOKE SELECT (secret_caption) ON docs FROM {}").format(
            sql.Identifier(roles["cleared"])
        )
    )
    try:
        as_role("cleared")
        with pytest.raises(DatabaseError) as e:
            mmr.search(conn, "docs", "sec", q, k=5)
        _denied(e, "secret_caption")
    finally:
        conn.execute("RESET ROLE")
        conn.execute(
            sql.SQL("GRANT SELECT (secret_caption) ON docs TO {}").format(
                sql.Identifier(roles["cleared"])
            )
        )


@pytest.mark.parametrize("method", ["weighted", "weimocir", "gqr", "score_sum"])
def test_item3_composed_search_refused_under_both_bindings(
    setup: Any, as_role: Any, binding: str, method: str
) -> None:
    conn, _, vecs = setup
    # weimocir fuses caption spaces, read by the stored reference's key
    ref, key = (None, 3) if method == "weimocir" else (vecs["sec"][3], None)
    params = {"caption_space": "ttl"} if method == "weimocir" else None
    kw: dict[str, Any] = {"reference_key": key, "method": method, "k": 5, "params": params}
    as_role("reader")
    with pytest.raises(DatabaseError) as e:
        retrieval.composed_search(conn, "docs", "sec", ref, vecs["ttl"][5], **kw)
    _denied(e, "secret_caption")
    with pytest.raises(DatabaseError) as e:  # a stored reference: its embedding is read too
        retrieval.composed_search(
            conn,
            "docs",
            "ttl",
            None,
            vecs["ttl"][5],
            reference_key=3,
            method="pdv",
            k=5,
            params={"caption_space": "sec"},
        )
    _denied(e, "secret_caption")
    as_role("cleared")
    assert len(retrieval.composed_search(conn, "docs", "sec", ref, vecs["ttl"][5], **kw)) == 5


def test_item3_hybrid_refused(setup: Any, as_role: Any) -> None:
    conn, _, vecs = setup
    as_role("reader")
    # the lexical leg reads both text columns; a vector leg over secret_caption's space
    for text, legs in (("secret word3", []), (None, [("sec", vecs["sec"][3])])):
        for kw in ({}, {"filter": {"id": {"<": 100}}}):  # fast and general path
            with pytest.raises(DatabaseError) as e:
                retrieval.hybrid_search(conn, "docs", text, legs, k=5, **kw)
            _denied(e, "secret_caption")
    assert len(retrieval.hybrid_search(conn, "docs", None, [("ttl", vecs["ttl"][3])], k=5)) == 5
    as_role("cleared")
    hits = retrieval.hybrid_search(conn, "docs", "secret word3", [("sec", vecs["sec"][3])], k=5)
    assert hits[0].key == 3


def test_item3_spaces_of_no_column_need_every_column(setup: Any, as_role: Any) -> None:
    conn, _, vecs = setup
    mv = conn.execute(
        "SELECT embedding_table::text FROM mmr._multivector WHERE name = 'mv'"
    ).fetchone()[0]  # type: ignore[index]
    as_role("reader")
    with pytest.raises(DatabaseError) as e:
        retrieval.multivector_search(conn, "docs", "mv", [vecs["sec"][3]], k=5)
    _denied(e, None)
    with pytest.raises(DatabaseError) as e:
        mmr.search(conn, "docs", "ext", vecs["ext"][3], k=5)
    _denied(e, None)
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute(f"SELECT count(*) FROM {mv}")
    # every column, by table grant or by column grants
    for role in ("tablewide", "cleared"):
        as_role(role)
        assert len(retrieval.multivector_search(conn, "docs", "mv", [vecs["sec"][3]], k=5)) == 5
        assert mmr.search(conn, "docs", "ext", vecs["ext"][3], k=5)[0].key == 3
        assert conn.execute(f"SELECT count(*) FROM {mv}").fetchone() == (2 * N,)


def test_item3_no_select_on_the_table_is_still_the_table_error(setup: Any, as_role: Any) -> None:
    conn, _, vecs = setup
    as_role("nobody")
    with pytest.raises(DatabaseError, match="permission denied for table docs"):
        mmr.search(conn, "docs", "sec", vecs["sec"][3], k=5)


def test_item3_privilege_check_runs_once_per_query(setup: Any, as_role: Any) -> None:
    """The column check is an InitPlan (evaluated once), and the index still orders the scan."""
    conn, _, vecs = setup
    as_role("cleared")
    (plan,) = conn.execute(
        "SELECT mmr.explain_search('docs', 'sec', %s::vector, 5, run_analyze => true)",
        (str(list(map(float, vecs["sec"][3]))),),
    ).fetchone()  # type: ignore[misc]
    nodes = plan_nodes(plan)
    init = [x for x in nodes if x.get("Parent Relationship") == "InitPlan"]
    assert len(init) == 1 and init[0]["Actual Loops"] == 1, plan
    scan = [x for x in nodes if x.get("Index Name", "").endswith("_hnsw")]
    assert len(scan) == 1 and "Order By" in scan[0], plan
    assert "has_column_privilege" not in str(scan[0].get("Filter")), plan


def test_item3_upgrade_recreates_the_policies(db_url: str, setup: Any, as_role: Any) -> None:
    """An install from before the fix: its policies check row visibility only."""
    conn, _, vecs = setup
    sec = _table(conn, "sec")
    conn.execute(f"DROP POLICY source_visible ON {sec}")
    conn.execute(
        f"CREATE POLICY source_visible ON {sec} FOR SELECT USING "
        f"(EXISTS (SELECT 1 FROM docs s WHERE s.id = {sec}.id))"
    )
    as_role("reader")
    assert conn.execute(f"SELECT count(*) FROM {sec}").fetchone() == (N,)  # the defect
    conn.execute("RESET ROLE")
    install.upgrade(db_url)
    as_role("reader")
    with pytest.raises(DatabaseError) as e:
        mmr.search(conn, "docs", "sec", vecs["sec"][3], k=5)
    _denied(e, "secret_caption")


def test_item8_projection_rows_hidden(setup: Any, as_role: Any) -> None:
    conn, _, vecs = setup
    query = (
        "SELECT sp.name FROM mmr._projection p JOIN mmr._space sp ON sp.id = p.space_id ORDER BY 1"
    )
    assert conn.execute(query).fetchall() == [("sec",), ("ttl",)]
    (public,) = conn.execute(
        "SELECT has_table_privilege('public', 'mmr._projection', 'SELECT') "
        "AND (SELECT relrowsecurity FROM pg_class WHERE oid = 'mmr._projection'::regclass)"
    ).fetchone()  # type: ignore[misc]
    assert public is True  # readable only through its row-level security
    expected = {"nobody": [], "reader": [("ttl",)], "cleared": [("sec",), ("ttl",)]}
    for role, rows in expected.items():
        as_role(role)
        assert conn.execute(query).fetchall() == rows, role
        assert conn.execute("SELECT count(*) FROM mmr._projection").fetchone() == (len(rows),)
    as_role("reader")
    with pytest.raises(DatabaseError) as e:
        retrieval.composed_search(
            conn, "docs", "sec", vecs["sec"][3], vecs["ttl"][5], method="basic", k=5
        )
    _denied(e, "secret_caption")
    as_role("cleared")
    hits = retrieval.composed_search(
        conn, "docs", "sec", vecs["sec"][3], vecs["ttl"][5], method="basic", k=5
    )
    assert len(hits) == 5


def test_item8_projection_hidden_under_row_level_security(setup: Any, as_role: Any) -> None:
    """An aggregate over rows a role cannot see is not readable by it (one visible row of two:
    the mean would give the hidden row's embedding away)."""
    conn, roles, vecs = setup
    conn.execute("CREATE TABLE rdocs (id int PRIMARY KEY, owner text, body text)")
    try:
        conn.execute(
            "INSERT INTO rdocs VALUES (1, %s, 'a'), (2, 'someone else', 'b')",
            (roles["cleared"],),
        )
        mmr.create_collection(conn, "rdocs", "rdocs", text_columns=["body"])
        mmr.add_space(conn, "rdocs", "img", "external", "body", D)
        mmr.put_embeddings(conn, "rdocs", "img", [1, 2], vecs["sec"][:2])
        basis, mu_t = retrieval.basic_projection(vecs["ttl"][:20], vecs["ttl"][20:40])
        retrieval.store_basic_projection(conn, "rdocs", "img", basis, mu_t)
        conn.execute("ALTER TABLE rdocs ENABLE ROW LEVEL SECURITY")
        conn.execute("CREATE POLICY own ON rdocs USING (owner = current_user)")
        conn.execute(
            sql.SQL("GRANT SELECT ON rdocs TO {}").format(sql.Identifier(roles["cleared"]))
        )
        as_role("cleared")
        assert [h.key for h in mmr.search(conn, "rdocs", "img", vecs["sec"][1], k=5)] == [1]
        (n,) = conn.execute(
            "SELECT count(*) FROM mmr._projection p JOIN mmr._space s ON s.id = p.space_id "
            "JOIN mmr._collection c ON c.id = s.collection_id WHERE c.name = 'rdocs'"
        ).fetchone()  # type: ignore[misc]
        assert n == 0
        with pytest.raises(DatabaseError, match="row-level security") as e:
            retrieval.composed_search(
                conn, "rdocs", "img", vecs["sec"][0], vecs["ttl"][5], method="basic", k=1
            )
        assert e.value.sqlstate == DENIED
    finally:
        conn.execute("RESET ROLE")
        mmr.drop_collection(conn, "rdocs")
        conn.execute("DROP TABLE rdocs")


def test_item8_internal_tables_not_readable_by_public(setup: Any, as_role: Any) -> None:
    """Dead letters (keys, content hashes, error texts), throughput, workers and queues hold
    data derived from user rows: not readable by PUBLIC; every table PUBLIC may read is either
    catalog metadata or under row-level security."""
    conn, _, _ = setup
    queue = conn.execute("SELECT queue_table::text FROM mmr.collections").fetchone()[0]  # type: ignore[index]
    as_role("tablewide")
    for t in ("mmr._failed", "mmr._throughput", "mmr._worker", queue):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(f"SELECT * FROM {t} LIMIT 1")
    conn.execute("RESET ROLE")
    rows = conn.execute(
        "SELECT c.relname, c.relrowsecurity FROM pg_class c, aclexplode(c.relacl) a "
        "WHERE c.relnamespace = 'mmr'::regnamespace AND a.grantee = 0 "
        "AND a.privilege_type = 'SELECT'"
    ).fetchall()
    metadata = {
        "_collection", "_space", "collections", "spaces", "_reranker", "rerankers",
        "_text_index", "_multivector", "_encoder",
        # where the backend finds the Python package for mmr.embed (no data of any table)
        "_embed_config",
    }  # fmt: skip
    for relname, rls in rows:
        assert relname in metadata or rls, relname
    assert ("_projection", True) in rows
