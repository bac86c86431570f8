"""The demo: real worker, real model, real searches, and a page a browser shows."""

from __future__ import annotations

import base64
import html
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pg_mmretrieval.demo import run_demo
from tests.helpers import worker_url


@pytest.fixture(scope="module")
def demo(db_url: str, tmp_path_factory: pytest.TempPathFactory) -> object:
    return run_demo(
        tmp_path_factory.mktemp("demo"), n=150, url=db_url, worker_url=worker_url(db_url)
    )


def test_demo_finds_what_it_asks_for(demo: object) -> None:
    sections = {s.title.split(":")[0]: s for s in demo.sections}  # type: ignore[attr-defined]
    assert demo.rows == 150  # type: ignore[attr-defined]
    # row 1 is the large red circle in the center, row 2 the same in blue, 3 two yellow stars
    assert 1 in [k for k, _ in sections["Text → image"].hits[:3]]
    assert 3 in [k for k, _ in sections["Image → image (a new drawing, not in the table)"].hits[:3]]
    composed = [k for k, _ in sections["Composed"].hits]
    assert 1 not in composed  # the reference itself is excluded
    assert 2 in composed[:3]
    assert all(k <= 100 for k, _ in sections["Filtered"].hits)
    assert len(sections["Filtered"].hits) == 6
    assert demo.seconds < 180  # type: ignore[attr-defined]


def _chromium_dom(page: Path, fragment: str = "") -> subprocess.CompletedProcess[str]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "Debian's chromium is needed (make test installs it: make browser)"
    return subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={page.parent / '.chromium'}",
            "--allow-file-access-from-files",
            "--virtual-time-budget=5000",
            "--dump-dom",
            page.as_uri() + fragment,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_demo_page_shows_every_picture_in_a_browser(demo: object) -> None:
    page: Path = demo.page  # type: ignore[attr-defined]
    text = page.read_text(encoding="utf-8")
    srcs = re.findall(r'<img src="([^"]+)"', text)
    n_hits = sum(len(s.hits) for s in demo.sections)  # type: ignore[attr-defined]
    assert len(srcs) == n_hits + 2  # results plus the two query images
    assert all((page.parent / s).is_file() for s in srcs)
    out = _chromium_dom(page)
    loaded = re.search(r'data-images-loaded="(\d+)"', out.stdout)
    total = re.search(r'data-images-total="(\d+)"', out.stdout)
    assert loaded and total, out.stderr[-2000:]
    assert int(total.group(1)) == len(srcs)
    assert int(loaded.group(1)) == len(srcs)  # every picture decoded and shown


def test_every_section_shows_its_sql_with_the_real_values(demo: Any) -> None:
    text = demo.page.read_text(encoding="utf-8")
    codes = [
        html.unescape(c) for c in re.findall(r"<pre><code[^>]*>(.*?)</code></pre>", text, re.S)
    ]
    assert codes == [s.sql for s in demo.sections]
    by_title = {s.title.split(":")[0]: s.sql for s in demo.sections}
    assert by_title["Text → image"] == (
        "SELECT key, score\n"
        "  FROM mmr.search('demo_shapes', 'clip_image',\n"
        "                  mmr.embed('demo_shapes', 'clip_image', "
        "'a large red circle in the center'),\n"
        "                  k => 6);"
    )
    image_sql = by_title["Image → image (a new drawing, not in the table)"]
    shown = re.match(r"\\set img `base64 < (\S+)`", image_sql)
    assert shown and Path(shown.group(1)) == demo.page.parent / "img" / "query.png"
    assert Path(shown.group(1)).is_file()
    assert "decode(:'img', 'base64')" in image_sql
    assert "mmr.composed_search('demo_shapes', 'clip_image', '1'::jsonb," in by_title["Composed"]
    assert "'weighted', k => 6, params => '{\"alpha\": 0.5}'" in by_title["Composed"]
    assert "spaces => ARRAY['clip_image', 'clip_caption'], k => 6" in by_title["Hybrid"]
    assert 'filter => \'{"id": {"<=": 100}}\'' in by_title["Filtered"]


def test_copy_buttons_copy_in_a_browser(demo: Any) -> None:
    out = _chromium_dom(demo.page, "#copy-test")
    buttons = re.findall(r'<button class="copy"[^>]*>', out.stdout)
    assert len(buttons) == len(demo.sections), out.stderr[-2000:]
    # every button's handler ran to the end (copied, or fell back to asking to select)
    assert all(re.search(r'data-copied="(yes|no)"', b) for b in buttons), buttons


def _embed_available(conn: psycopg.Connection[Any]) -> str | None:
    """None when mmr.embed works on this server, else why not (the skip reason)."""
    if conn.execute("SELECT to_regprocedure('mmr.embed(text,text,text)')").fetchone() == (None,):
        return "mmr.embed does not exist in this schema (issue 13 items 1-4 not merged yet)"
    try:
        conn.execute("SELECT mmr.embed('demo_shapes', 'clip_image', 'probe')")
    except psycopg.Error as e:
        return f"mmr.embed is not usable on this server: {e.diag.message_primary}"
    return None


def _as_psycopg(statement: str) -> str:
    """The shown statement without psql's meta-command: ``:'img'`` becomes the file's base64
    (what ``\\set img `base64 < file``` puts there)."""
    m = re.match(r"\\set img `base64 < (\S+)`\n", statement)
    if m is None:
        return statement
    data = base64.b64encode(Path(m.group(1)).read_bytes()).decode()
    return statement[m.end() :].replace(":'img'", f"'{data}'")


def test_shown_sql_runs_and_gives_the_shown_results(demo: Any, db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        why = _embed_available(conn)
        if why:
            pytest.skip(why)
        for s in demo.sections:
            rows = conn.execute(_as_psycopg(s.sql).encode()).fetchall()
            keys = [int(k) for k, _ in rows]
            assert len(keys) == len(s.hits), s.title
            # the same encoder in the database: the same best results
            assert set(keys[:3]) == {k for k, _ in s.hits[:3]}, s.title
