"""Built-in loaders: bytea, path, url (local HTTP server), text, auto; limits and error classes."""

from __future__ import annotations

import dataclasses
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pg_mmretrieval.errors import ConfigError, PermanentLoadError, RetryableLoadError
from pg_mmretrieval.loaders import LoadLimits, list_loaders, load_cell

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 100
# The test server listens on loopback, which must be opted in (docs/security.md).
SMALL = LoadLimits(max_bytes=1000, url_timeout_s=0.5, url_allow_hosts=("127.0.0.1",))


def rooted(tmp_path: Path) -> LoadLimits:
    """SMALL with tmp_path as the one allowed root of path cells."""
    return dataclasses.replace(SMALL, path_roots=(str(tmp_path),))


class _Handler(http.server.BaseHTTPRequestHandler):
    release = threading.Event()

    def do_GET(self) -> None:
        if self.path == "/slow":
            # hold the answer until the test releases it: the client times out first
            self.release.wait(10)
            return
        routes = {
            "/ok.png": (200, PNG, {}),
            "/missing": (404, b"", {}),
            "/busy": (503, b"", {}),
            "/limited": (429, b"", {}),
            "/big": (200, b"x" * 5000, {}),
            "/liar": (200, b"x" * 10, {"Content-Length": "999999"}),
            "/empty": (200, b"", {}),
        }
        status, body, headers = routes.get(self.path, (404, b"", {}))
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        if "Content-Length" not in headers:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if status == 200 and "Content-Length" not in headers:
            self.wfile.write(body)

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
        _Handler.release.set()
        httpd.shutdown()
        httpd.server_close()


def test_builtin_kinds_registered() -> None:
    assert {"bytea", "path", "url", "text", "auto"} <= set(list_loaders())


def test_bytea() -> None:
    assert load_cell(memoryview(PNG), "bytea", SMALL) == PNG
    with pytest.raises(PermanentLoadError, match="over the limit of 1000 bytes"):
        load_cell(b"x" * 1001, "bytea", SMALL)
    with pytest.raises(PermanentLoadError, match="empty"):
        load_cell(b"", "bytea", SMALL)


def test_path(tmp_path: Path) -> None:
    limits = rooted(tmp_path)
    f = tmp_path / "a.png"
    f.write_bytes(PNG)
    assert load_cell(str(f), "path", limits) == PNG
    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * 2000)
    with pytest.raises(PermanentLoadError, match="over the limit"):
        load_cell(str(big), "path", limits)
    with pytest.raises(PermanentLoadError, match="file not found"):
        load_cell(str(tmp_path / "nope.png"), "path", limits)
    with pytest.raises(PermanentLoadError, match="not a regular file"):
        load_cell(str(tmp_path), "path", limits)


def test_url(server: str) -> None:
    assert load_cell(f"{server}/ok.png", "url", SMALL) == PNG
    with pytest.raises(PermanentLoadError, match="HTTP 404"):
        load_cell(f"{server}/missing", "url", SMALL)
    with pytest.raises(RetryableLoadError, match="HTTP 503"):
        load_cell(f"{server}/busy", "url", SMALL)
    with pytest.raises(RetryableLoadError, match="HTTP 429"):
        load_cell(f"{server}/limited", "url", SMALL)
    with pytest.raises(PermanentLoadError, match="over the limit"):
        load_cell(f"{server}/big", "url", SMALL)
    with pytest.raises(PermanentLoadError, match="999999 bytes"):
        load_cell(f"{server}/liar", "url", SMALL)
    with pytest.raises(PermanentLoadError, match="no content"):
        load_cell(f"{server}/empty", "url", SMALL)
    with pytest.raises(PermanentLoadError, match="scheme 'ftp' is not allowed"):
        load_cell("ftp://example.org/a.png", "url", SMALL)


def test_url_timeout_is_retryable(server: str) -> None:
    with pytest.raises(RetryableLoadError):
        load_cell(f"{server}/slow", "url", SMALL)


def test_connection_refused_is_retryable() -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(RetryableLoadError):
        load_cell(f"http://127.0.0.1:{port}/x", "url", SMALL)


def test_text() -> None:
    assert load_cell("hello", "text", SMALL) == "hello"
    with pytest.raises(PermanentLoadError, match="empty"):
        load_cell("   ", "text", SMALL)
    with pytest.raises(PermanentLoadError, match="over the limit"):
        load_cell("é" * 600, "text", SMALL)


def test_auto(tmp_path: Path, server: str) -> None:
    limits = rooted(tmp_path)
    f = tmp_path / "a.png"
    f.write_bytes(PNG)
    assert load_cell(PNG, "auto", limits) == PNG
    assert load_cell(str(f), "auto", limits) == PNG
    assert load_cell(f"file://{f}", "auto", limits) == PNG
    assert load_cell(f"{server}/ok.png", "auto", limits) == PNG


def test_limits_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MMR_MAX_ITEM_BYTES", "1234")
    monkeypatch.setenv("MMR_URL_TIMEOUT", "2.5")
    assert LoadLimits.from_env() == LoadLimits(max_bytes=1234, url_timeout_s=2.5)
    monkeypatch.setenv("MMR_URL_TIMEOUT", "soon")
    with pytest.raises(ConfigError, match="MMR_URL_TIMEOUT"):
        LoadLimits.from_env()
