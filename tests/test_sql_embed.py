"""mmr.embed: encoding inside PostgreSQL (PL/Python), and every search composing with it.

The shapes world (the committed shapes-clip model) is embedded by the worker as mmr_worker;
every query below is a SQL statement only.  Skipped as a whole when the server has no PL/Python
(`make test` installs it into the embedded server: `mmr server install-plpython`); the
no-PL/Python error is tested on any server.
"""

from __future__ import annotations

import http.server
import io
import json
import threading
from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
import psycopg
import pytest

from pg_mmretrieval import db, install
from pg_mmretrieval.demo import _create_table
from pg_mmretrieval.worker import Worker, WorkerConfig
from tests.helpers import plan_nodes, uses_hnsw, worker_url

C = "demo_shapes"
N = 60


def _has_plpython(url: str) -> bool:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_proc WHERE proname = '_embed_py' "
            "AND pronamespace = 'mmr'::regnamespace)"
        ).fetchone()
    return bool(row and row[0])


@pytest.fixture(scope="module")
def world(db_url: str) -> str:
    if not _has_plpython(db_url):
        pytest.skip("no PL/Python on this server (make plpython installs it in the embedded one)")
    with db.connect(db_url, autocommit=True) as conn:
        _create_table(conn, N)
        conn.execute(
            "SELECT mmr.create_collection(%s, %s, image_column => 'image', "
            "text_columns => ARRAY['caption'])",
            (C, C),
        )
        conn.execute(f"SELECT mmr.add_space('{C}', 'clip_image', 'shapes-clip', 'image', 128)")
        conn.execute(f"SELECT mmr.add_space('{C}', 'clip_caption', 'shapes-clip', 'caption', 128)")
        conn.execute(f"SELECT mmr.create_text_index('{C}')")
    Worker(worker_url(db_url), WorkerConfig(collections=(C,), once=True)).run()
    return db_url


@pytest.fixture()
def sql(world: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(world, autocommit=True) as c:
        yield c


def _keys(conn: psycopg.Connection[Any], query: str, params: Any = None) -> list[int]:
    return [int(r[0]) for r in conn.execute(query, params).fetchall()]


def _error(conn: psycopg.Connection[Any], query: str, params: Any = None) -> psycopg.Error:
    with pytest.raises(psycopg.Error) as info:
        conn.execute(query, params)
    return info.value


def test_dimensions_match_the_model(sql: psycopg.Connection[Any]) -> None:
    row = sql.execute(
        f"SELECT vector_dims(mmr.embed('{C}', 'clip_image', 'a red circle'))"
    ).fetchone()
    assert row is not None and row[0] == 128


def test_text_to_image(sql: psycopg.Connection[Any]) -> None:
    keys = _keys(
        sql,
        f"SELECT (key)::int FROM mmr.search('{C}', 'clip_image', "
        f"mmr.embed('{C}', 'clip_image', 'a large red circle in the center'), k => 3)",
    )
    assert 1 in keys


def test_image_to_image_with_the_bytes_of_a_stored_image(sql: psycopg.Connection[Any]) -> None:
    keys = _keys(
        sql,
        f"SELECT (key)::int FROM mmr.search('{C}', 'clip_image', mmr.embed('{C}', 'clip_image', "
        f"(SELECT image FROM {C} WHERE id = 3)), k => 3)",
    )
    assert keys[0] == 3


def test_composed_by_key_with_a_text_modifier(sql: psycopg.Connection[Any]) -> None:
    keys = _keys(
        sql,
        f"SELECT (key)::int FROM mmr.composed_search('{C}', 'clip_image', '1'::jsonb, "
        f"mmr.embed('{C}', 'clip_image', 'make it blue'), 'weighted', k => 6)",
    )
    assert 1 not in keys
    assert 2 in keys[:3]


def test_hybrid_embeds_the_query_text_for_each_space(sql: psycopg.Connection[Any]) -> None:
    auto = sql.execute(
        f"SELECT (key)::int, score FROM mmr.hybrid_search('{C}', 'green triangle', "
        "spaces => ARRAY['clip_image', 'clip_caption'], k => 6)"
    ).fetchall()
    given = sql.execute(
        f"SELECT (key)::int, score FROM mmr.hybrid_search('{C}', 'green triangle', "
        "spaces => ARRAY['clip_image', 'clip_caption'], "
        f"vectors => ARRAY[mmr.embed('{C}', 'clip_image', 'green triangle'), "
        f"mmr.embed('{C}', 'clip_caption', 'green triangle')], k => 6)"
    ).fetchall()
    assert [k for k, _ in auto] == [k for k, _ in given]
    assert 4 in [k for k, _ in auto][:3]  # row 4 is the large green triangle


def test_caption_legs_from_texts(sql: psycopg.Connection[Any]) -> None:
    caption = sql.execute(f"SELECT caption FROM {C} WHERE id = 1").fetchone()
    assert caption is not None
    by_text = _keys(
        sql,
        f"SELECT (key)::int FROM mmr.composed_search('{C}', 'clip_image', '1'::jsonb, "
        f"mmr.embed('{C}', 'clip_image', 'make it blue'), 'weimocir', k => 6, "
        "params => jsonb_build_object('caption_spaces', jsonb_build_array('clip_caption'), "
        "'reference_captions', jsonb_build_array(%s::text)))",
        (caption[0],),
    )
    by_vector = _keys(
        sql,
        f"SELECT (key)::int FROM mmr.composed_search('{C}', 'clip_image', '1'::jsonb, "
        f"mmr.embed('{C}', 'clip_image', 'make it blue'), 'weimocir', k => 6, "
        "params => jsonb_build_object('caption_spaces', jsonb_build_array('clip_caption'), "
        f"'reference_captions', jsonb_build_array(mmr.embed('{C}', 'clip_caption', %s::text)"
        "::text::jsonb)))",
        (caption[0],),
    )
    assert by_text == by_vector and 2 in by_text[:3]
    pdv = _keys(
        sql,
        f"SELECT (key)::int FROM mmr.composed_search('{C}', 'clip_image', '1'::jsonb, "
        f"mmr.embed('{C}', 'clip_image', 'make it blue'), 'pdv', k => 6, "
        "params => jsonb_build_object('reference_caption', %s::text))",
        (caption[0],),
    )
    pdv_vector = _keys(
        sql,
        f"SELECT (key)::int FROM mmr.composed_search('{C}', 'clip_image', '1'::jsonb, "
        f"mmr.embed('{C}', 'clip_image', 'make it blue'), 'pdv', k => 6, "
        "params => jsonb_build_object('reference_caption', "
        f"mmr.embed('{C}', 'clip_image', %s::text)::text::jsonb))",
        (caption[0],),
    )
    assert pdv == pdv_vector and len(pdv) == 6


def test_embed_equals_the_workers_stored_embeddings(sql: psycopg.Connection[Any]) -> None:
    for space, column in (("clip_caption", "caption"), ("clip_image", "image")):
        row = sql.execute(
            "SELECT embedding_table::text FROM mmr._space s JOIN mmr._collection c "
            "ON c.id = s.collection_id WHERE c.name = %s AND s.name = %s AND s.active",
            (C, space),
        ).fetchone()
        assert row is not None
        cos = sql.execute(
            f"SELECT min(1 - (e.embedding <=> mmr.embed('{C}', '{space}', t.{column}))) "
            f"FROM {C} t JOIN {row[0]} e ON e.id = t.id WHERE t.id <= 8"
        ).fetchone()
        assert cos is not None and cos[0] >= 0.99999, (space, cos)


def test_one_encode_per_statement_and_the_index_scan_stays(sql: psycopg.Connection[Any]) -> None:
    sql.execute("SET track_functions = 'all'")

    def calls() -> int:
        sql.execute("SELECT pg_stat_clear_snapshot()")
        row = sql.execute(
            "SELECT coalesce(sum(calls), 0) FROM pg_stat_user_functions "
            "WHERE schemaname = 'mmr' AND funcname = 'embed'"
        ).fetchone()
        return int(row[0]) if row else 0

    sql.execute("SELECT pg_stat_force_next_flush()")
    before = calls()
    sql.execute(
        f"SELECT * FROM mmr.search('{C}', 'clip_image', "
        f"mmr.embed('{C}', 'clip_image', 'a red circle'), k => 5)"
    ).fetchall()
    sql.execute("SELECT pg_stat_force_next_flush()")
    assert calls() == before + 1
    table = sql.execute(
        "SELECT embedding_table::text FROM mmr._space WHERE name = 'clip_image' AND active"
    ).fetchone()
    assert table is not None
    # 60 rows: a sequential scan would be cheaper; what matters is that the index can serve
    # the statement (mmr.embed is STABLE: evaluated once, an index scan key)
    sql.execute("SET enable_seqscan = off")
    plan = sql.execute(
        f"EXPLAIN (FORMAT JSON) SELECT id FROM {table[0]} "
        f"ORDER BY embedding <=> mmr.embed('{C}', 'clip_image', 'a red circle') LIMIT 5"
    ).fetchone()
    assert plan is not None
    assert any(
        n.get("Node Type") == "Index Scan" and "Order By" in n for n in plan_nodes(plan[0])
    ), plan
    explained = sql.execute(
        f"SELECT mmr.explain_search('{C}', 'clip_image', "
        f"mmr.embed('{C}', 'clip_image', 'a red circle'), k => 5)"
    ).fetchone()
    assert explained is not None and uses_hnsw(explained[0]), explained
    sql.execute("RESET enable_seqscan")


def test_eight_concurrent_backends_give_the_same_vectors(world: str) -> None:
    texts = ["a red circle", "two small yellow stars at the top", "make it blue", "a square"]
    with psycopg.connect(world) as conn:
        image = conn.execute(f"SELECT image FROM {C} WHERE id = 5").fetchone()
        assert image is not None
        expected = [
            conn.execute(f"SELECT mmr.embed('{C}', 'clip_image', %s)::text", (t,)).fetchone()
            for t in texts
        ]
        expected.append(
            conn.execute(
                f"SELECT mmr.embed('{C}', 'clip_image', %s::bytea)::text", (image[0],)
            ).fetchone()
        )
    results: dict[int, list[Any]] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def run(i: int) -> None:
        try:
            with psycopg.connect(world) as c:
                c.execute("SELECT 1")
                start.wait(timeout=60)
                got = [
                    c.execute(f"SELECT mmr.embed('{C}', 'clip_image', %s)::text", (t,)).fetchone()
                    for t in texts
                ]
                got.append(
                    c.execute(
                        f"SELECT mmr.embed('{C}', 'clip_image', %s::bytea)::text", (image[0],)
                    ).fetchone()
                )
                results[i] = got
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors, errors
    assert len(results) == 8
    ref = np.array([json.loads(r[0]) for r in expected])
    for got in results.values():
        vecs = np.array([json.loads(r[0]) for r in got])
        assert np.allclose(vecs, ref, atol=1e-6)


def _png(width: int, height: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("1", (width, height)).save(buf, format="PNG")
    return buf.getvalue()


def test_bad_inputs_get_a_sqlstate_and_a_hint(sql: psycopg.Connection[Any]) -> None:
    sql.execute(f"SELECT mmr.add_space('{C}', 'ext', 'external', NULL, 3, backfill => false)")
    sql.execute(
        f"SELECT mmr.add_space('{C}', 'words', 'minilm', 'caption', 384, backfill => false)"
    )
    cases: list[tuple[str, Any, str]] = [
        ("SELECT mmr.embed('nope', 'clip_image', 'x')", None, "42704"),
        (f"SELECT mmr.embed('{C}', 'nope', 'x')", None, "42704"),
        (f"SELECT mmr.embed('{C}', 'ext', 'x')", None, "55000"),
        (f"SELECT mmr.embed('{C}', 'words', %s::bytea)", (_png(8, 8),), "42809"),
        (f"SELECT mmr.embed('{C}', 'clip_image', '   ')", None, "22023"),
        (f"SELECT mmr.embed('{C}', 'clip_image', ''::bytea)", None, "22023"),
        (f"SELECT mmr.embed('{C}', 'clip_image', %s::bytea)", (b"not an image",), "22023"),
        (f"SELECT mmr.embed('{C}', 'clip_image', %s::text)", ("x" * 100_001,), "54000"),
        (f"SELECT mmr.embed('{C}', 'clip_image', %s::bytea)", (_png(9000, 9000),), "54000"),
    ]
    for query, params, state in cases:
        err = _error(sql, query, params)
        assert err.sqlstate == state, (query, err.sqlstate, str(err))
        assert err.diag.message_hint, query
        assert "Traceback" not in (err.diag.message_primary or ""), query
    row = sql.execute(f"SELECT mmr.embed('{C}', 'clip_image', NULL::text) IS NULL").fetchone()
    assert row is not None and row[0] is True


def test_settings_are_bounded_and_the_service_is_the_administrators(
    sql: psycopg.Connection[Any],
) -> None:
    sql.execute("SET mmr.embed_threads = 99")
    assert _error(sql, f"SELECT mmr.embed('{C}', 'clip_image', 'x')").sqlstate == "22023"
    sql.execute("SET mmr.embed_threads = 2")
    assert sql.execute(f"SELECT mmr.embed('{C}', 'clip_image', 'x') IS NOT NULL").fetchone()
    sql.execute("SET mmr.encoder_url = 'http://169.254.169.254'")
    err = _error(sql, f"SELECT mmr.embed('{C}', 'clip_image', 'x')")
    assert err.sqlstate == "42501" and "ALTER DATABASE" in (err.diag.message_hint or "")


def test_a_role_that_may_not_read_the_column_may_not_encode(world: str) -> None:
    with psycopg.connect(world, autocommit=True) as admin:
        admin.execute("DROP ROLE IF EXISTS embed_stranger")
        admin.execute("CREATE ROLE embed_stranger LOGIN")
        try:
            with psycopg.connect(db.with_user(world, "embed_stranger")) as stranger:
                err = _error(stranger, f"SELECT mmr.embed('{C}', 'clip_image', 'x')")
                assert err.sqlstate == "42501"
                assert "GRANT SELECT (image)" in (err.diag.message_hint or "")
            admin.execute(f"GRANT SELECT (image) ON {C} TO embed_stranger")
            with psycopg.connect(db.with_user(world, "embed_stranger")) as stranger:
                row = stranger.execute(
                    f"SELECT vector_dims(mmr.embed('{C}', 'clip_image', 'x'))"
                ).fetchone()
                assert row is not None and row[0] == 128
        finally:
            admin.execute(f"REVOKE ALL ON {C} FROM embed_stranger")
            admin.execute("DROP OWNED BY embed_stranger")
            admin.execute("DROP ROLE embed_stranger")


class _Stub(http.server.BaseHTTPRequestHandler):
    seen: ClassVar[list[tuple[dict[str, Any], str | None]]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Stub.seen.append((body, self.headers.get("Authorization")))
        if body.get("text") == "fail":
            self._send(422, {"error": "the service refused it", "hint": "ask the service"})
        elif self.path != "/v1/embed":
            self._send(404, {"error": "no such path", "hint": "POST /v1/embed"})
        else:
            vec = [1.0] + [0.0] * 127
            self._send(
                200,
                {"vector": vec, "dimensions": 128, "encoder": "shapes-clip", "model_id": "stub"},
            )

    def _send(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


def test_delegation_to_an_encoder_service(world: str) -> None:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    dbname = world.split("?")[0].rsplit("/", 1)[1]
    url = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        with psycopg.connect(world, autocommit=True) as admin:
            admin.execute(
                f'ALTER DATABASE "{dbname}" SET mmr.encoder_url = %s'.replace("%s", f"'{url}'")
            )
            admin.execute(f"ALTER DATABASE \"{dbname}\" SET mmr.encoder_token = 's3cret'")
        with psycopg.connect(world, autocommit=True) as conn:
            row = conn.execute(
                f"SELECT mmr.embed('{C}', 'clip_image', 'a red circle')::text"
            ).fetchone()
            assert row is not None and json.loads(row[0]) == [1.0] + [0.0] * 127
            body, auth = _Stub.seen[-1]
            assert body == {"collection": C, "space": "clip_image", "text": "a red circle"}
            assert auth == "Bearer s3cret"
            image = conn.execute(f"SELECT image FROM {C} WHERE id = 1").fetchone()
            assert image is not None
            conn.execute(f"SELECT mmr.embed('{C}', 'clip_image', %s::bytea)", (image[0],))
            assert "image_base64" in _Stub.seen[-1][0]
            err = _error(conn, f"SELECT mmr.embed('{C}', 'clip_image', 'fail')")
            assert err.sqlstate == "22023"
            assert "the service refused it" in str(err)
            assert err.diag.message_hint == "ask the service"
            keys = _keys(
                conn,
                f"SELECT (key)::int FROM mmr.search('{C}', 'clip_image', "
                f"mmr.embed('{C}', 'clip_image', 'anything'), k => 2)",
            )
            assert len(keys) == 2
        httpd.shutdown()
        with psycopg.connect(world, autocommit=True) as conn:
            err = _error(conn, f"SELECT mmr.embed('{C}', 'clip_image', 'x')")
            assert err.sqlstate == "08001" and "mmr serve" in (err.diag.message_hint or "")
    finally:
        httpd.shutdown()
        httpd.server_close()
        with psycopg.connect(world, autocommit=True) as admin:
            admin.execute(f'ALTER DATABASE "{dbname}" RESET mmr.encoder_url')
            admin.execute(f'ALTER DATABASE "{dbname}" RESET mmr.encoder_token')


def test_without_plpython_embed_says_what_to_do_and_the_rest_works(empty_db_url: str) -> None:
    dbname = empty_db_url.split("?")[0].rsplit("/", 1)[1]
    with psycopg.connect(empty_db_url, autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{dbname}" SET mmr.install_plpython = off')
    install.upgrade(empty_db_url)
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        err = _error(conn, "SELECT mmr.embed('c', 's', 'a red circle')")
        assert err.sqlstate == "0A000"
        hint = err.diag.message_hint or ""
        for alternative in ("vector", "Collection.search", "mmr serve", "install-plpython"):
            assert alternative in hint, (alternative, hint)
        assert _error(conn, "SELECT mmr.embed('c', 's', '\\x00'::bytea)").sqlstate == "0A000"
        conn.execute("CREATE TABLE t (id int PRIMARY KEY, body text)")
        conn.execute("INSERT INTO t VALUES (1, 'a'), (2, 'b')")
        conn.execute("SELECT mmr.create_collection('t', 't')")
        conn.execute("SELECT mmr.add_space('t', 'v', 'external', NULL, 3)")
        conn.execute(
            "SELECT mmr.put_embeddings('t', 'v', ARRAY['1', '2']::jsonb[], "
            "ARRAY['[1,0,0]', '[0,1,0]']::vector[])"
        )
        keys = _keys(conn, "SELECT (key)::int FROM mmr.search('t', 'v', '[1,0.1,0]', k => 1)")
        assert keys == [1]


def test_pythonhome_is_set_for_server_starts_only(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from pg_mmretrieval import plpython

    if not plpython.installed():
        pytest.skip("PL/Python is not installed in the embedded server")
    monkeypatch.setenv("PYTHONPATH", "/somewhere")
    monkeypatch.delenv("PYTHONHOME", raising=False)
    with plpython.server_environment():
        assert os.environ["PYTHONHOME"] == plpython.python_home()
        assert "PYTHONPATH" not in os.environ
    assert "PYTHONHOME" not in os.environ and os.environ["PYTHONPATH"] == "/somewhere"
