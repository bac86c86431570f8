"""Docs that run: every ```sql and ```python block of README.md and docs/*.md runs against the
embedded server, page by page, in order, in a fresh database with the mmr schema.

A page's blocks share one database (SQL) and one namespace (Python): a later block may use what
an earlier one created.  Python blocks see ``MMR_DATABASE_URL`` set to that database.

Opting out, always with a reason (an empty reason fails the test):

* a block: ``<!-- not run: REASON -->`` on the line before its fence (blank lines between are
  allowed);
* a page: ``<!-- docs-run: skip page: REASON -->`` anywhere in it.

``<!-- run as: alembic -->`` before a Python block defining ``upgrade()``/``downgrade()`` runs
``upgrade()`` then ``downgrade()`` inside an Alembic operations context on the page's database.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pg_mmretrieval import install

from .conftest import REPO, _with_database

FENCE = re.compile(
    r"^(?P<indent>[ \t]*)```(?P<lang>sql|python)[ \t]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$",
    re.M | re.S,
)
SKIP_BLOCK = re.compile(r"^\s*<!--\s*not run:(?P<reason>.*?)-->\s*$")
SKIP_PAGE = re.compile(r"<!--\s*docs-run:\s*skip page:(?P<reason>.*?)-->", re.S)
RUN_AS = re.compile(r"^\s*<!--\s*run as:\s*(?P<how>[\w-]+)\s*-->\s*$")


@dataclass(frozen=True)
class Block:
    page: str
    line: int
    lang: str
    code: str
    skip: str | None  # the reason, when marked not run
    run_as: str | None

    def where(self) -> str:
        return f"{self.page}:{self.line} ({self.lang})"


def pages() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def _marker_line(text: str, start: int) -> str:
    """The nearest non-blank line before offset ``start``."""
    for line in reversed(text[:start].splitlines()):
        if line.strip():
            return line
    return ""


def blocks(path: Path) -> list[Block]:
    text = path.read_text(encoding="utf-8")
    rel = str(path.relative_to(REPO)) if path.is_relative_to(REPO) else path.name
    out = []
    for m in FENCE.finditer(text):
        indent = m.group("indent")
        code = "\n".join(
            ln[len(indent) :] if ln.startswith(indent) else ln
            for ln in m.group("body").splitlines()
        )
        marker = _marker_line(text, m.start())
        skip = SKIP_BLOCK.match(marker)
        run_as = RUN_AS.match(marker)
        out.append(
            Block(
                page=rel,
                line=text.count("\n", 0, m.start()) + 1,
                lang=m.group("lang"),
                code=code + "\n",
                skip=skip.group("reason").strip() if skip else None,
                run_as=run_as.group("how") if run_as else None,
            )
        )
    return out


def page_skip(path: Path) -> str | None:
    m = SKIP_PAGE.search(path.read_text(encoding="utf-8"))
    return m.group("reason").strip() if m else None


@contextmanager
def fresh_database(server_url: str) -> Iterator[str]:
    """A new database with the mmr schema, dropped afterwards."""
    name = f"docs_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = _with_database(server_url, name)
    try:
        install.upgrade(url)
        yield url
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture()
def page_db(server_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The page's database; MMR_DATABASE_URL points at it."""
    with fresh_database(server_url) as url:
        monkeypatch.setenv("MMR_DATABASE_URL", url)
        yield url


def _run_alembic(namespace: dict[str, Any], server_url: str) -> None:
    """``upgrade()`` then ``downgrade()`` of a migration, in a database of their own (a
    migration starts from what the previous one left, not from the page's other blocks)."""
    from alembic.migration import MigrationContext
    from alembic.operations import Operations
    from sqlalchemy import create_engine

    with fresh_database(server_url) as url:
        engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
        try:
            for step in ("upgrade", "downgrade"):
                with (
                    engine.begin() as connection,
                    Operations.context(MigrationContext.configure(connection)),
                ):
                    namespace[step]()
        finally:
            engine.dispose()


def _run(block: Block, url: str, server_url: str, namespace: dict[str, Any]) -> None:
    if block.lang == "sql":
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(block.code.encode())
        return
    code = compile(block.code, block.where(), "exec")
    exec(code, namespace)
    if block.run_as == "alembic":
        _run_alembic(namespace, server_url)
    elif block.run_as is not None:
        raise AssertionError(f"{block.where()}: unknown `run as: {block.run_as}`")


@pytest.mark.parametrize("page", pages(), ids=lambda p: str(p.relative_to(REPO)))
def test_page_runs(
    page: Path, page_db: str, server_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    reason = page_skip(page)
    if reason is not None:
        assert reason, f"{page}: `docs-run: skip page:` needs a reason"
        pytest.skip(f"{page.name}: {reason}")
    found = blocks(page)
    runnable = [b for b in found if b.skip is None]
    for b in found:
        assert b.skip is None or b.skip, f"{b.where()}: `not run:` needs a reason"
    if not runnable:
        pytest.skip(f"{page.name}: no runnable block")
    monkeypatch.chdir(REPO)
    namespace: dict[str, Any] = {"__name__": f"docs_{page.stem}"}
    for b in runnable:
        try:
            _run(b, page_db, server_url, namespace)
        except Exception as e:
            raise AssertionError(
                f"{b.where()} failed: {type(e).__name__}: {e}\n"
                "Fix the block, or mark it with `<!-- not run: REASON -->` on the line before "
                "its fence (see tests/test_docs_run.py)."
            ) from e
    conn = namespace.get("conn")
    if isinstance(conn, psycopg.Connection):
        conn.close()


def test_the_extractor_sees_markers_and_indented_blocks(tmp_path: Path) -> None:
    page = tmp_path / "p.md"
    page.write_text(
        "# t\n\n<!-- not run: needs a GPU -->\n\n```sql\nSELECT 1;\n```\n\n"
        "* item:\n\n  ```python\n  x = 1\n  ```\n\n<!-- run as: alembic -->\n```python\n"
        "def upgrade() -> None: ...\n```\n",
        encoding="utf-8",
    )
    got = [(b.lang, b.skip, b.run_as, b.code) for b in blocks(page)]
    assert got == [
        ("sql", "needs a GPU", None, "SELECT 1;\n"),
        ("python", None, None, "x = 1\n"),
        ("python", None, "alembic", "def upgrade() -> None: ...\n"),
    ]
    assert page_skip(page) is None


def _sql_index() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location("sql_index", REPO / "scripts" / "sql_index.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sql_md_lists_every_public_function(conn: psycopg.Connection[Any]) -> None:
    """docs/sql.md's index has every public function with its signature, result and whether
    PUBLIC may run it, as the catalog of a fresh install says (regenerate with
    `python scripts/sql_index.py --write`)."""
    idx = _sql_index()
    section = idx.current()
    assert section is not None, "docs/sql.md has no generated index: run scripts/sql_index.py"
    listed = [
        tuple(c.strip() for c in line.split(" | ")[:3])
        for line in section.splitlines()
        if line.startswith("| `mmr.")
    ]
    expected = [
        (f"| `mmr.{n}({a})`", f"`{r}`", "yes" if p else "no (admin)")
        for n, a, r, p in idx.rows(conn)
    ]
    missing = sorted(set(expected) - set(listed))
    stale = sorted(set(listed) - set(expected))
    assert (missing, stale) == ([], []), (
        "docs/sql.md's index differs from the catalog: run `python scripts/sql_index.py --write`"
    )
