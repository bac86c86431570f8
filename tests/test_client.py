"""The Python clients (sync and async) against the real database."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from mmr_test_encoders import HashEncoder

import pg_mmretrieval as mmr
from pg_mmretrieval import AsyncClient, Client, SpaceSpec
from pg_mmretrieval.encoders import get_encoder, register_encoder
from tests.helpers import worker_url
from tests.surfaces_helpers import drain_queue

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def client(db_url: str) -> Any:
    with Client(db_url) as c:
        c.conn.execute(
            "CREATE TABLE items (id int PRIMARY KEY, caption text, image bytea, price int)"
        )
        c.create_collection(
            "items",
            "items",
            image_column="image",
            text_columns=["caption"],
            spaces=[
                SpaceSpec("txt", "mmr-test", "caption"),
                SpaceSpec("ext", "external", dimensions=8),
            ],
        )
        yield c


def _vec(i: int) -> np.ndarray[Any, Any]:
    return np.random.default_rng(i).standard_normal(8).astype(np.float32)


def test_collections_and_spaces(client: Client) -> None:
    assert [c.name for c in client.collections] == ["items"]
    items = client.collection("items")
    assert items.info.key_columns == ("id",)
    assert {(s.name, s.dimensions, s.modality) for s in items.spaces} == {
        ("txt", 32, "text"),
        ("ext", 8, "external"),
    }
    with pytest.raises(mmr.NotFoundError, match="does not exist"):
        client.collection("nope")
    with pytest.raises(mmr.NotFoundError, match="its spaces"):
        items.space("nope")


def test_insert_wait_and_search(client: Client) -> None:
    items = client.collection("items")
    keys = items.insert([{"id": i, "caption": f"caption {i}", "price": i} for i in range(1, 21)])
    assert keys == list(range(1, 21))
    # 20 rows wait in both spaces: txt for the worker, ext for the application
    assert items.pending(keys) == 40
    with pytest.raises(TimeoutError, match="40 \\(row, space\\) pair"):
        items.wait_until_searchable(keys, timeout=0.1)
    assert drain_queue(client.conn, "items") == 20
    assert items.pending(keys, spaces=["txt"]) == 0
    items.put_embeddings("ext", keys, [_vec(i) for i in keys])
    items.wait_until_searchable(keys, timeout=5)

    hits = items.search("txt", text="caption 7", k=3)
    assert hits[0].key == 7 and hits[0].score == pytest.approx(1.0, abs=1e-5)
    hits = items.search("ext", _vec(3), k=5, filter={"price": {">": 10}})
    assert len(hits) == 5 and all(h.key > 10 for h in hits)
    assert items.search("ext", _vec(3), k=1)[0].key == 3
    (rh,) = items.search_rows("txt", text="caption 7", k=1)
    assert rh.key == 7 and rh.row["caption"] == "caption 7" and rh.row["price"] == 7
    assert items.fetch([3, 999, 1]) == [
        {"id": 3, "caption": "caption 3", "image": None, "price": 3},
        None,
        {"id": 1, "caption": "caption 1", "image": None, "price": 1},
    ]
    with pytest.raises(mmr.InputError, match="exactly one"):
        items.search("txt", _vec(1), text="x")
    with pytest.raises(mmr.InputError, match="external"):
        items.search("ext", text="x")


def test_composed_and_hybrid_search(client: Client) -> None:
    items = client.collection("items")
    # row 7 modified by its own caption stays nearest to itself
    hits = items.composed_search(
        "txt",
        modifier_text="caption 7",
        reference_key=7,
        k=3,
        params={"exclude_reference": False},
    )
    assert len(hits) == 3 and hits[0].key == 7
    ref = next(get_encoder("mmr-test").embed_batch(["caption 9"]))
    hits = items.composed_search("txt", ref, modifier_text="caption 9", k=2)
    assert hits[0].key == 9
    client.conn.execute("SELECT mmr.create_text_index('items')")
    hybrid = items.hybrid_search("caption", [("txt", "caption 5")], k=5)
    assert len(hybrid) == 5 and hybrid[0].key == 5


def test_wait_returns_when_another_session_fills(client: Client, db_url: str) -> None:
    items = client.collection("items")
    keys = items.insert([{"id": 100, "caption": None, "price": 1}])
    # caption NULL: nothing to embed in txt, so only the external vector is awaited
    assert items.pending(keys) == 1
    done = threading.Event()
    errors: list[BaseException] = []

    def waiter() -> None:
        try:
            with Client(db_url) as other:
                other.collection("items").wait_until_searchable(keys, timeout=30)
        except BaseException as e:  # reported below
            errors.append(e)
        done.set()

    t = threading.Thread(target=waiter)
    t.start()
    items.put_embeddings("ext", keys, [_vec(100)])
    t.join(timeout=30)
    assert done.is_set() and not errors


def test_insert_wait_true_and_status(client: Client) -> None:
    items = client.collection("items")
    with pytest.raises(TimeoutError):
        items.insert([{"id": 200, "caption": "late"}], wait=True, timeout=0.05, spaces=["txt"])
    drain_queue(client.conn, "items")
    items.wait_until_searchable([200], spaces=["txt"], timeout=5)
    status = {s.space: s for s in client.status("items")}
    assert status["txt"].queued == 0
    assert status["txt"].embedded == 21
    assert status["ext"].embedded == 21
    with pytest.raises(mmr.NotFoundError):
        client.status("nope")


def test_wait_fails_fast_on_dead_letters(client: Client) -> None:
    # The worker's dead-letter table (revision 0002 of the mmr schema); created here with its
    # columns when this checkout does not have the worker yet.
    client.conn.execute(
        "CREATE TABLE IF NOT EXISTS mmr._failed (id bigint GENERATED ALWAYS AS IDENTITY "
        "PRIMARY KEY, collection_id int NOT NULL, space_id int NOT NULL, key jsonb NOT NULL, "
        "content_hash bytea, error_class text NOT NULL, error text NOT NULL, attempts int "
        "NOT NULL, history jsonb NOT NULL DEFAULT '[]', enqueued_at timestamptz, failed_at "
        "timestamptz NOT NULL DEFAULT now(), worker text, UNIQUE (space_id, key))"
    )
    items = client.collection("items")
    keys = items.insert([{"id": 400, "caption": "poison"}, {"id": 401, "caption": "fine"}])
    drain_queue(client.conn, "items")
    # what a worker does with a poison row: no embedding, out of the queue, a dead letter
    sid = client.conn.execute(
        "SELECT s.id, s.embedding_table::text FROM mmr._space s JOIN mmr._collection c "
        "ON c.id = s.collection_id WHERE c.name = 'items' AND s.name = 'txt'"
    ).fetchone()
    assert sid is not None
    client.conn.execute(f"DELETE FROM {sid[1]} WHERE id = 400")
    client.conn.execute(
        "INSERT INTO mmr._failed (collection_id, space_id, key, error_class, error, attempts) "
        "SELECT collection_id, id, '400', 'permanent', 'cannot decode image', 1 "
        "FROM mmr._space WHERE id = %s",
        (sid[0],),
    )
    assert items.pending(keys, spaces=["txt"]) == 0
    with pytest.raises(mmr.InputError, match=r"1 \(row, space\) pair\(s\) failed.*decode"):
        items.wait_until_searchable(keys, spaces=["txt"], timeout=30)


def test_insert_and_wait_with_the_real_worker(client: Client, db_url: str) -> None:
    client.conn.execute("CREATE TABLE quotes (id int PRIMARY KEY, body text)")
    quotes = client.create_collection(
        "quotes", "quotes", text_columns=["body"], spaces=[SpaceSpec("t", "mmr-test", "body")]
    )
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pg_mmretrieval.cli",
            "worker",
            "--collection",
            "quotes",
            "--poll",
            "0.2",
        ],
        env={
            **os.environ,
            "MMR_DATABASE_URL": db_url,
            "MMR_WORKER_DATABASE_URL": worker_url(db_url),
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        keys = quotes.insert(
            [{"id": i, "body": f"quote {i}"} for i in range(1, 51)], wait=True, timeout=120
        )
        assert quotes.pending(keys) == 0
        assert quotes.search("t", text="quote 17", k=1)[0].key == 17
    finally:
        worker.terminate()
        worker.wait(timeout=60)


def test_insert_errors(client: Client) -> None:
    items = client.collection("items")
    with pytest.raises(mmr.InputError, match="one shape"):
        items.insert([{"id": 300}, {"id": 301, "caption": "x"}])
    with pytest.raises(mmr.InputError, match="no column"):
        items.insert([{"id": 300, "colour": "red"}])
    with pytest.raises(mmr.InputError, match="duplicate key"):
        items.insert([{"id": 1}])


def test_composite_key_and_images(client: Client) -> None:
    client.conn.execute("CREATE TABLE tiles (map text, n int, png bytea, PRIMARY KEY (map, n))")
    tiles = client.create_collection("tiles", "tiles", image_column="png")
    tiles.add_space("img", "mmr-test", "png")
    rows = [{"map": "m", "n": i, "png": bytes([i + 1]) * 10} for i in range(5)]
    keys = tiles.insert(rows)
    assert keys[2] == {"map": "m", "n": 2}
    assert tiles.pending(keys) == 5
    drain_queue(client.conn, "tiles")
    tiles.wait_until_searchable(keys, timeout=5)
    hits = tiles.search("img", image=bytes([3]) * 10, k=1)
    assert hits[0].key == {"map": "m", "n": 2}
    (rh,) = tiles.search_rows("img", image=bytes([3]) * 10, k=1)
    assert rh.row["png"] == bytes([3]) * 10
    with pytest.raises(mmr.InputError, match="composite key"):
        tiles.pending([1])
    # a shadow version, switched to, then dropped
    v2 = tiles.add_space("img", "mmr-test", "png", new_version=True)
    assert (v2.version, v2.active) == (2, False)
    drain_queue(client.conn, "tiles")
    tiles.switch_space("img")
    assert tiles.space("img").version == 2
    tiles.drop_space("img", 1)
    tiles.drop()
    assert "tiles" not in [c.name for c in client.collections]


def test_client_wraps_existing_connection(conn: psycopg.Connection[Any]) -> None:
    c = Client(conn=conn)
    c.close()  # not owned: the connection stays open
    assert not conn.closed
    assert "items" in [x.name for x in c.collections]


def test_async_client(db_url: str) -> None:
    async def main() -> None:
        async with await AsyncClient.connect(db_url) as client:
            await client.conn.execute("CREATE TABLE notes (id bigint PRIMARY KEY, body text)")
            notes = await client.create_collection(
                "notes",
                "notes",
                text_columns=["body"],
                spaces=[SpaceSpec("ext", "external", dimensions=8)],
            )
            keys = await notes.insert([{"id": i, "body": f"b{i}"} for i in range(1, 11)])
            assert keys == list(range(1, 11))
            assert await notes.pending(keys) == 10
            with pytest.raises(TimeoutError):
                await notes.wait_until_searchable(keys, timeout=0.05)
            waiter = asyncio.create_task(notes.wait_until_searchable(keys, timeout=30))
            assert await notes.put_embeddings("ext", keys, [_vec(i) for i in keys]) == 10
            await waiter
            hits = await notes.search("ext", _vec(4), k=2)
            assert hits[0].key == 4
            rows = await notes.search_rows("ext", _vec(4), k=2)
            assert rows[0].row == {"id": 4, "body": "b4"}
            assert await notes.fetch([]) == []
            await notes.add_space("txt", "mmr-test", "body")
            assert [s.queued for s in await notes.status() if s.space == "txt"] == [10]
            with pytest.raises(mmr.NotFoundError):
                await client.collection("nope")
            assert {"items", "notes"} <= {c.name for c in await client.collections()}
            await notes.drop()

    asyncio.run(main())


def test_async_text_search_encodes_in_thread(client: Client, db_url: str) -> None:
    expected = next(iter(get_encoder("mmr-test").embed_batch(["caption 5"])))
    assert expected.shape == (32,)

    async def main() -> list[mmr.Hit]:
        async with await AsyncClient.connect(db_url) as ac:
            items = await ac.collection("items")
            return await items.search("txt", text="caption 5", k=1)

    assert asyncio.run(main())[0].key == 5


class _SaltedHash(HashEncoder):
    """``mmr-test`` with its own name, dimension and salt: another model."""

    def __init__(self, name: str, dimension: int) -> None:
        self.name = name
        self.dimension = dimension
        self.model_id = f"test/{name}"

    def _embed(self, batch: Sequence[Any]) -> np.ndarray[Any, Any]:
        return super()._embed([f"{self.name}:{x}" for x in batch])


@pytest.fixture(scope="module")
def swap(client: Client) -> str:
    """A collection whose space ``s`` the tests drop and re-add with other encoders."""
    get_encoder("mmr-test")  # plugins loaded before registering ours
    for name, dim in (("mmr-test-16", 16), ("mmr-test-32b", 32)):
        register_encoder(_SaltedHash(name, dim))
        client.conn.execute("SELECT mmr.declare_encoder(%s, %s)", (name, dim))
    client.conn.execute("CREATE TABLE swap (id int PRIMARY KEY, caption text)")
    coll = client.create_collection(
        "swap", "swap", text_columns=["caption"], spaces=[SpaceSpec("s", "mmr-test", "caption")]
    )
    coll.insert([{"id": i, "caption": f"caption {i}"} for i in range(1, 21)])
    drain_queue(client.conn, "swap")
    return "swap"


def _readd(client: Client, encoder: str) -> None:
    """Another session drops space ``s`` and adds it again over another encoder."""
    coll = client.collection("swap")
    coll.drop_space("s")
    coll.add_space("s", encoder, "caption")
    assert drain_queue(client.conn, "swap") == 20


@pytest.mark.parametrize("encoder", ["mmr-test-16", "mmr-test-32b"])
def test_search_after_the_space_changed_under_the_client(
    client: Client, swap: str, db_url: str, encoder: str
) -> None:
    # the searching clients resolve (and cache) space "s" on their first search; then another
    # session replaces it (another dimension, or the same dimension and another model)
    with Client(db_url) as searcher:
        coll = searcher.collection(swap)
        assert coll.search("s", text="caption 3", k=1)[0].key == 3
        assert coll.search("s", text="caption 4", k=1)[0].key == 4
        _readd(client, encoder)
        (hit,) = coll.search("s", text="caption 7", k=1)
        assert hit.key == 7 and hit.score == pytest.approx(1.0, abs=1e-5)
        _readd(client, "mmr-test")
        hits = coll.composed_search(
            "s",
            reference_key=8,
            modifier_text="caption 8",
            k=1,
            params={"exclude_reference": False},
        )
        assert [h.key for h in hits] == [8]
        _readd(client, encoder)
        hits = coll.hybrid_search(None, [("s", "caption 9")], k=1)
        assert [h.key for h in hits] == [9]
        # a vector query of the new dimension needs no encoder: it is never guarded
        q = next(iter(get_encoder(encoder).embed_batch(["caption 6"])))
        assert coll.search("s", q, k=1)[0].key == 6

    async def main() -> None:
        async with await AsyncClient.connect(db_url) as ac:
            coll = await ac.collection(swap)
            assert (await coll.search("s", text="caption 3", k=1))[0].key == 3
            await asyncio.to_thread(_readd, client, "mmr-test")
            (hit,) = await coll.search("s", text="caption 5", k=1)
            assert hit.key == 5 and hit.score == pytest.approx(1.0, abs=1e-5)

    asyncio.run(main())
    # a search that finds nothing on an unchanged space stays empty (one re-check, no loop)
    with Client(db_url) as searcher:
        none = searcher.collection(swap).search("s", text="x", k=3, filter={"id": {">": 99}})
        assert none == []
    # a dropped space is reported as before
    client.collection(swap).drop_space("s")
    with Client(db_url) as searcher, pytest.raises(mmr.NotFoundError, match="its spaces"):
        searcher.collection(swap).search("s", text="caption 1", k=1)
    client.collection(swap).add_space("s", "mmr-test", "caption")
    drain_queue(client.conn, "swap")


def test_sync_client_is_generated_from_the_async_one() -> None:
    spec = importlib.util.spec_from_file_location(
        "async_to_sync", ROOT / "scripts/async_to_sync.py"
    )
    assert spec is not None and spec.loader is not None
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    generated = tool.generate()
    assert generated.startswith("# generated from aio.py by scripts/async_to_sync.py")
    assert tool.TARGET.read_text() == generated, (
        "pg_mmretrieval/client/sync.py is stale: run python scripts/async_to_sync.py"
    )
    # the rules leave no async code, and a change to the source shows in the output
    assert "await " not in generated and "async def" not in generated
    changed = tool.SOURCE.read_text().replace('"""Every registered collection."""', '"""All."""')
    assert '"""All."""' in tool.transform(changed)
