"""Collections and spaces: registration, triggers, views, key types, bad input."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest

import pg_mmretrieval as mmr
from pg_mmretrieval import calls
from pg_mmretrieval.errors import InputError, NotFoundError

from .helpers import unit_vectors, uses_hnsw


def _queue(conn: psycopg.Connection[Any], collection: str) -> list[tuple[Any, ...]]:
    (qt,) = conn.execute(
        "SELECT queue_table::text FROM mmr.collections WHERE collection = %s", (collection,)
    ).fetchone()  # type: ignore[misc]
    return conn.execute(f"SELECT mmr_id, mmr_space_id, id FROM {qt} ORDER BY mmr_id").fetchall()


@pytest.fixture()
def products(conn: psycopg.Connection[Any]) -> str:
    name = "p_" + uuid.uuid4().hex[:8]
    conn.execute(f"CREATE TABLE {name} (id int PRIMARY KEY, caption text, image bytea, price int)")
    conn.execute(
        f"INSERT INTO {name} SELECT g, 'caption ' || g, NULL, g FROM generate_series(1, 20) g"
    )
    return name


def test_catalog_views_list_collection_and_spaces(
    conn: psycopg.Connection[Any], products: str
) -> None:
    mmr.create_collection(conn, products, products, image_column="image", text_columns=["caption"])
    table = mmr.add_space(conn, products, "cap", "mmr-test", "caption", 32)
    row = conn.execute(
        "SELECT collection, source::text, image_kind, text_columns::text[] "
        "FROM mmr.collections WHERE collection = %s",
        (products,),
    ).fetchone()
    assert row == (products, products, "bytea", ["caption"])
    space = conn.execute(
        "SELECT space, encoder, source_column::text, modality, dimensions, distance, storage, "
        "embedding_table::text, active, version FROM mmr.spaces WHERE collection = %s",
        (products,),
    ).fetchone()
    assert space == ("cap", "mmr-test", "caption", "text", 32, "cosine", "vector", table, True, 1)
    # the embedding table has the documented columns and an HNSW index
    cols = [
        r[0]
        for r in conn.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 "
            "AND NOT attisdropped ORDER BY attnum",
            (table,),
        )
    ]
    assert cols == ["id", "embedding", "content_hash", "model_id", "updated_at"]
    idx = conn.execute(
        "SELECT indexdef FROM pg_indexes WHERE schemaname = 'mmr' AND indexname = %s",
        (table.split(".")[1] + "_hnsw",),
    ).fetchone()
    assert idx is not None and "USING hnsw (embedding vector_cosine_ops)" in idx[0]


def test_add_space_backfills_existing_rows_and_triggers_queue_changes(
    conn: psycopg.Connection[Any], products: str
) -> None:
    mmr.create_collection(conn, products, products, text_columns=["caption"])
    mmr.add_space(conn, products, "cap", "mmr-test", "caption", 32)
    assert len(_queue(conn, products)) == 20  # backfill
    conn.execute(f"INSERT INTO {products} VALUES (21, 'new', NULL, 1), (22, NULL, NULL, 1)")
    assert len(_queue(conn, products)) == 21  # NULL content is not queued
    conn.execute(f"UPDATE {products} SET price = price + 1")  # no content change
    assert len(_queue(conn, products)) == 21
    # an update re-queues a row whose entry was consumed; a row still waiting (untried,
    # unclaimed) needs no second entry: the worker reads the newest content when it claims
    (qt,) = conn.execute(
        "SELECT queue_table::text FROM mmr.collections WHERE collection = %s", (products,)
    ).fetchone()  # type: ignore[misc]
    conn.execute(f"DELETE FROM {qt} WHERE id = 1")
    conn.execute(f"UPDATE {products} SET caption = 'changed' WHERE id IN (1, 2)")
    assert sorted(r[2] for r in _queue(conn, products)).count(1) == 1
    assert sorted(r[2] for r in _queue(conn, products)).count(2) == 1
    assert len(_queue(conn, products)) == 21
    conn.execute(f"DELETE FROM {products} WHERE id = 1")
    keys = [r[2] for r in _queue(conn, products)]
    assert 1 not in keys
    conn.execute(f"TRUNCATE {products}")
    assert _queue(conn, products) == []


def test_deleting_rows_deletes_their_embeddings(
    conn: psycopg.Connection[Any], products: str
) -> None:
    mmr.create_collection(conn, products, products, text_columns=["caption"])
    table = mmr.add_space(conn, products, "ext", "external", None, 8)
    mmr.put_embeddings(conn, products, "ext", list(range(1, 21)), unit_vectors(20, 8))
    conn.execute(f"DELETE FROM {products} WHERE id <= 5")
    assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (15,)
    conn.execute(f"UPDATE {products} SET id = id + 100 WHERE id = 6")  # key change
    assert conn.execute(f"SELECT count(*) FROM {table} WHERE id = 6").fetchone() == (0,)
    conn.execute(f"TRUNCATE {products}")
    assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,)


def test_sync_trigger_with_format_characters_in_names(conn: psycopg.Connection[Any]) -> None:
    """The sync trigger's statements are format() templates over their tables (026-sync.sql):
    key and content columns named like placeholders (``%1$s``, ``%%``) stay names, and each
    space's statements reach its own embedding table."""
    name = "pct_" + uuid.uuid4().hex[:8]
    conn.execute(
        f'CREATE TABLE {name} ("k%1$s" int, "k%%" text, "c%2$s" text, PRIMARY KEY ("k%1$s", "k%%"))'
    )
    conn.execute(f"INSERT INTO {name} VALUES (1, 'a', 'one'), (2, 'b', 'two'), (3, 'c', NULL)")
    mmr.create_collection(conn, name, name, text_columns=["c%2$s"])
    ext = mmr.add_space(conn, name, "ext", "external", None, 4)
    emb = mmr.add_space(conn, name, "cap", "mmr-test", "c%2$s", 32)
    (qt,) = conn.execute(
        "SELECT queue_table::text FROM mmr.collections WHERE collection = %s", (name,)
    ).fetchone()  # type: ignore[misc]

    def queued() -> list[tuple[Any, ...]]:
        return conn.execute(f'SELECT "k%1$s", "k%%" FROM {qt} ORDER BY 1').fetchall()

    def keys(table: str) -> list[int]:
        return [r[0] for r in conn.execute(f'SELECT "k%1$s" FROM {table} ORDER BY 1')]

    assert queued() == [(1, "a"), (2, "b")]  # backfill; NULL content is not queued
    conn.execute(f"DELETE FROM {qt}")
    conn.execute(f"INSERT INTO {name} VALUES (4, 'd', 'four')")
    conn.execute(f"""UPDATE {name} SET "c%2$s" = 'three' WHERE "k%1$s" = 3""")
    assert queued() == [(3, "c"), (4, "d")]
    both = [{"k%1$s": 1, "k%%": "a"}, {"k%1$s": 2, "k%%": "b"}]
    mmr.put_embeddings(conn, name, "ext", both, unit_vectors(2, 4))
    vec = "[" + ",".join(["0.1"] * 32) + "]"
    conn.execute(
        f"""INSERT INTO {emb} ("k%1$s", "k%%", embedding, model_id) """
        f"""SELECT "k%1$s", "k%%", '{vec}', 'm' FROM {name} WHERE "k%1$s" IN (1, 2, 4)"""
    )
    conn.execute(f"""UPDATE {name} SET "k%1$s" = 20 WHERE "k%1$s" = 2""")  # key change
    conn.execute(f"""UPDATE {name} SET "c%2$s" = NULL WHERE "k%1$s" = 4""")  # content gone
    assert (keys(ext), keys(emb)) == ([1], [1])
    conn.execute(f"""DELETE FROM {name} WHERE "k%1$s" = 1""")
    assert (keys(ext), keys(emb)) == ([], [])
    assert (1, "a") not in queued()
    conn.execute(f"TRUNCATE {name}")
    assert queued() == []


@pytest.mark.parametrize(
    ("ddl", "keys", "expect_key"),
    [
        ("id bigint PRIMARY KEY", ["1", "2"], 2),
        ("id text PRIMARY KEY", ["'a'", "'b'"], "b"),
        (
            "id uuid PRIMARY KEY",
            ["'00000000-0000-0000-0000-000000000001'", "'00000000-0000-0000-0000-000000000002'"],
            "00000000-0000-0000-0000-000000000002",
        ),
        (
            "a int, b text, PRIMARY KEY (a, b)",
            ["1, 'x'", "2, 'y'"],
            {"a": 2, "b": "y"},
        ),
    ],
)
def test_any_primary_key_type_round_trips_as_jsonb(
    conn: psycopg.Connection[Any], ddl: str, keys: list[str], expect_key: Any
) -> None:
    name = "k_" + uuid.uuid4().hex[:8]
    conn.execute(f"CREATE TABLE {name} ({ddl}, caption text)")
    for k in keys:
        conn.execute(f"INSERT INTO {name} VALUES ({k}, 'c')")
    mmr.create_collection(conn, name, name, text_columns=["caption"])
    mmr.add_space(conn, name, "ext", "external", None, 4)
    first = (
        {"a": 1, "b": "x"}
        if isinstance(expect_key, dict)
        else (
            1
            if isinstance(expect_key, int)
            else ("a" if expect_key == "b" else "00000000-0000-0000-0000-000000000001")
        )
    )
    mmr.put_embeddings(conn, name, "ext", [first, expect_key], [[1, 0, 0, 0], [0, 1, 0, 0]])
    hits = mmr.search(conn, name, "ext", [0, 1, 0, 0], k=1)
    assert hits[0].key == expect_key
    # the key from search joins back to the row
    row = conn.execute(
        f"SELECT count(*) FROM {name} t JOIN mmr.search(%s, 'ext', '[0,1,0,0]', 1) s "
        f"ON to_jsonb(t) @> CASE WHEN jsonb_typeof(s.key) = 'object' THEN s.key "
        f"ELSE jsonb_build_object('id', s.key) END",
        (name,),
    ).fetchone()
    assert row == (1,)


def test_collection_view_joins_rows_and_uses_hnsw_with_is_not_null(
    conn: psycopg.Connection[Any], products: str
) -> None:
    mmr.create_collection(conn, products, products, text_columns=["caption"])
    mmr.add_space(conn, products, "ext", "external", None, 8)
    mmr.put_embeddings(conn, products, "ext", list(range(1, 21)), unit_vectors(20, 8))
    rows = conn.execute(
        f"SELECT id FROM {products}_mmr WHERE price < 10 AND ext IS NOT NULL "
        "ORDER BY ext <=> %s::vector LIMIT 3",
        (str(unit_vectors(20, 8)[4].tolist()),),
    ).fetchall()
    assert rows[0] == (5,)
    conn.execute("SET enable_seqscan = off")  # tiny table: make the planner show its index path
    try:
        plan = conn.execute(
            f"EXPLAIN (FORMAT JSON) SELECT id FROM {products}_mmr WHERE ext IS NOT NULL "
            "ORDER BY ext <=> %s::vector LIMIT 3",
            (str(unit_vectors(20, 8)[4].tolist()),),
        ).fetchone()[0]  # type: ignore[index]
    finally:
        conn.execute("RESET enable_seqscan")
    assert uses_hnsw(plan)


def test_drop_collection_removes_everything_but_the_table(
    conn: psycopg.Connection[Any], products: str
) -> None:
    mmr.create_collection(conn, products, products, text_columns=["caption"])
    table = mmr.add_space(conn, products, "cap", "mmr-test", "caption", 32)
    mmr.drop_collection(conn, products)
    assert conn.execute("SELECT to_regclass(%s)", (table,)).fetchone() == (None,)
    assert conn.execute("SELECT to_regclass(%s)", (products + "_mmr",)).fetchone() == (None,)
    assert conn.execute(
        "SELECT count(*) FROM pg_trigger WHERE tgrelid = %s::regclass AND NOT tgisinternal",
        (products,),
    ).fetchone() == (0,)
    conn.execute(f"INSERT INTO {products} VALUES (100, 'still works', NULL, 1)")
    assert mmr.list_collections(conn) == [] or products not in [
        c["collection"] for c in mmr.list_collections(conn)
    ]


def test_shadow_version_and_switch(conn: psycopg.Connection[Any], products: str) -> None:
    mmr.create_collection(conn, products, products, text_columns=["caption"])
    mmr.add_space(conn, products, "cap", "mmr-test", "caption", 32)
    with pytest.raises(InputError, match="already exists"):
        mmr.add_space(conn, products, "cap", "mmr-test", "caption", 32)
    # an encoder only a remote worker has: declared, then accepted
    conn.execute("SELECT mmr.declare_encoder('other', 16, '{text}')")
    v2 = mmr.add_space(conn, products, "cap", "other", "caption", 16, new_version=True)
    spaces = {(s["version"], s["active"]) for s in mmr.list_spaces(conn, products)}
    assert spaces == {(1, True), (2, False)}
    with pytest.raises(InputError, match="still filling"):
        mmr.switch_space(conn, products, "cap")
    mmr.switch_space(conn, products, "cap", force=True)
    spaces = {(s["version"], s["active"]) for s in mmr.list_spaces(conn, products)}
    assert spaces == {(1, False), (2, True)}
    active = next(s for s in mmr.list_spaces(conn, products) if s["active"])
    assert active["embedding_table"] == v2
    mmr.drop_space(conn, products, "cap", 1)
    assert [s["version"] for s in mmr.list_spaces(conn, products)] == [2]


# ----- bad input: clear errors, nothing changed --------------------------------------------


def _collections(conn: psycopg.Connection[Any]) -> list[str]:
    return [r[0] for r in conn.execute("SELECT collection FROM mmr.collections")]


def test_bad_input_to_create_collection(conn: psycopg.Connection[Any], products: str) -> None:
    before = _collections(conn)
    conn.execute("CREATE TABLE nokey_t (id int, caption text)")
    cases: list[tuple[dict[str, Any], str]] = [
        ({"source": "nokey_t"}, "has no primary key"),
        ({"source": products, "text_columns": ["nope"]}, "has no column"),
        ({"source": products, "text_columns": ["price"]}, "not supported"),
        ({"source": products, "image_column": "price"}, "not supported"),
        ({"source": products, "image_column": "caption", "image_kind": "bytea"}, "not valid"),
        ({"source": products, "text_columns": ["caption", "caption"]}, "twice"),
        ({"source": products, "image_kind": "url"}, "image_column is not"),
    ]
    for kwargs, message in cases:
        with pytest.raises(InputError, match=message):
            mmr.create_collection(conn, "bad", **kwargs)
    with pytest.raises(NotFoundError, match="does not exist"):
        mmr.create_collection(conn, "bad", "no_such_table")
    with pytest.raises(InputError, match="must not be empty"):
        mmr.create_collection(conn, "", products)
    mmr.create_collection(conn, "dup", products, text_columns=["caption"], view_name="dup_v")
    with pytest.raises(InputError, match="already exists"):
        mmr.create_collection(conn, "dup", products, text_columns=["caption"])
    with pytest.raises(InputError, match="already exists"):  # the view name is taken
        mmr.create_collection(conn, "dup2", products, view_name="dup_v")
    assert sorted(_collections(conn)) == sorted([*before, "dup"])


def test_bad_input_to_add_space(conn: psycopg.Connection[Any], products: str) -> None:
    mmr.create_collection(conn, products, products, text_columns=["caption"])
    cases: list[tuple[tuple[Any, ...], dict[str, Any], type[Exception], str]] = [
        (("nope", "s", "mmr-test", "caption", 32), {}, NotFoundError, "does not exist"),
        ((products, "s", "mmr-test", "price", 32), {}, InputError, "not a content column"),
        ((products, "s", "mmr-test", "nope", 32), {}, InputError, "has no column"),
        ((products, "s", "mmr-test", None, 32), {}, InputError, "source_column must be given"),
        ((products, "s", "", "caption", 32), {}, InputError, "encoder must not be empty"),
        ((products, "s", "mmr-test", "caption", 0), {}, InputError, "dimensions"),
        ((products, "s", "mmr-test", "caption", 2001), {}, InputError, "halfvec"),
        ((products, "s", "mmr-test", "caption", 32), {"distance": "dot"}, InputError, "distance"),
        ((products, "s", "mmr-test", "caption", 32), {"storage": "int8"}, InputError, "storage"),
        ((products, "price", "mmr-test", "caption", 32), {}, InputError, "also a column"),
        ((products, "s", "mmr-test", "caption", 32), {"hnsw_m": 1}, InputError, "HNSW"),
    ]
    for args, kwargs, exc, message in cases:
        with pytest.raises(exc, match=message):
            mmr.add_space(conn, *args, **kwargs)
    assert mmr.list_spaces(conn, products) == []
    # halfvec allows more dimensions
    mmr.add_space(conn, products, "wide", "external", None, 3000, storage="halfvec")


def test_put_embeddings_rejects_bad_vectors_and_keys(
    conn: psycopg.Connection[Any], products: str
) -> None:
    mmr.create_collection(conn, products, products, text_columns=["caption"])
    table = mmr.add_space(conn, products, "ext", "external", None, 4)
    mmr.add_space(conn, products, "cap", "mmr-test", "caption", 32)
    cases: list[tuple[list[Any], list[list[float]], str]] = [
        ([1], [[1, 2, 3]], "has 3 dimensions, but the space has 4"),
        ([1], [[0, 0, 0, 0]], "zero vector"),
        ([999], [[1, 0, 0, 0]], "no row"),
        ([1, 1], [[1, 0, 0, 0], [0, 1, 0, 0]], "more than once"),
        # the same row spelled as a number and as a string: one key, named with its item
        ([1, "1"], [[1, 0, 0, 0], [0, 1, 0, 0]], r"key 1 appears more than once \(item 2 "),
        ([2, 1, "2"], [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]], r"key 2 .*item 3 "),
        ([1, 2], [[1, 0, 0, 0]], "same length"),
    ]
    for keys, vecs, message in cases:
        with pytest.raises(InputError, match=message):
            mmr.put_embeddings(conn, products, "ext", keys, vecs)
    with pytest.raises(InputError, match="not by the application"):
        mmr.put_embeddings(conn, products, "cap", [1], [[1.0] * 32])
    with pytest.raises(psycopg.errors.DataException):  # pgvector refuses NaN at parse time
        conn.execute("SELECT '[NaN, 1, 1, 1]'::vector")
    assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,)
    # composite-key JSON with a missing field is a clear error too
    conn.execute("CREATE TABLE comp_t (a int, b int, c text, PRIMARY KEY (a, b))")
    conn.execute("INSERT INTO comp_t VALUES (1, 2, 'x')")
    mmr.create_collection(conn, "comp", "comp_t", text_columns=["c"])
    mmr.add_space(conn, "comp", "ext", "external", None, 2)
    with pytest.raises(InputError, match="no row"):
        mmr.put_embeddings(conn, "comp", "ext", [{"a": 1}], [[1, 0]])
    with pytest.raises(InputError, match=r"appears more than once \(item 2 "):
        mmr.put_embeddings(
            conn, "comp", "ext", [{"a": 1, "b": 2}, {"a": "1", "b": 2}], [[1, 0]] * 2
        )
    assert mmr.put_embeddings(conn, "comp", "ext", [{"a": 1, "b": 2}], [[1, 0]]) == 1


@pytest.mark.parametrize(
    "call",
    [
        calls.CREATE_COLLECTION,
        calls.ADD_SPACE,
        calls.SWITCH_SPACE,
        calls.DROP_SPACE,
        calls.DROP_COLLECTION,
        calls.PUT_EMBEDDINGS,
    ],
    ids=lambda c: c.function,
)
def test_sql_calls_name_the_functions_arguments(
    conn: psycopg.Connection[Any], call: calls.Call
) -> None:
    # the one module of SQL API calls passes every argument in the function's own order
    found = conn.execute(
        "SELECT p.proargnames[1:p.pronargs], "
        "ARRAY(SELECT format_type(t, NULL) FROM unnest(p.proargtypes) t) "
        "FROM pg_proc p WHERE p.pronamespace = 'mmr'::regnamespace AND p.proname = %s",
        (call.function,),
    ).fetchall()
    assert len(found) == 1, f"mmr.{call.function} has {len(found)} signatures"
    names, types = found[0]
    assert call.names == tuple(names[: len(call.args)])
    for arg, typ in zip(call.args, types, strict=False):
        if arg.cast is not None:
            assert typ.endswith(arg.cast.replace("int", "integer")), (arg, typ)
    assert call.psycopg().startswith(f"SELECT mmr.{call.function}(%({call.names[0]})s")
    assert ":" + call.names[-1] in call.sqlalchemy()
