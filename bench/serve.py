"""Throughput of ``mmr serve`` at 1, 4 and 16 concurrent clients, and what batching buys.

    .venv/bin/python bench/serve.py [--seconds 5] [--space words]

Starts ``mmr serve`` as a subprocess (its own interpreter, as in production) on a fresh
database of the embedded server whose collection has a MiniLM text space (``words``) and
shapes-clip image and caption spaces (``clip_image``, ``clip_caption``).  Each client is a
thread with one keep-alive HTTP connection sending ``POST /v1/embed`` one request at a time
(shape captions, or shape PNGs in base64 for ``clip_image``) for ``--seconds``.

Printed per row: requests/s, p50 latency, and the service's own count of items per encoder run.
The baseline is one client against a service started with ``--max-wait-ms 0`` (no request ever
waits for company: the best one-at-a-time configuration); the ratio column divides by it.
The issue's target: 16 concurrent clients >= 3x one-at-a-time, on CPU.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
if not os.environ.get("MMR_DATABASE_URL"):
    os.environ.setdefault("MMR_DATA_DIR", str(REPO / ".mmr-test-data"))

import psycopg  # noqa: E402

from pg_mmretrieval import db, install  # noqa: E402
from pg_mmretrieval.shapes.generator import generate  # noqa: E402

TOKEN = "bench-token-0123456789abcdef"


def _setup(server_url: str) -> tuple[str, str, list[str], list[str]]:
    from tests.conftest import _with_database

    name = f"bench_serve_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_url, autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    url = _with_database(server_url, name)
    install.upgrade(url)
    samples = generate(64, seed=5)
    texts = [s.caption for s in samples]
    images = []
    for s in samples:
        buf = io.BytesIO()
        s.image.save(buf, format="PNG")
        images.append(base64.b64encode(buf.getvalue()).decode())
    with db.connect(url, autocommit=True) as c:
        c.execute("CREATE TABLE items (id int PRIMARY KEY, image bytea, caption text)")
        c.execute(
            "SELECT mmr.create_collection('items', 'items', image_column => 'image', "
            "text_columns => ARRAY['caption'])"
        )
        c.execute("SELECT mmr.add_space('items', 'words', 'minilm', 'caption', 384)")
        c.execute("SELECT mmr.add_space('items', 'clip_image', 'shapes-clip', 'image', 128)")
        c.execute("SELECT mmr.add_space('items', 'clip_caption', 'shapes-clip', 'caption', 128)")
    return name, url, texts, images


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _call(conn: http.client.HTTPConnection, method: str, path: str, body: Any = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    conn.request(
        method,
        path,
        body=data,
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    resp = conn.getresponse()
    out = json.loads(resp.read())
    if resp.status != 200:
        raise RuntimeError(f"{resp.status}: {out}")
    return out


def _start(url: str, max_wait_ms: float) -> tuple[subprocess.Popen[bytes], int]:
    port = _free_port()
    env = dict(os.environ, MMR_SERVE_TOKEN=TOKEN)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pg_mmretrieval",
            "serve",
            "--port",
            str(port),
            "--max-wait-ms",
            str(max_wait_ms),
            "--database-url",
            db.with_user(url, db.WORKER_ROLE),
        ],
        env=env,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            _call(conn, "GET", "/healthz")
            conn.close()
            return proc, port
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("mmr serve did not start") from None
            time.sleep(0.05)


def _run(port: int, clients: int, seconds: float, bodies: list[dict[str, Any]]) -> dict[str, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    before = _call(conn, "GET", "/v1/stats")
    latencies: list[float] = []
    lock = threading.Lock()
    start = threading.Barrier(clients + 1)
    stop_at = [0.0]

    def client(i: int) -> None:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        mine: list[float] = []
        n = i
        start.wait()
        while time.monotonic() < stop_at[0]:
            t = time.perf_counter()
            _call(c, "POST", "/v1/embed", bodies[n % len(bodies)])
            mine.append(time.perf_counter() - t)
            n += clients
        c.close()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    stop_at[0] = time.monotonic() + seconds
    t0 = time.monotonic()
    start.wait()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    after = _call(conn, "GET", "/v1/stats")
    conn.close()
    latencies.sort()
    batches = after["batches"] - before["batches"]
    items = after["items"] - before["items"]
    return {
        "clients": clients,
        "requests": len(latencies),
        "rps": len(latencies) / elapsed,
        "p50_ms": 1000 * latencies[len(latencies) // 2],
        "items_per_run": items / max(1, batches),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=5.0, help="per measurement")
    ap.add_argument("--space", default="words", choices=["words", "clip_caption", "clip_image"])
    ap.add_argument("--max-wait-ms", type=float, default=5.0, help="the service's setting")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    server_url = db.resolve_url()
    name, url, texts, images = _setup(server_url)
    if args.space == "clip_image":
        bodies = [{"collection": "items", "space": args.space, "image_base64": b} for b in images]
    else:
        bodies = [{"collection": "items", "space": args.space, "text": t} for t in texts]
    rows: list[dict[str, Any]] = []
    try:
        for wait, counts in ((0.0, (1,)), (args.max_wait_ms, (1, 4, 16))):
            proc, port = _start(url, wait)
            try:
                _run(port, 4, 1.0, bodies)  # warm-up: sessions loaded, first runs done
                for n in counts:
                    row = _run(port, n, args.seconds, bodies)
                    row["max_wait_ms"] = wait
                    rows.append(row)
            finally:
                proc.terminate()
                proc.wait(30)
    finally:
        with psycopg.connect(server_url, autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    base = rows[0]["rps"]
    print(f"mmr serve, space {args.space}, {args.seconds:g} s per row, {os.cpu_count()} CPUs")
    print(
        f"{'clients':>7} {'max-wait':>8} {'req/s':>8} {'p50 ms':>8} {'items/run':>9} {'ratio':>6}"
    )
    for r in rows:
        r["ratio"] = r["rps"] / base
        print(
            f"{r['clients']:>7} {r['max_wait_ms']:>8g} {r['rps']:>8.1f} {r['p50_ms']:>8.2f} "
            f"{r['items_per_run']:>9.2f} {r['ratio']:>5.2f}x"
        )
    if args.json:
        print(json.dumps({"space": args.space, "rows": rows}))


if __name__ == "__main__":
    main()
