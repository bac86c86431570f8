"""``mmr serve``: the encoder service, run for real (uvicorn on 127.0.0.1) against a test database.

The collection holds shape images with captions, embedded by the worker (as ``mmr_worker``) with
the committed ``shapes-clip`` model; the service must give the same vectors, batch concurrent
requests, enforce the worker's limits and answer every error with its status, message and hint.
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import numpy as np
import psycopg
import pytest
from click.testing import CliRunner
from PIL import Image

from pg_mmretrieval import db
from pg_mmretrieval.cli import cli
from pg_mmretrieval.loaders import LoadLimits
from pg_mmretrieval.serve import ServeConfig
from pg_mmretrieval.serve.server import make_server
from pg_mmretrieval.shapes.generator import generate
from pg_mmretrieval.worker import Worker, WorkerConfig

from .helpers import worker_url

TOKEN = "test-token-0123456789abcdef"
COLL = "shapes"
N_ROWS = 10


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class Client:
    """A tiny JSON client over http.client (one connection per call)."""

    def __init__(self, port: int, token: str | None = TOKEN) -> None:
        self.port = port
        self.token = token

    def call(
        self, method: str, path: str, body: Any = None, *, raw: bytes | None = None
    ) -> tuple[int, dict[str, Any]]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        headers = {"Content-Type": "application/json"}
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self.token}"
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        try:
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            return resp.status, json.loads(resp.read() or b"{}")
        finally:
            conn.close()

    def embed(self, **body: Any) -> tuple[int, dict[str, Any]]:
        return self.call("POST", "/v1/embed", {"collection": COLL, **body})

    def stats(self) -> dict[str, Any]:
        status, out = self.call("GET", "/v1/stats")
        assert status == 200, out
        return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _poll(check: Callable[[], bool], what: str, deadline_s: float = 30.0) -> None:
    end = time.monotonic() + deadline_s
    while not check():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


@contextmanager
def running(config: ServeConfig) -> Iterator[Client]:
    """The service on a free port of 127.0.0.1, in a thread, for the block's duration."""
    port = _free_port()
    server = make_server(config, "127.0.0.1", port, log_level="warning")
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        _poll(lambda: bool(server.started), "the service to start")
        yield Client(port, config.token)
    finally:
        server.should_exit = True
        thread.join(30)


@pytest.fixture(scope="module")
def rows(db_url: str) -> list[tuple[int, bytes, str]]:
    out = [(i + 1, _png(s.image), s.caption) for i, s in enumerate(generate(N_ROWS, seed=13))]
    with db.connect(db_url, autocommit=True) as c:
        c.execute("CREATE TABLE shapes (id int PRIMARY KEY, image bytea, caption text)")
        with c.cursor().copy("COPY shapes (id, image, caption) FROM STDIN") as copy:
            for row in out:
                copy.write_row(row)
        c.execute(
            "SELECT mmr.create_collection('shapes', 'shapes', image_column => 'image', "
            "text_columns => ARRAY['caption'])"
        )
        c.execute("SELECT mmr.add_space('shapes', 'clip_image', 'shapes-clip', 'image', 128)")
        c.execute("SELECT mmr.add_space('shapes', 'clip_caption', 'shapes-clip', 'caption', 128)")
        c.execute("SELECT mmr.add_space('shapes', 'words', 'minilm', 'caption', 384)")
        c.execute("SELECT mmr.add_space('shapes', 'mine', 'external', NULL, 3)")
    Worker(worker_url(db_url), WorkerConfig(collections=(COLL,), once=True)).run()
    return out


@pytest.fixture(scope="module")
def config(db_url: str, rows: list[tuple[int, bytes, str]]) -> ServeConfig:
    return ServeConfig(
        database_url=worker_url(db_url), token=TOKEN, max_wait_ms=20, limits=LoadLimits()
    )


@pytest.fixture(scope="module")
def client(config: ServeConfig) -> Iterator[Client]:
    with running(config) as c:
        yield c


def _stored(db_url: str, space: str) -> dict[int, np.ndarray]:
    with db.connect(db_url, autocommit=True) as c:
        (table,) = c.execute(
            "SELECT embedding_table::text FROM mmr.spaces WHERE collection = %s AND space = %s "
            "AND active",
            (COLL, space),
        ).fetchone() or (None,)
        got = c.execute(f"SELECT id, embedding FROM {table}").fetchall()
    return {int(k): np.asarray(v.to_numpy(), dtype=np.float32) for k, v in got}


def _cos(a: Any, b: Any) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


# -- vectors ---------------------------------------------------------------------------------


def test_image_and_caption_vectors_equal_the_workers(
    client: Client, db_url: str, rows: list[tuple[int, bytes, str]]
) -> None:
    images, captions = _stored(db_url, "clip_image"), _stored(db_url, "clip_caption")
    assert len(images) == len(captions) == N_ROWS
    for key, image, caption in rows[:4]:
        status, out = client.embed(space="clip_image", image_base64=_b64(image))
        assert status == 200, out
        assert out["dimensions"] == 128 == len(out["vector"])
        assert out["encoder"] == "shapes-clip" and out["model_id"]
        assert _cos(out["vector"], images[key]) >= 0.99999
        status, out = client.embed(space="clip_caption", text=caption)
        assert status == 200, out
        assert _cos(out["vector"], captions[key]) >= 0.99999
    words = _stored(db_url, "words")
    status, out = client.embed(space="words", text=rows[0][2])
    assert status == 200 and out["dimensions"] == 384
    assert _cos(out["vector"], words[rows[0][0]]) >= 0.99999


def test_text_in_an_image_space_goes_through_the_text_tower(
    client: Client, db_url: str, rows: list[tuple[int, bytes, str]]
) -> None:
    """Text -> image: the caption's vector, asked of the image space, is the text tower's."""
    captions = _stored(db_url, "clip_caption")
    key, _, caption = rows[1]
    status, out = client.embed(space="clip_image", text=caption)
    assert status == 200, out
    assert _cos(out["vector"], captions[key]) >= 0.99999
    # each caption, asked of the image space, is nearest to its own stored image
    images = _stored(db_url, "clip_image")
    status, out = client.embed(space="clip_image", texts=[r[2] for r in rows])
    assert status == 200, out
    for (key, _, _), vec in zip(rows, out["vectors"], strict=True):
        assert max(images, key=lambda k: _cos(vec, images[k])) == key


def test_batch_form_returns_vectors_in_order(
    client: Client, db_url: str, rows: list[tuple[int, bytes, str]]
) -> None:
    captions = _stored(db_url, "clip_caption")
    status, out = client.embed(space="clip_caption", texts=[r[2] for r in rows])
    assert status == 200, out
    assert len(out["vectors"]) == N_ROWS
    for (key, _, _), vec in zip(rows, out["vectors"], strict=True):
        assert _cos(vec, captions[key]) >= 0.99999
    images = _stored(db_url, "clip_image")
    status, out = client.embed(space="clip_image", images_base64=[_b64(r[1]) for r in rows[:3]])
    assert status == 200, out
    for (key, _, _), vec in zip(rows[:3], out["vectors"], strict=True):
        assert _cos(vec, images[key]) >= 0.99999


# -- listing and health ----------------------------------------------------------------------


def test_spaces_lists_active_versions(client: Client) -> None:
    status, out = client.call("GET", "/v1/spaces")
    assert status == 200, out
    spaces = {s["space"]: s for s in out["spaces"] if s["collection"] == COLL}
    assert set(spaces) == {"clip_image", "clip_caption", "words", "mine"}
    assert spaces["clip_image"]["encoder"] == "shapes-clip"
    assert spaces["clip_image"]["modality"] == "image"
    assert spaces["clip_image"]["dimensions"] == 128
    assert spaces["clip_image"]["version"] == 1
    assert spaces["clip_image"]["model_id"]  # pinned by the worker
    assert spaces["mine"]["modality"] == "external"
    assert spaces["clip_image"]["encodes"] == ["image", "text"]
    assert spaces["words"]["encodes"] == ["text"]
    assert spaces["mine"]["encodes"] == []


def test_healthz_needs_no_token_and_names_providers(client: Client) -> None:
    client.embed(space="clip_caption", text="a red circle")
    status, out = Client(client.port, token=None).call("GET", "/healthz")
    assert status == 200, out
    assert out["status"] == "ok"
    assert out["providers"]["shapes-clip"].endswith("ExecutionProvider")
    assert "CPUExecutionProvider" in out["available_providers"]


# -- errors ----------------------------------------------------------------------------------


def _err(result: tuple[int, dict[str, Any]], status: int, *words: str) -> None:
    code, out = result
    assert code == status, out
    assert set(out) == {"error", "hint"}, out
    assert out["error"] and out["hint"]
    assert "Traceback" not in out["error"]
    for w in words:
        assert w in out["error"], out


def test_token_is_required(client: Client) -> None:
    body = {"collection": COLL, "space": "clip_caption", "text": "a red circle"}
    _err(Client(client.port, token=None).call("POST", "/v1/embed", body), 401, "token")
    _err(Client(client.port, token="wrong-token-0123456789").call("POST", "/v1/embed", body), 401)
    _err(Client(client.port, token=None).call("GET", "/v1/spaces"), 401)
    _err(Client(client.port, token=None).call("GET", "/v1/stats"), 401)


def test_bad_input_is_400(client: Client, rows: list[tuple[int, bytes, str]]) -> None:
    _err(client.call("POST", "/v1/embed", raw=b"{not json"), 400, "JSON")
    _err(client.call("POST", "/v1/embed", [1, 2]), 400, "object")
    _err(client.call("POST", "/v1/embed", raw=b"[" * 100_000), 400, "JSON")
    _err(client.embed(space="clip_image"), 400, "exactly one")
    _err(client.embed(space="clip_image", text="x", image_base64="eA=="), 400, "exactly one")
    _err(client.embed(space="clip_image", text=3), 400)
    _err(client.embed(space="clip_image", text="x", extra=1), 400, "unknown")
    _err(client.embed(space="clip_image", text="   "), 400, "empty")
    _err(client.embed(space="clip_image", image_base64="not base64!"), 400, "base64")
    _err(client.embed(space="clip_image", image_base64=_b64(b"not an image")), 400, "image")
    _err(client.embed(space="clip_image", texts=[]), 400)
    _err(client.call("POST", "/v1/embed", {"space": "clip_image", "text": "x"}), 400)
    # one bad item of a batch names its index
    _err(client.embed(space="clip_image", texts=["a red circle", ""]), 400, "item 1")


def test_unknown_collection_or_space_is_404(client: Client) -> None:
    _err(client.call("POST", "/v1/embed", {"collection": "nope", "space": "x", "text": "a"}), 404)
    _err(client.embed(space="nope", text="a"), 404, "nope")
    code, out = client.call("GET", "/v1/nothing")
    assert code == 404 and set(out) == {"error", "hint"}


def test_modality_the_encoder_lacks_and_external_space_are_422(
    client: Client, rows: list[tuple[int, bytes, str]]
) -> None:
    _err(client.embed(space="words", image_base64=_b64(rows[0][1])), 422, "does not embed image")
    _err(client.embed(space="mine", text="a red circle"), 422, "external")


def test_size_limits_are_413(db_url: str, config: ServeConfig) -> None:
    small = replace(
        config,
        limits=LoadLimits(max_bytes=4096, max_text_chars=50, max_image_pixels=32 * 32),
        max_items=4,
    )
    big = _png(Image.new("RGB", (64, 64), "red"))  # under 4096 bytes, over 32x32 pixels
    assert len(big) < 4096
    with running(small) as c:
        _err(c.embed(space="clip_caption", text="x" * 51), 413, "50 characters")
        _err(c.embed(space="clip_image", image_base64=_b64(b"\0" * 5000)), 413, "4096")
        _err(c.embed(space="clip_image", image_base64=_b64(big)), 413, "pixels")
        _err(c.embed(space="clip_caption", texts=["a"] * 5), 413, "over the limit of 4")
        _err(c.call("POST", "/v1/embed", raw=b" " * (small.body_limit + 1)), 413, "body")
        assert c.embed(space="clip_caption", text="x" * 50)[0] == 200


def test_each_error_kind_has_its_status() -> None:
    # the worker's error kinds map to HTTP: a failure that may pass is 503 (retry), not 500
    from pg_mmretrieval.errors import LimitError, PermanentLoadError, RetryableLoadError
    from pg_mmretrieval.serve.app import _as_service_error

    cases = [
        (RetryableLoadError("reading the item timed out"), 503, "retry the request later"),
        (PermanentLoadError("not an image"), 400, "non-empty text"),
        (LimitError("over 64 MiB"), 413, "smaller item"),
        (RuntimeError("boom"), 500, "service's log"),
    ]
    for error, status, hint in cases:
        got = _as_service_error(error)
        assert (got.status, hint in (got.hint or "")) == (status, True), (error, got)


def test_full_queue_is_503(config: ServeConfig) -> None:
    with running(replace(config, max_queue=2)) as c:
        _err(c.embed(space="clip_caption", texts=["a", "b", "c"]), 503, "overloaded")
        assert c.stats()["rejected"] == 3
        assert c.embed(space="clip_caption", texts=["a", "b"])[0] == 200


# -- batching --------------------------------------------------------------------------------


def test_concurrent_requests_are_batched(
    config: ServeConfig, db_url: str, rows: list[tuple[int, bytes, str]]
) -> None:
    """16 concurrent requests (texts and images) run in fewer than 16 encoder runs, and each
    still gets its own vector."""
    captions, images = _stored(db_url, "clip_caption"), _stored(db_url, "clip_image")
    with running(replace(config, max_wait_ms=200)) as c:
        start = threading.Barrier(16)

        def one(i: int) -> tuple[int, int, dict[str, Any]]:
            key, image, caption = rows[i % N_ROWS]
            start.wait(30)
            if i % 2:
                return key, i, c.embed(space="clip_image", image_base64=_b64(image))[1]
            return key, i, c.embed(space="clip_caption", text=caption)[1]

        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(one, range(16)))
        for key, i, out in results:
            expected = images[key] if i % 2 else captions[key]
            assert _cos(out["vector"], expected) >= 0.99999
        stats = c.stats()
    assert stats["items"] == 16
    assert stats["batches"] < 16, stats
    assert stats["largest_batch"] > 1
    assert set(stats["lanes"]) == {"shapes-clip/text", "shapes-clip/image"}


def test_a_bad_item_fails_alone_in_its_batch(
    config: ServeConfig, db_url: str, rows: list[tuple[int, bytes, str]]
) -> None:
    """An undecodable image batched with good ones fails only its own request (the worker's
    encode_isolating splits the batch)."""
    images = _stored(db_url, "clip_image")
    bad = _b64(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)  # a PNG signature, then garbage
    with running(replace(config, max_wait_ms=300)) as c:
        start = threading.Barrier(4)

        def one(i: int) -> tuple[int, dict[str, Any]]:
            start.wait(30)
            return c.embed(space="clip_image", image_base64=bad if i == 0 else _b64(rows[i][1]))

        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(one, range(4)))
        stats = c.stats()
    _err(results[0], 400, "image")
    for i, (status, out) in enumerate(results[1:], 1):
        assert status == 200, out
        assert _cos(out["vector"], images[rows[i][0]]) >= 0.99999
    assert stats["largest_batch"] > 1, stats


def test_a_large_image_is_decoded_off_the_event_loop(client: Client) -> None:
    """Bodies over 256 KiB are parsed and checked in a thread; the vector is the encoder's."""
    from pg_mmretrieval.encoders import get_encoder

    rng = np.random.default_rng(3)
    data = _png(Image.fromarray(rng.integers(0, 255, (400, 400, 3), dtype=np.uint8)))
    assert len(data) > 256 * 1024
    status, out = client.embed(space="clip_image", image_base64=_b64(data))
    assert status == 200, out
    (expected,) = get_encoder("shapes-clip").embed_batch([data])
    assert _cos(out["vector"], expected) >= 0.99999


def test_a_client_that_goes_away_does_not_break_the_batch(
    config: ServeConfig, db_url: str, rows: list[tuple[int, bytes, str]]
) -> None:
    captions = _stored(db_url, "clip_caption")
    with running(replace(config, max_wait_ms=1000)) as c:
        body = json.dumps({"collection": COLL, "space": "clip_caption", "text": "gone"}).encode()
        sock = socket.create_connection(("127.0.0.1", c.port))
        sock.sendall(
            b"POST /v1/embed HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {TOKEN}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        _poll(lambda: c.stats()["pending"] == 1, "the first request to wait for its batch")
        with ThreadPoolExecutor(1) as pool:
            other = pool.submit(c.embed, space="clip_caption", text=rows[2][2])
            _poll(lambda: c.stats()["pending"] == 2, "the second request to join the batch")
            sock.close()
            status, out = other.result(60)
        assert status == 200, out
        assert _cos(out["vector"], captions[rows[2][0]]) >= 0.99999
        _poll(lambda: c.stats()["pending"] == 0, "the batch to finish")
        stats = c.stats()
        assert stats["cancelled"] == 1 and stats["items"] == 1, stats
        assert c.embed(space="clip_caption", text="still serving")[0] == 200


def test_active_version_follows_a_switch(config: ServeConfig, db_url: str) -> None:
    """A new version with another encoder is served once it is switched to (catalog TTL)."""
    with running(replace(config, catalog_ttl_s=0)) as c:
        assert c.embed(space="clip_caption", text="a red circle")[1]["encoder"] == "shapes-clip"
        with db.connect(db_url, autocommit=True) as conn:
            conn.execute(
                "SELECT mmr.add_space('shapes', 'clip_caption', 'mmr-test', 'caption', 32, "
                "new_version => true)"
            )
            conn.execute("SELECT mmr.switch_space('shapes', 'clip_caption', 2, force => true)")
        try:
            status, out = c.embed(space="clip_caption", text="a red circle")
            assert status == 200 and out["encoder"] == "mmr-test" and out["dimensions"] == 32
        finally:
            with db.connect(db_url, autocommit=True) as conn:
                conn.execute("SELECT mmr.switch_space('shapes', 'clip_caption', 1, force => true)")


# -- the stdlib client (what PL/Python can use) ----------------------------------------------


def test_stdlib_client(client: Client, db_url: str, rows: list[tuple[int, bytes, str]]) -> None:
    from pg_mmretrieval.errors import ServiceError
    from pg_mmretrieval.serve.client import embed_remote, embed_remote_batch

    url = f"http://127.0.0.1:{client.port}"
    captions, images = _stored(db_url, "clip_caption"), _stored(db_url, "clip_image")
    key, image, caption = rows[0]
    vec = embed_remote(url, COLL, "clip_caption", caption, token=TOKEN)
    assert vec.dtype == np.float32 and _cos(vec, captions[key]) >= 0.99999
    vec = embed_remote(url, COLL, "clip_image", image, token=TOKEN)
    assert _cos(vec, images[key]) >= 0.99999
    vecs = embed_remote_batch(url, COLL, "clip_image", [r[1] for r in rows[:2]], token=TOKEN)
    assert [_cos(v, images[r[0]]) >= 0.99999 for v, r in zip(vecs, rows, strict=False)] == [
        True,
        True,
    ]
    with pytest.raises(ServiceError) as info:
        embed_remote(url, COLL, "nope", "x", token=TOKEN)
    assert info.value.status == 404 and info.value.hint
    with pytest.raises(ServiceError) as info:
        embed_remote(url, COLL, "clip_caption", "x")
    assert info.value.status == 401
    with pytest.raises(ServiceError) as info:
        embed_remote(f"http://127.0.0.1:{_free_port()}", COLL, "clip_caption", "x", timeout_s=5)
    assert info.value.status == 503 and "cannot reach" in str(info.value)


# -- the command -----------------------------------------------------------------------------


def test_command_refuses_a_public_address_without_a_token() -> None:
    result = CliRunner().invoke(cli, ["serve", "--host", "0.0.0.0"], env={"MMR_SERVE_TOKEN": ""})
    assert result.exit_code != 0
    assert "--token" in result.output and "--insecure" in result.output


def test_command_help_has_examples() -> None:
    result = CliRunner().invoke(cli, ["serve", "--help"])
    assert result.exit_code == 0
    assert "Example:" in result.output and "/v1/embed" in result.output


def test_missing_extra_is_one_clear_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import importlib.util

    from pg_mmretrieval.cli import main

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "uvicorn" else real(name, *a)
    )
    with pytest.raises(SystemExit) as exit_info:
        main(["serve"])
    assert exit_info.value.code == 2  # a setup mistake the user fixes: exit 2, as every such error
    err = capsys.readouterr().err.strip()
    assert err == (
        "error: mmr serve needs uvicorn: install the serve extra with "
        "`pip install 'pg_mmretrieval[serve]'`"
    )


def test_settings_are_bounded() -> None:
    from pg_mmretrieval.errors import ConfigError

    with pytest.raises(ConfigError, match="max-batch"):
        ServeConfig(max_batch=0)
    with pytest.raises(ConfigError, match="16 characters"):
        ServeConfig(token="short")


def test_read_only_catalog_connection(config: ServeConfig, db_url: str) -> None:
    """The service reads the catalog as mmr_worker in a read-only session."""
    from pg_mmretrieval.serve.catalog import SpaceCatalog

    cat = SpaceCatalog(config.database_url)
    try:
        assert cat.spaces()
        assert cat._conn is not None
        assert cat._conn.execute("SHOW default_transaction_read_only").fetchone() == ("on",)
        assert cat._conn.info.user == db.WORKER_ROLE
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            cat._conn.execute("CREATE TEMP TABLE t (x int)")
    finally:
        cat.close()


def test_mmr_embed_delegates_to_the_real_service(
    db_url: str, config: ServeConfig, rows: list[tuple[int, bytes, str]]
) -> None:
    """`mmr.embed` in the backend, with `mmr.encoder_url` set by the administrator, asks this
    service and returns the worker's own vectors (issue 13 items 3 and 5 together)."""
    dbname = db_url.split("?")[0].rsplit("/", 1)[1]
    stored_img, stored_cap = _stored(db_url, "clip_image"), _stored(db_url, "clip_caption")
    with running(config) as client:
        url = f"http://127.0.0.1:{client.port}"
        with db.connect(db_url, autocommit=True) as admin:
            admin.execute(f"ALTER DATABASE \"{dbname}\" SET mmr.encoder_url = '{url}'")
            admin.execute(f"ALTER DATABASE \"{dbname}\" SET mmr.encoder_token = '{TOKEN}'")
        try:
            before = client.stats()
            with db.connect(db_url, autocommit=True) as conn:
                for key, png, caption in rows[:3]:
                    (img,) = conn.execute(
                        "SELECT mmr.embed('shapes', 'clip_image', %s::bytea)", (png,)
                    ).fetchone() or (None,)
                    (cap,) = conn.execute(
                        "SELECT mmr.embed('shapes', 'clip_caption', %s::text)", (caption,)
                    ).fetchone() or (None,)
                    assert _cos(img.to_numpy(), stored_img[key]) >= 0.99999
                    assert _cos(cap.to_numpy(), stored_cap[key]) >= 0.99999
            after = client.stats()
            assert after != before  # the vectors came from the service, not the backend
        finally:
            with db.connect(db_url, autocommit=True) as admin:
                admin.execute(f'ALTER DATABASE "{dbname}" RESET mmr.encoder_url')
                admin.execute(f'ALTER DATABASE "{dbname}" RESET mmr.encoder_token')
