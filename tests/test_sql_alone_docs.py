"""docs/sql-alone.md runs: every ```sql block, in order, through psql, on a shapes table.

Blocks preceded by ``<!-- not run: reason -->`` are left out; a ```sh block that starts the
worker is replaced by one worker pass (as ``mmr_worker``).  Blocks calling ``mmr.embed`` (or a
hybrid search that embeds its text itself) need it on the server; where it is missing or
unusable they are left out and the test reports that as a skip, after running every other block.
"""

from __future__ import annotations

import io
import re
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest

from pg_mmretrieval.shapes.generator import Attributes, canonical_caption, generate, render
from pg_mmretrieval.worker import Worker, WorkerConfig
from tests.helpers import worker_url
from tests.test_upgrade_sql import _psql

PAGE = Path(__file__).resolve().parent.parent / "docs" / "sql-alone.md"
BLOCK = re.compile(r"(?:<!-- not run: (?P<why>.*?) -->\n)?```(?P<lang>\w+)\n(?P<body>.*?)```", re.S)

# rows 1-5 are the scenes the page asks about, the rest generated (as in `mmr demo`)
SCENES = [
    Attributes("circle", "red", "large", "center", 1),
    Attributes("circle", "blue", "large", "center", 1),
    Attributes("star", "yellow", "small", "top", 2),
    Attributes("triangle", "green", "large", "left", 1),
    Attributes("square", "purple", "small", "right", 3),
]


def _png(img: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def blocks() -> list[tuple[str, str, str | None]]:
    """(language, body, why it is not run) of every fenced block of the page, in order."""
    text = PAGE.read_text(encoding="utf-8")
    return [(m["lang"], m["body"], m["why"]) for m in BLOCK.finditer(text)]


@pytest.fixture(scope="module")
def shapes_db(db_url: str) -> str:
    rng = np.random.default_rng(7)
    rows = [(i + 1, _png(render(a, rng)), canonical_caption(a)) for i, a in enumerate(SCENES)]
    rows += [
        (len(SCENES) + 1 + i, _png(s.image), s.caption) for i, s in enumerate(generate(115, seed=7))
    ]
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE shapes (id int PRIMARY KEY, image bytea, caption text)")
        with conn.cursor().copy("COPY shapes (id, image, caption) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
    return db_url


def _psql_run(url: str, body: str, cwd: Path) -> str:
    done = subprocess.run(
        [_psql(), "-X", "-q", "-A", "-t", "-F", "|", "-v", "ON_ERROR_STOP=1", "-d", url, "-f", "-"],
        input=body,
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, f"block failed:\n{body}\n{done.stderr[-3000:]}"
    return done.stdout


def _embed_unusable(url: str) -> str | None:
    with psycopg.connect(url, autocommit=True) as conn:
        if conn.execute("SELECT to_regprocedure('mmr.embed(text,text,text)')").fetchone() == (
            None,
        ):
            return "mmr.embed does not exist in this schema (issue 13 items 1-4 not merged yet)"
        try:
            conn.execute("SELECT mmr.embed('shapes', 'clip_image', 'probe')")
        except psycopg.Error as e:
            return f"mmr.embed is not usable on this server: {e.diag.message_primary}"
    return None


def _needs_embed(body: str) -> bool:
    """Calls mmr.embed, or a hybrid search that embeds its query text itself (no vectors)."""
    return "mmr.embed(" in body or ("mmr.hybrid_search(" in body and "vectors =>" not in body)


def _keys(out: str) -> list[int]:
    return [int(line.split("|")[0]) for line in out.splitlines() if line.strip()]


def test_page_has_the_walkthrough() -> None:
    found = blocks()
    sql = [b for lang, b, why in found if lang == "sql" and why is None]
    assert len(sql) >= 10
    for needle in (
        "mmr.create_collection",
        "mmr.embed('shapes', 'clip_image', 'a large red circle')",
        "decode(:'img', 'base64')",
        "mmr.composed_search",
        "mmr.hybrid_search",
        "filter =>",
        "rerank =>",
        "mmr.check",
    ):
        assert any(needle in b for b in sql), needle
    assert any("mmr worker" in b for lang, b, _ in found if lang == "sh")
    assert any("mmr db upgrade --sql" in b for lang, b, _ in found if lang == "sh")


def test_every_sql_block_runs_in_order(shapes_db: str, tmp_path: Path) -> None:
    star = render(Attributes("star", "yellow", "small", "top", 2), np.random.default_rng(3))
    (tmp_path / "star.png").write_bytes(_png(star))
    outputs: dict[str, str] = {}
    left_out: list[str] = []
    embed_problem: str | None = None
    embed_checked = False
    for lang, body, why in blocks():
        if lang == "sh":
            if re.search(r"^mmr worker\b", body, re.M):
                Worker(
                    worker_url(shapes_db), WorkerConfig(collections=("shapes",), once=True)
                ).run()
            continue
        if lang != "sql" or why is not None:
            continue
        if _needs_embed(body):
            if not embed_checked:
                embed_problem, embed_checked = _embed_unusable(shapes_db), True
            if embed_problem:
                left_out.append(body.splitlines()[0])
                continue
        outputs[body] = _psql_run(shapes_db, body, tmp_path)

    def out_of(needle: str) -> str:
        (match,) = [o for b, o in outputs.items() if needle in b]
        return match

    status = out_of("FROM mmr.status('shapes')").splitlines()
    assert sorted(line.split("|")[0] for line in status) == ["clip_caption", "clip_image"]
    assert all(line.split("|")[1] == line.split("|")[2] == "120" for line in status)
    assert all(line.split("|")[3:] == ["0", "0"] for line in status)
    check = out_of("FROM mmr.check('shapes')").splitlines()
    assert all(line.split("|")[3:] == ["0", "0", "0"] for line in check), check
    if left_out:
        pytest.skip(f"{len(left_out)} blocks calling mmr.embed were not run: {embed_problem}")
    assert 1 in _keys(out_of("'a large red circle'"))[:3]
    assert 3 in _keys(out_of("decode(:'img', 'base64')"))[:3]
    assert _keys(out_of("WHERE id = 3)"))[0] == 3  # the row itself is nearest
    composed = _keys(out_of("'weighted', k => 5, params => '{\"alpha\": 0.5}') s"))
    assert 1 not in composed and 2 in composed[:3]
    assert 4 in _keys(out_of("'green triangle'"))[:3]
    assert all(k <= 100 for k in _keys(out_of('filter => \'{"id"')))
