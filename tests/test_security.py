"""Security: no SQL injection through names, caller's rights and RLS on search, grants."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

import pg_mmretrieval as mmr
from pg_mmretrieval.errors import DatabaseError

from .helpers import unit_vectors

HOSTILE = [
    'we"ird',
    "semi; DROP TABLE canary; --",
    "quote'd",
    "ünïcødé 名前",
    "back\\slash",
    "$$dollar$$",
]


@pytest.fixture()
def canary(conn: psycopg.Connection[Any]) -> Iterator[None]:
    conn.execute("CREATE TABLE IF NOT EXISTS canary (x int)")
    yield
    assert conn.execute("SELECT to_regclass('canary')").fetchone() == ("canary",)


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_names_are_plain_names(
    conn: psycopg.Connection[Any], canary: None, name: str
) -> None:
    # table, key column, content column, collection, space and view all named hostilely
    table = sql.Identifier(name + "_t")
    key = sql.Identifier(name + "_id")
    col = sql.Identifier(name + "_col")
    conn.execute(sql.SQL("CREATE TABLE {} ({} int PRIMARY KEY, {} text)").format(table, key, col))
    conn.execute(sql.SQL("INSERT INTO {} VALUES (1, 'a'), (2, 'b')").format(table))
    source = table.as_string(conn)
    mmr.create_collection(conn, name, source, text_columns=[name + "_col"], view_name=name + "_v")
    mmr.add_space(conn, name, name, "external", None, 3)
    mmr.add_space(conn, name, name + "2", "mmr-test", name + "_col", 32)
    mmr.put_embeddings(conn, name, name, [1, 2], [[1, 0, 0], [0, 1, 0]])
    hits = mmr.search(conn, name, name, [0, 1, 0], k=1, filter={name + "_col": "b"})
    assert [h.key for h in hits] == [2]
    # the view has a column named after the space
    rows = conn.execute(
        sql.SQL("SELECT {}, {} FROM {} ORDER BY 1").format(
            key, sql.Identifier(name), sql.Identifier(name + "_v")
        )
    ).fetchall()
    assert [r[0] for r in rows] == [1, 2]
    # updates and deletes flow through the generated trigger function
    conn.execute(sql.SQL("UPDATE {} SET {} = 'c' WHERE {} = 1").format(table, col, key))
    conn.execute(sql.SQL("DELETE FROM {} WHERE {} = 2").format(table, key))
    assert [h.key for h in mmr.search(conn, name, name, [0, 1, 0], k=5)] == [1]
    mmr.drop_collection(conn, name)
    conn.execute(sql.SQL("DROP TABLE {}").format(table))


@pytest.fixture()
def roles(conn: psycopg.Connection[Any]) -> Iterator[dict[str, str]]:
    suffix = uuid.uuid4().hex[:8]
    names = {"alice": f"alice_{suffix}", "bob": f"bob_{suffix}", "eve": f"eve_{suffix}"}
    for r in names.values():
        conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(r)))
    yield names
    conn.execute("RESET ROLE")
    for r in names.values():
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(r)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(r)))


def test_search_runs_with_the_callers_rights_and_rls(
    conn: psycopg.Connection[Any], roles: dict[str, str]
) -> None:
    alice, bob, eve = roles["alice"], roles["bob"], roles["eve"]
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, owner text, body text)")
    conn.execute(
        "INSERT INTO docs SELECT g, CASE WHEN g %% 2 = 0 THEN %s ELSE %s END, 'doc ' || g "
        "FROM generate_series(1, 40) g",
        (alice, bob),
    )
    mmr.create_collection(conn, "docs", "docs", text_columns=["body"])
    mmr.add_space(conn, "docs", "ext", "external", None, 8)
    vecs = unit_vectors(40, 8, seed=3)
    mmr.put_embeddings(conn, "docs", "ext", list(range(1, 41)), vecs)
    conn.execute("ALTER TABLE docs ENABLE ROW LEVEL SECURITY")
    conn.execute("CREATE POLICY own ON docs USING (owner = current_user)")
    for r in (alice, bob):
        conn.execute(sql.SQL("GRANT SELECT ON docs TO {}").format(sql.Identifier(r)))

    conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(alice)))
    hits = mmr.search(conn, "docs", "ext", vecs[2], k=10)  # row 3 belongs to bob
    assert len(hits) == 10 and all(h.key % 2 == 0 for h in hits)
    # reading the embedding table directly is filtered the same way
    table = conn.execute(
        "SELECT embedding_table::text FROM mmr.spaces WHERE collection = 'docs'"
    ).fetchone()[0]  # type: ignore[index]
    assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (20,)
    # the view is security_invoker: the same rows
    assert conn.execute("SELECT count(*) FROM docs_mmr").fetchone() == (20,)
    conn.execute("RESET ROLE")

    conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(eve)))  # no SELECT on docs
    with pytest.raises(DatabaseError, match="permission denied for table docs"):
        mmr.search(conn, "docs", "ext", vecs[2], k=10)
    with pytest.raises(DatabaseError, match="permission denied"):
        mmr.put_embeddings(conn, "docs", "ext", [1], [vecs[0]])
    with pytest.raises(DatabaseError, match="permission denied"):
        mmr.drop_collection(conn, "docs")
    conn.execute("RESET ROLE")
    assert [c["collection"] for c in mmr.list_collections(conn)].count("docs") == 1


def test_install_grants_public_only_catalog_reads_and_search(
    conn: psycopg.Connection[Any],
) -> None:
    # SECURITY DEFINER functions: search_path pinned, not executable by PUBLIC
    rows = conn.execute(
        "SELECT p.oid::regprocedure::text, p.proconfig, "
        "has_function_privilege('public', p.oid, 'EXECUTE') "
        "FROM pg_proc p WHERE p.pronamespace = 'mmr'::regnamespace AND p.prosecdef"
    ).fetchall()
    for name, config, public_exec in rows:
        assert config and any(c.startswith("search_path=") for c in config), name
        assert not public_exec, name
    # every entry-point function pins search_path
    unpinned = conn.execute(
        "SELECT p.oid::regprocedure::text FROM pg_proc p "
        "WHERE p.pronamespace = 'mmr'::regnamespace AND p.prokind = 'f' "
        "AND NOT coalesce(p.proconfig::text LIKE '%search_path=%', false) "
        "AND p.prosqlbody IS NULL"
    ).fetchall()
    assert unpinned == []
    # PUBLIC's table privileges in schema mmr: SELECT on the catalog only (plus embedding
    # tables, which RLS restricts to rows whose source row the caller can see)
    grants = conn.execute(
        "SELECT c.relname, a.privilege_type, c.relrowsecurity FROM pg_class c, "
        "aclexplode(c.relacl) a WHERE c.relnamespace = 'mmr'::regnamespace AND a.grantee = 0"
    ).fetchall()
    catalog = {
        "_collection",
        "_space",
        "collections",
        "spaces",  # collections and spaces
        "_projection",
        "_reranker",
        "rerankers",
        "_text_index",
        "_multivector",  # retrieval
        "_embed_config",  # mmr.embed: where the server's Python finds the package (issue 13)
        "_encoder",  # the encoder catalog (issue 16): names, dimensions, modalities
    }
    for relname, priv, rls in grants:
        assert priv == "SELECT", (relname, priv)
        if relname.startswith(("_emb_", "_mv_")):
            assert rls, f"{relname} is readable by PUBLIC without row-level security"
        else:
            assert relname in catalog, relname
    # administrative functions are not executable by PUBLIC
    for fn in ("create_collection", "add_space", "drop_collection", "put_embeddings"):
        (allowed,) = conn.execute(
            "SELECT bool_or(has_function_privilege('public', p.oid, 'EXECUTE')) FROM pg_proc p "
            "WHERE p.pronamespace = 'mmr'::regnamespace AND p.proname = %s",
            (fn,),
        ).fetchone()  # type: ignore[misc]
        assert allowed is False, fn
    (search_ok,) = conn.execute(
        "SELECT bool_and(has_function_privilege('public', p.oid, 'EXECUTE')) FROM pg_proc p "
        "WHERE p.pronamespace = 'mmr'::regnamespace AND p.proname = 'search'"
    ).fetchone()  # type: ignore[misc]
    assert search_ok is True
