"""The docs cannot drift from the database catalog or the CLI."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import psycopg

DOCS = Path(__file__).resolve().parent.parent / "docs"
README = DOCS.parent / "README.md"


def _all_docs() -> str:
    return "\n".join(p.read_text(encoding="utf-8") for p in sorted(DOCS.glob("*.md")))


def test_every_public_sql_function_and_view_is_documented(conn: psycopg.Connection[Any]) -> None:
    names = {
        r[0]
        for r in conn.execute(
            "SELECT p.proname FROM pg_proc p WHERE p.pronamespace = 'mmr'::regnamespace "
            "AND p.proname NOT LIKE '\\_%' "
            "UNION SELECT c.relname FROM pg_class c WHERE c.relnamespace = 'mmr'::regnamespace "
            "AND c.relkind = 'v' AND c.relname NOT LIKE '\\_%'"
        )
    }
    docs = _all_docs()
    missing = sorted(n for n in names if not re.search(rf"`mmr\.{re.escape(n)}[`(]", docs))
    assert missing == [], f"undocumented in docs/*.md: {missing}"


def test_readme_starts_with_the_two_commands() -> None:
    text = README.read_text(encoding="utf-8")
    first_block = text.split("```", 2)[1]
    assert "make demo" in first_block and "make test" in first_block
    assert text.index("make demo") < text.index("## 30 seconds of SQL")
