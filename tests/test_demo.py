"""The demo: real worker, real model, real searches, and a page a browser shows."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

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


def test_demo_page_shows_every_picture_in_a_browser(demo: object) -> None:
    page: Path = demo.page  # type: ignore[attr-defined]
    text = page.read_text(encoding="utf-8")
    srcs = re.findall(r'<img src="([^"]+)"', text)
    n_hits = sum(len(s.hits) for s in demo.sections)  # type: ignore[attr-defined]
    assert len(srcs) == n_hits + 2  # results plus the two query images
    assert all((page.parent / s).is_file() for s in srcs)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "Debian's chromium is needed (make test installs it: make browser)"
    out = subprocess.run(
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
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    loaded = re.search(r'data-images-loaded="(\d+)"', out.stdout)
    total = re.search(r'data-images-total="(\d+)"', out.stdout)
    assert loaded and total, out.stderr[-2000:]
    assert int(total.group(1)) == len(srcs)
    assert int(loaded.group(1)) == len(srcs)  # every picture decoded and shown
