"""Issue 15, item 5: search on a read replica, proven on a real streaming hot standby.

The module starts a hot standby of the tests' embedded server (``pg_mmretrieval.standby``:
pg_basebackup -R, 127.0.0.1, a free port) after the primary holds a collection embedded by the
worker, and removes it at the end.  Every search function is called on the standby and must
answer exactly as on the primary; a row inserted on the primary becomes searchable on the
standby once the worker (on the primary) has embedded it and the standby has replayed the WAL.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np
import psycopg
import pytest
from psycopg.types.json import Jsonb

import pg_mmretrieval as mmr
from pg_mmretrieval import db, install, retrieval, standby
from pg_mmretrieval.encoders import get_encoder
from pg_mmretrieval.errors import ConfigError
from pg_mmretrieval.worker import Worker, WorkerConfig

from .helpers import worker_url

Conn = psycopg.Connection[Any]
N = 60
READ_ONLY = "25006"  # read_only_sql_transaction


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _vec(text: str) -> list[float]:
    return [float(x) for x in next(get_encoder("mmr-test").embed_batch([text]))]


def _drain(db_url: str) -> None:
    stats = Worker(worker_url(db_url), WorkerConfig(collections=("docs",), once=True)).run()
    assert stats.dead == 0


def _on_standby(db_url: str, port: int) -> str:
    """``db_url``'s database on the standby (TCP, 127.0.0.1:port)."""
    name = re.sub(r"\?.*$", "", db_url).rsplit("/", 1)[1]
    return f"postgresql://postgres@127.0.0.1:{port}/{name}"


@pytest.fixture(scope="module")
def replica(db_url: str) -> Iterator[tuple[str, int]]:
    """(standby URL of the module's database, port): a collection 'docs' of N rows, spaces 'a'
    (body) and 'b' (caption) embedded by the worker with mmr-test, a text index, a
    multi-vector space and a BASIC projection, all written on the primary."""
    if os.environ.get("MMR_DATABASE_URL"):
        pytest.skip("the standby is one of the embedded server; MMR_DATABASE_URL is set")
    with mmr.connect(db_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text, caption text, tag text)")
        conn.execute(
            "INSERT INTO docs SELECT g, 'body of item ' || g, 'caption word' || g, "
            f"CASE WHEN g % 2 = 0 THEN 'even' ELSE 'odd' END FROM generate_series(0, {N - 1}) g"
        )
        mmr.create_collection(conn, "docs", "docs", text_columns=["body", "caption"])
        mmr.add_space(conn, "docs", "a", "mmr-test", "body", 32)
        mmr.add_space(conn, "docs", "b", "mmr-test", "caption", 32)
        _drain(db_url)
        retrieval.create_text_index(conn, "docs")
        retrieval.add_multivector_space(conn, "docs", "mv", 32)
        for i in range(N):
            parts = np.array([_vec(f"body of item {i}"), _vec(f"part {i}")], dtype=np.float32)
            retrieval.put_multivectors(conn, "docs", "mv", i, parts)
        a = np.array([_vec(f"body of item {i}") for i in range(40)], dtype=np.float32)
        basis, mu_t = retrieval.basic_projection(a[:20], a[20:])
        retrieval.store_basic_projection(conn, "docs", "a", basis, mu_t)
    port = _free_port()
    try:
        standby.start(port)
        url = _on_standby(db_url, port)
        standby.wait_for_replay(db_url, url)
        yield url, port
    finally:
        standby.stop(port, remove=True)


@pytest.fixture()
def sconn(replica: tuple[str, int]) -> Iterator[Conn]:
    with db.connect(replica[0], autocommit=True) as c:
        yield c


Q = "body of item 7"
KEY = Jsonb(7)
FILTER = Jsonb({"tag": "odd"})

# (name, statement, parameters): every search function, read-only.
CALLS: list[tuple[str, str, tuple[Any, ...]]] = [
    ("search", "SELECT * FROM mmr.search('docs', 'a', %s::vector, 5)", (Q,)),
    ("search filtered", "SELECT * FROM mmr.search('docs', 'a', %s::vector, 5, %s)", (Q, FILTER)),
    (
        "search_batch",
        "SELECT * FROM mmr.search_batch('docs', 'a', ARRAY[%s::vector, %s::vector], 3)",
        (Q, "body of item 9"),
    ),
    ("hybrid_search", "SELECT * FROM mmr.hybrid_search('docs', 'caption word7', k => 5)", ()),
    (
        "hybrid_search with vector legs",
        "SELECT * FROM mmr.hybrid_search('docs', 'caption word7', '{a,b}', "
        "ARRAY[%s::vector, %s::vector], 5)",
        (Q, "caption word7"),
    ),
    (
        "hybrid_search filtered",
        "SELECT * FROM mmr.hybrid_search('docs', 'caption word7', '{a}', ARRAY[%s::vector], 5, "
        "filter => %s)",
        (Q, FILTER),
    ),
    (
        "rocchio_search",
        "SELECT * FROM mmr.rocchio_search('docs', 'a', %s::vector, 5, %s)",
        (Q, Jsonb({"relevant": [7, 9], "nonrelevant": [3]})),
    ),
    ("mmr_search", "SELECT * FROM mmr.mmr_search('docs', 'a', %s::vector, 5, 0.5, 20)", (Q,)),
    (
        "dialog_search",
        "SELECT * FROM mmr.dialog_search('docs', 'a', ARRAY[%s::vector, %s::vector], 5)",
        (Q, "body of item 8"),
    ),
    (
        "multivector_search",
        "SELECT * FROM mmr.multivector_search('docs', 'mv', ARRAY[%s::vector, %s::vector], 5)",
        (Q, "part 7"),
    ),
    *[
        (
            f"search rerank {name}",
            "SELECT * FROM mmr.search('docs', 'a', %s::vector, 5, rerank => %s, "
            "rerank_params => %s)",
            (Q, name, params),
        )
        for name, params in (
            ("exact", None),
            ("caption", Jsonb({"caption_space": "b"})),
            ("mmr", Jsonb({"lambda": 0.7})),
        )
    ],
]

# composed methods: (method, params by vector, params by the stored reference's key)
_CAP = _vec("caption word7")
METHODS: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("image_only", {}, {}),
    ("text_only", {}, {}),
    ("weighted", {}, {}),
    ("slerp", {}, {}),
    ("pdv", {"reference_caption": _CAP}, {"caption_space": "b"}),
    ("score_sum", {}, {}),
    ("product", {}, {}),
    ("weimocir", {"caption_space": "b", "reference_captions": [_CAP]}, {"caption_space": "b"}),
    ("basic", {}, {}),
    ("gqr", {}, {}),
]
for _m, _by_vector, _by_key in METHODS:
    CALLS.append(
        (
            f"composed {_m} by vector",
            "SELECT * FROM mmr.composed_search('docs', 'a', %s::vector, %s::vector, %s, 5, %s)",
            (Q, "caption word3", _m, Jsonb(_by_vector)),
        )
    )
    CALLS.append(
        (
            f"composed {_m} by key",
            "SELECT * FROM mmr.composed_search('docs', 'a', %s, %s::vector, %s, 5, %s)",
            (KEY, "caption word3", _m, Jsonb(_by_key)),
        )
    )
CALLS.append(
    (
        "composed weighted filtered, reranked",
        "SELECT * FROM mmr.composed_search('docs', 'a', %s::vector, %s::vector, 'weighted', 5, "
        "'{}', %s, rerank => 'exact')",
        (Q, "caption word3", FILTER),
    )
)


def _args(params: tuple[Any, ...]) -> tuple[Any, ...]:
    # query texts become their mmr-test vectors (the same on both servers)
    def one(p: Any) -> Any:
        if isinstance(p, str) and (p.startswith(("body", "caption word", "part"))):
            return str(_vec(p))
        return p

    return tuple(one(p) for p in params)


def test_it_is_a_real_hot_standby(sconn: Conn, db_url: str, replica: tuple[str, int]) -> None:
    assert sconn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)
    row = sconn.execute("SHOW transaction_read_only").fetchone()
    assert row == ("on",)
    with pytest.raises(psycopg.Error) as e:
        sconn.execute("INSERT INTO docs VALUES (1000, 'x', 'y', 'odd')")
    assert e.value.sqlstate == READ_ONLY
    with db.connect(db_url) as p:
        sent = p.execute("SELECT count(*) FROM pg_stat_replication").fetchone()
    assert sent is not None and sent[0] >= 1  # the primary streams to it


@pytest.fixture(scope="module", params=["native", "plpgsql"])
def binding(db_url: str, replica: tuple[str, int], request: pytest.FixtureRequest) -> Iterator[str]:
    """mmr.search / mmr.composed_search bound to the native module or to the PL/pgSQL reference
    functions (089-native.sql), switched on the primary and replayed on the standby."""
    with db.connect(db_url, autocommit=True) as conn:
        conn.execute("SELECT mmr._bind_search(%s)", (request.param == "native",))
    standby.wait_for_replay(db_url, replica[0])
    yield str(request.param)
    with db.connect(db_url, autocommit=True) as conn:
        conn.execute("SELECT mmr._bind_search(mmr._native_unavailable() IS NULL)")
    standby.wait_for_replay(db_url, replica[0])


@pytest.mark.parametrize(("name", "stmt", "params"), CALLS, ids=[c[0] for c in CALLS])
def test_every_search_answers_on_the_standby_as_on_the_primary(
    sconn: Conn, db_url: str, binding: str, name: str, stmt: str, params: tuple[Any, ...]
) -> None:
    args = _args(params)
    got = sconn.execute(stmt, args).fetchall()
    with db.connect(db_url, autocommit=True) as p:
        want = p.execute(stmt, args).fetchall()
    assert got, f"{name}: no rows on the standby"
    assert got == want, name


EXPLAINS = [
    "explain_search('docs', 'a', %(q)s::vector, 5, run_analyze => true)",
    "explain_search('docs', 'a', %(q)s::vector, 5, %(f)s, run_analyze => true)",
    "explain_composed('docs', 'a', %(q)s::vector, %(m)s::vector, 'weighted', 5, "
    "run_analyze => true)",
    "explain_hybrid('docs', 'caption word7', '{a}', ARRAY[%(q)s::vector], 5, run_analyze => true)",
    "explain_multivector('docs', 'mv', ARRAY[%(q)s::vector], 5)",
    "filter_advice('docs', %(f)s)",
]


@pytest.mark.parametrize("call", EXPLAINS, ids=[e.split("(")[0] for e in EXPLAINS])
def test_explain_on_the_standby(sconn: Conn, call: str) -> None:
    args = {"q": str(_vec(Q)), "m": str(_vec("caption word3")), "f": FILTER}
    row = sconn.execute(f"SELECT mmr.{call}", args).fetchone()
    assert row is not None and row[0], call


def test_status_on_the_standby(sconn: Conn) -> None:
    rows = sconn.execute(
        "SELECT space, rows, embedded, queued FROM mmr.status('docs') ORDER BY space"
    ).fetchall()
    assert [(r[0], r[1], r[2], r[3]) for r in rows if r[0] in ("a", "b")] == [
        ("a", N, N, 0),
        ("b", N, N, 0),
    ]


def test_a_row_inserted_on_the_primary_becomes_searchable_on_the_standby(
    sconn: Conn, db_url: str, replica: tuple[str, int]
) -> None:
    text = "a freshly inserted row"
    q = str(_vec(text))
    with db.connect(db_url, autocommit=True) as p:
        p.execute("INSERT INTO docs VALUES (500, %s, 'new caption', 'even')", (text,))
    standby.wait_for_replay(db_url, replica[0])
    top = sconn.execute("SELECT key FROM mmr.search('docs', 'a', %s::vector, 1)", (q,)).fetchall()
    assert top != [(500,)]  # replayed, but not embedded yet
    queued = sconn.execute("SELECT queued FROM mmr.status('docs') WHERE space = 'a'").fetchone()
    assert queued == (1,)
    _drain(db_url)  # the worker runs on the primary
    lag = standby.wait_for_replay(db_url, replica[0])
    assert lag < 60
    top = sconn.execute("SELECT key FROM mmr.search('docs', 'a', %s::vector, 1)", (q,)).fetchall()
    assert top == [(500,)]


def test_the_client_and_the_cli_search_the_standby(replica: tuple[str, int]) -> None:
    """What applications use: the Python client and ``mmr search`` pointed at the standby."""
    with mmr.Client(replica[0]) as client:
        docs = client.collection("docs")
        assert docs.search("a", text=Q, k=3)[0].key == 7
        assert docs.hybrid_search("caption word7", [("b", "caption word7")], k=3)[0].key == 7
        assert docs.status()  # read-only as well
    r = _mmr("search", "docs", "a", "--text", Q, "-k", "3", "--json", env_url=replica[0])
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)[0]["key"] == 7
    r = _mmr(
        "search", "docs", "a", "--text", "caption word7", "--hybrid", "--json", env_url=replica[0]
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)[0]["key"] == 7


def test_sql_embed_searches_on_the_standby(sconn: Conn) -> None:
    """mmr.embed (PL/Python, in the server) encodes a query on the standby: search by text in
    SQL alone."""
    row = sconn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_proc WHERE proname = '_embed_py' "
        "AND pronamespace = 'mmr'::regnamespace)"
    ).fetchone()
    if not (row and row[0]):
        pytest.skip("no PL/Python on this server (make plpython installs it in the embedded one)")
    top = sconn.execute(
        "SELECT key FROM mmr.search('docs', 'a', mmr.embed('docs', 'a', %s), 1)", (Q,)
    ).fetchall()
    assert top == [(7,)]
    top = sconn.execute(
        "SELECT key FROM mmr.composed_search('docs', 'a', %s, mmr.embed('docs', 'b', 'caption "
        "word3'), 'pdv', 3, %s)",
        (KEY, Jsonb({"caption_space": "b"})),
    ).fetchall()
    assert len(top) == 3


def test_writers_refuse_the_standby_with_a_clear_error(
    sconn: Conn, replica: tuple[str, int]
) -> None:
    """What cannot run on a standby says so: the worker, `mmr db upgrade`, and any write."""
    with pytest.raises(ConfigError, match="hot standby"):
        Worker(worker_url(replica[0]), WorkerConfig(collections=("docs",), once=True)).run()
    with pytest.raises(ConfigError, match="hot standby"):
        install.upgrade(replica[0])
    with pytest.raises(psycopg.Error) as e:
        sconn.execute("SELECT mmr.create_text_index('docs')")
    assert e.value.sqlstate == READ_ONLY
    r = _mmr("collection", "drop", "docs", "--yes", env_url=replica[0])
    assert r.returncode == 1 and "read-only transaction" in r.stderr, r.stderr
    assert "writes go to the primary" in r.stderr and "Traceback" not in r.stderr
    r = _mmr("db", "upgrade", env_url=replica[0])
    assert r.returncode == 2 and "hot standby" in r.stderr and "Traceback" not in r.stderr


def _mmr(*args: str, env_url: str | None = None) -> subprocess.CompletedProcess[str]:
    """The mmr command on the tests' embedded server (MMR_DATA_DIR; MMR_DATABASE_URL only if
    ``env_url``)."""
    env = {k: v for k, v in os.environ.items() if k != "MMR_DATABASE_URL"}
    if env_url is not None:
        env["MMR_DATABASE_URL"] = env_url
    return subprocess.run(
        [sys.executable, "-m", "pg_mmretrieval", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cli_standby_status_and_errors(replica: tuple[str, int]) -> None:
    port = str(replica[1])
    r = _mmr("server", "standby", "status", "--port", port, "--json")
    assert r.returncode == 0, r.stderr
    st = json.loads(r.stdout)
    assert st["running"] is True and st["in_recovery"] is True
    assert st["url"] == standby.url(replica[1]) and st["replay_lag_bytes"] >= 0
    r = _mmr("server", "standby", "start", "--port", port)  # a no-op when it runs
    assert r.returncode == 0 and r.stdout.strip() == standby.url(replica[1]), r.stderr
    r = _mmr("server", "standby", "start", "--port", "80")
    assert r.returncode == 2 and "1024" in r.stderr
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        r = _mmr("server", "standby", "start", "--port", str(taken))
    assert r.returncode == 2 and "in use" in r.stderr and "Traceback" not in r.stderr
    assert not standby.standby_dir(taken).exists()
    r = _mmr("server", "standby", "status", "--port", str(taken))
    assert r.returncode == 0 and "running:" in r.stdout and "False" in r.stdout
    r = _mmr("server", "standby", "start", "--port", port, env_url="postgresql://x@127.0.0.1/y")
    assert r.returncode == 2 and "MMR_DATABASE_URL" in r.stderr
    r = _mmr("server", "standby", "--help")
    assert r.returncode == 0 and "pg_basebackup" in r.stdout
