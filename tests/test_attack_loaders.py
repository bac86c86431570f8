"""Issue 12, items 4, 5 and 10: what the worker may read and fetch, and its resource limits.

Every HTTP server here listens on 127.0.0.1; no test connects anywhere else: refusals of other
addresses are asserted to happen before any connection (``socket.create_connection`` is
recorded).
"""

from __future__ import annotations

import dataclasses
import http.server
import itertools
import os
import socket
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from PIL import Image, ImageFile

from pg_mmretrieval import collections
from pg_mmretrieval.errors import ConfigError, PermanentLoadError, RetryableLoadError
from pg_mmretrieval.loaders import LoadLimits, load_cell
from pg_mmretrieval.preprocess import decode_image
from pg_mmretrieval.worker import RetryPolicy, Worker, WorkerConfig

from .helpers import worker_url
from .images import encode, scene

_counter = itertools.count()
GOOD_PNG = encode(scene(32, 24, seed=7), "PNG")
_stop = threading.Event()


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/ok.png":
            self._send(200, GOOD_PNG)
        elif self.path.startswith("/redirect?"):
            self.send_response(302)
            self.send_header("Location", self.path.split("?", 1)[1])
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path == "/drip":
            # a valid answer, one byte at a time: every read succeeds quickly, the body never ends
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self._drip(b"x" * 100000)
        elif self.path == "/drip-headers":
            self._drip(b"HTTP/1.1 200 OK\r\nX-Slow: " + b"y" * 100000)
        else:
            self._send(404, b"")

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _drip(self, data: bytes) -> None:
        try:
            for i in range(len(data)):
                if _stop.wait(0.1):
                    return
                self.wfile.write(data[i : i + 1])
                self.wfile.flush()
        except OSError:  # the client hung up: what the deadline does
            return

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        _stop.set()
        httpd.shutdown()
        httpd.server_close()


# the loopback test server is opted in, exactly as an operator would (docs/security.md)
LOOPBACK = LoadLimits(url_allow_hosts=("127.0.0.1",), url_timeout_s=3.0, url_deadline_s=10.0)


@pytest.fixture()
def connections(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """Every address the loaders connect to (the real call still happens)."""
    seen: list[tuple[Any, ...]] = []
    real = socket.create_connection

    def record(address: Any, *args: Any, **kw: Any) -> socket.socket:
        seen.append(tuple(address))
        if address[0] != "127.0.0.1":
            raise AssertionError(f"a test tried to connect to {address}")
        return real(address, *args, **kw)

    monkeypatch.setattr(socket, "create_connection", record)
    return seen


# -- item 4: URLs -------------------------------------------------------------------------


def test_item4_redirect_to_ftp_refused(server: str, connections: list[tuple[Any, ...]]) -> None:
    assert load_cell(f"{server}/ok.png", "url", LOOPBACK) == GOOD_PNG
    connections.clear()
    with pytest.raises(PermanentLoadError, match=r"redirect 1 of .*scheme 'ftp' is not allowed"):
        load_cell(f"{server}/redirect?ftp://127.0.0.1/etc/passwd", "url", LOOPBACK)
    assert len(connections) == 1  # the first URL only; nothing for the ftp:// target
    with pytest.raises(PermanentLoadError, match="scheme 'file' is not allowed"):
        load_cell(f"{server}/redirect?file:///etc/passwd", "url", LOOPBACK)


def test_item4_redirect_to_denied_address_refused(
    server: str, connections: list[tuple[Any, ...]]
) -> None:
    for target, reason in [
        ("http://169.254.169.254/latest/meta-data/", "always refused"),
        ("http://10.1.2.3/x.png", "not in MMR_URL_ALLOW_HOSTS"),
        ("http://metadata.google.internal/computeMetadata/v1/", "metadata service"),
    ]:
        connections.clear()
        with pytest.raises(PermanentLoadError, match=reason):
            load_cell(f"{server}/redirect?{target}", "url", LOOPBACK)
        assert connections == [("127.0.0.1", int(server.rsplit(":", 1)[1]))]
    # a redirect loop ends at the redirect limit
    limits = dataclasses.replace(LOOPBACK, url_max_redirects=2)
    hop = f"{server}/redirect?{server}/redirect?{server}/redirect?{server}/ok.png"
    with pytest.raises(PermanentLoadError, match="redirected more than 2 times"):
        load_cell(hop, "url", limits)


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://2852039166/latest/meta-data/",  # 169.254.169.254 as one decimal number
        "http://[::ffff:169.254.169.254]/",
        "http://[fd00:ec2::254]/",
        "http://100.100.100.200/",
        "http://[fe80::1]/",
        "http://0.0.0.0/",
        "http://224.0.0.1/",
        "http://255.255.255.255/",
        "http://metadata.google.internal/",
    ],
)
def test_item4_metadata_and_link_local_refused_without_connecting(
    url: str, connections: list[tuple[Any, ...]]
) -> None:
    # refused by default, and even when the allow list names the range
    for limits in (LoadLimits(), LoadLimits(url_allow_hosts=("169.254.0.0/16", "::/0"))):
        with pytest.raises(PermanentLoadError, match="refused") as info:
            load_cell(url, "url", limits)
        assert "before connecting" in str(info.value) or "metadata service" in str(info.value)
    assert connections == []


def test_item4_loopback_and_private_need_opt_in(
    server: str, connections: list[tuple[Any, ...]]
) -> None:
    for url in (f"{server}/ok.png", "http://10.0.0.1/", "http://[::1]/", "http://192.168.1.1/"):
        with pytest.raises(PermanentLoadError, match="not global: refused unless"):
            load_cell(url, "url", LoadLimits())
    assert connections == []
    # a deny entry wins over the allow list
    both = dataclasses.replace(LOOPBACK, url_deny_hosts=("127.0.0.0/8",))
    with pytest.raises(PermanentLoadError, match="denied by MMR_URL_DENY_HOSTS"):
        load_cell(f"{server}/ok.png", "url", both)
    assert connections == []
    with pytest.raises(ConfigError, match="neither a host name"):
        LoadLimits(url_allow_hosts=("http://x.org/",))


def test_item4_file_url_consistent(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "a.png").write_bytes(GOOD_PNG)
    (tmp_path / "outside.png").write_bytes(GOOD_PNG)
    limits = dataclasses.replace(LOOPBACK, path_roots=(str(root),))
    # a file:// URL is a path: read by path/auto cells exactly like the path, under the roots
    assert load_cell(f"file://{root}/a.png", "auto", limits) == GOOD_PNG
    assert load_cell(f"file://localhost{root}/a%2Epng", "auto", limits) == GOOD_PNG
    outside = f"file://{tmp_path}/outside.png"
    with pytest.raises(PermanentLoadError, match="outside the allowed roots"):
        load_cell(outside, "auto", limits)
    with pytest.raises(PermanentLoadError, match="naming another host"):
        load_cell(f"file://fileserver{root}/a.png", "auto", limits)
    # ... and never fetched as a URL, whatever the roots
    with pytest.raises(PermanentLoadError, match="scheme 'file' is not allowed"):
        load_cell(f"file://{root}/a.png", "url", limits)
    with pytest.raises(ConfigError, match="cannot be allowed"):
        LoadLimits(allowed_schemes=frozenset({"http", "file"}))


# -- item 4: paths ------------------------------------------------------------------------


def test_item4_symlink_to_outside_refused_reveals_nothing(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    limits = LoadLimits(path_roots=(str(root),))
    link = root / "innocent.png"
    messages = []
    for target in ("/etc/shadow", "/etc/passwd", "/nonexistent/secret", str(tmp_path)):
        if link.is_symlink():
            link.unlink()
        link.symlink_to(target)
        with pytest.raises(PermanentLoadError) as info:
            load_cell(str(link), "path", limits)
        messages.append(str(info.value))
    # the same words whether the target exists, is readable, is a directory or is missing
    assert len(set(messages)) == 1, messages
    assert "outside the allowed roots" in messages[0]
    size = str(Path("/etc/passwd").stat().st_size)
    assert size not in messages[0] and "/etc" not in messages[0]
    # a symlink inside the root to a file inside the root is fine
    (root / "real.png").write_bytes(GOOD_PNG)
    link.unlink()
    link.symlink_to(root / "real.png")
    assert load_cell(str(link), "path", limits) == GOOD_PNG


def test_item4_dotdot_escape_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "secret.png").write_bytes(GOOD_PNG)
    (tmp_path / "root-sibling").mkdir()
    (tmp_path / "root-sibling" / "x.png").write_bytes(GOOD_PNG)
    limits = LoadLimits(path_roots=(str(root),))
    for cell in (
        f"{root}/../secret.png",
        f"{root}/../../../../etc/passwd",
        f"{root}-sibling/x.png",  # a prefix of the root's name is not inside it
        "relative/../../secret.png",
    ):
        with pytest.raises(PermanentLoadError, match="outside the allowed roots"):
            load_cell(cell, "path", limits)
    # without roots, path cells are refused outright
    with pytest.raises(PermanentLoadError, match="no allowed roots are configured"):
        load_cell(str(tmp_path / "secret.png"), "path", LoadLimits())
    # a FIFO inside the root does not hang the worker
    os.mkfifo(root / "pipe.png")
    with pytest.raises(PermanentLoadError, match="not a regular file"):
        load_cell(str(root / "pipe.png"), "path", limits)


# -- item 5: total deadline ---------------------------------------------------------------


@pytest.mark.parametrize("route", ["/drip", "/drip-headers"])
def test_item5_slow_drip_cut_at_deadline(server: str, route: str) -> None:
    limits = dataclasses.replace(LOOPBACK, url_timeout_s=3.0, url_deadline_s=1.0)
    start = time.monotonic()
    with pytest.raises(RetryableLoadError, match="total deadline of 1 s"):
        load_cell(f"{server}{route}", "url", limits)
    elapsed = time.monotonic() - start
    # the old per-read timeout let this run for 100000 x 0.1 s; now it ends at the deadline
    assert elapsed < 2 * limits.url_deadline_s, elapsed


# -- item 10: images and texts ------------------------------------------------------------


def _png_16bit_gray(width: int, height: int) -> bytes:
    """A black 16-bit grayscale PNG, written row by row (never the whole image in memory)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    z = zlib.compressobj(9)
    row = b"\x00" * (1 + 2 * width)  # filter byte + samples
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 16, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_item10_16bit_8192_png_refused_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    bomb = _png_16bit_gray(8192, 8192)
    assert len(bomb) < 400_000  # a small file ...
    with Image.open(__import__("io").BytesIO(bomb)) as im:
        assert (im.size, im.mode) == ((8192, 8192), "I;16")  # ... of 128 MiB of samples

    def no_decoding(self: object) -> None:
        raise AssertionError("the image was decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    reason = r"8192x8192 pixels of mode I;16: decoding it would take 134217728 bytes"
    with pytest.raises(PermanentLoadError, match=reason):
        load_cell(bomb, "bytea", LoadLimits())
    with pytest.raises(PermanentLoadError, match=reason):  # the encoders' decoder too
        decode_image(bomb)
    monkeypatch.undo()
    # a 16-bit image within the limit still decodes (to 8 bits)
    small = decode_image(_png_16bit_gray(64, 48))
    assert small.mode == "RGB" and small.size == (64, 48)
    with pytest.raises(ConfigError, match="decompression-bomb limit"):
        LoadLimits(max_image_pixels=10**9)


def test_item10_long_text_refused() -> None:
    limits = LoadLimits()
    text = "word " * (limits.max_text_chars // 5 + 1)
    with pytest.raises(PermanentLoadError, match=r"characters, over the limit of 100000"):
        load_cell(text, "text", limits)
    assert load_cell("word " * 1000, "text", limits) == "word " * 1000


def test_item10_text_windows_limit() -> None:
    from pg_mmretrieval.preprocess import TextPreprocessor

    from .models import minilm_dir

    pre = TextPreprocessor(minilm_dir() / "tokenizer.json", 256, 0, max_windows=4)
    assert len(pre.windows(["word " * 200])) == 1
    with pytest.raises(PermanentLoadError, match=r"windows of 256 tokens, over the limit of 4"):
        pre.windows(["fine", "word " * 2000])
    # truncating encoders encode one window: no limit needed
    cut = TextPreprocessor(minilm_dir() / "tokenizer.json", 256, 0, max_windows=4, truncate=True)
    assert len(cut.windows(["word " * 2000])) == 1


# -- the worker over good and bad rows ----------------------------------------------------


def test_items_4_5_10_worker_dead_letters_bad_rows_and_embeds_good_ones(
    conn: psycopg.Connection[Any], db_url: str, server: str, tmp_path: Path
) -> None:
    root = tmp_path / "images"
    root.mkdir()
    (root / "good.png").write_bytes(GOOD_PNG)
    (root / "bomb.png").write_bytes(_png_16bit_gray(8192, 8192))
    (root / "shadow.png").symlink_to("/etc/shadow")
    name = f"attack_{next(_counter)}_{os.getpid()}"
    conn.execute(f"CREATE TABLE {name} (id int PRIMARY KEY, body text, img text)")
    collections.create_collection(
        conn, name, name, image_column="img", text_columns=["body"], image_kind="auto"
    )
    collections.add_space(conn, name, "pic", "mmr-test", "img", 32)
    collections.add_space(conn, name, "txt", "mmr-test", "body", 32)
    rows = {
        1: ("a caption", str(root / "good.png")),
        2: ("a caption", f"{server}/ok.png"),
        3: ("a caption", str(root / "shadow.png")),
        4: ("a caption", f"{root}/../../etc/passwd"),
        5: ("a caption", f"{server}/redirect?ftp://127.0.0.1/x"),
        6: ("a caption", "http://169.254.169.254/latest/meta-data/"),
        7: ("a caption", str(root / "bomb.png")),
        8: ("a caption", f"{server}/drip"),
        9: ("x" * 2001, f"file://{root}/good.png"),
    }
    for key, (body, img) in rows.items():
        conn.execute(f"INSERT INTO {name} VALUES (%s, %s, %s)", (key, body, img))
    limits = LoadLimits(
        path_roots=(str(root),),
        url_allow_hosts=("127.0.0.1",),
        url_timeout_s=3.0,
        url_deadline_s=1.0,
        max_text_chars=2000,
    )
    config = WorkerConfig(
        collections=(name,),
        once=True,
        batch_size=32,
        retry=RetryPolicy(max_attempts=1, base_s=0.05),
        limits=limits,
    )
    start = time.monotonic()
    stats = Worker(worker_url(db_url), config).run()
    elapsed = time.monotonic() - start
    assert elapsed < 20, elapsed  # the drip (10000 s) was cut at its 1 s deadline
    dead = {
        (space, key): (cls, error)
        for space, key, cls, error in conn.execute(
            "SELECT s.name, f.key, f.error_class, f.error FROM mmr._failed f "
            "JOIN mmr._space s ON s.id = f.space_id JOIN mmr._collection c "
            "ON c.id = f.collection_id WHERE c.name = %s",
            (name,),
        )
    }
    expected = {
        ("pic", 3): ("permanent", "outside the allowed roots"),
        ("pic", 4): ("permanent", "outside the allowed roots"),
        ("pic", 5): ("permanent", "scheme 'ftp' is not allowed"),
        ("pic", 6): ("permanent", "always refused"),
        ("pic", 7): ("permanent", "MMR_MAX_IMAGE_BYTES"),
        ("pic", 8): ("retryable", "total deadline"),
        ("txt", 9): ("permanent", "MMR_MAX_TEXT_CHARS"),
    }
    assert set(dead) == set(expected), dead
    for k, (cls, words) in expected.items():
        assert dead[k][0] == cls and words in dead[k][1], (k, dead[k])
    assert "bytes" not in dead[("pic", 3)][1]  # nothing about /etc/shadow
    embedded = {}
    for space in ("pic", "txt"):
        (table,) = conn.execute(
            "SELECT embedding_table::text FROM mmr.spaces WHERE collection = %s AND space = %s",
            (name, space),
        ).fetchone() or (None,)
        embedded[space] = {r[0] for r in conn.execute(f"SELECT id FROM {table}")}
    assert embedded == {"pic": {1, 2, 9}, "txt": {1, 2, 3, 4, 5, 6, 7, 8}}
    assert stats.written == 2 + 1 + 8  # pic: rows 1, 2, 9; txt: rows 1-8
    assert stats.dead == len(expected)


def test_items_4_5_10_worker_flags_set_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from pg_mmretrieval.cli import cli, worker_cmd

    # the flags write os.environ; recorded here so that the test leaves it as it was
    for var in ("MMR_PATH_ROOTS", "MMR_URL_ALLOW_HOSTS", "MMR_URL_DEADLINE", "MMR_MAX_TEXT_CHARS"):
        monkeypatch.setenv(var, "")
    bad = CliRunner().invoke(cli, ["worker", "--once", "--url-allow-host", "http://x/"])
    assert bad.exit_code == 2 and "neither a host name" in bad.output
    opts: dict[str, object] = {
        "path_roots": ("/srv/a", "/srv/b"),
        "url_allow_hosts": ("127.0.0.1", "*.example.com"),
        "url_deadline": 2.5,
        "max_text_chars": 10,
        "batch_size": 1,
    }
    worker_cmd._apply_limits(opts)
    assert opts == {"batch_size": 1}
    limits = LoadLimits.from_env()
    assert limits.path_roots == ("/srv/a", "/srv/b")
    assert limits.url_allow_hosts == ("127.0.0.1", "*.example.com")
    assert (limits.url_deadline_s, limits.max_text_chars) == (2.5, 10)
