"""The examples run as scripts, and the guides' code is the examples' code (so neither drifts)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((REPO / "examples").glob("*.py"))
GUIDES = {
    "docs/python.md": ["examples/client_quickstart.py", "examples/client_async.py"],
    "docs/sqlalchemy.md": ["examples/sqlalchemy_quickstart.py", "examples/sqlalchemy_async.py"],
    "docs/alembic.md": [
        "tests/alembic_app/env.py",
        "tests/alembic_app/models.py",
        *(
            str(p.relative_to(REPO))
            for p in sorted((REPO / "tests/alembic_app/versions").glob("a*.py"))
        ),
        "tests/test_alembic_ops.py",
    ],
}


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.name)
def test_example_runs(script: Path, db_url: str) -> None:
    env = {**os.environ, "MMR_DATABASE_URL": db_url, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _blocks(markdown: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", markdown, flags=re.S)


@pytest.mark.parametrize("guide", sorted(GUIDES))
def test_guide_code_is_tested_code(guide: str) -> None:
    blocks = _blocks((REPO / guide).read_text(encoding="utf-8"))
    assert blocks, f"{guide} has no python blocks"
    sources = [(REPO / f).read_text(encoding="utf-8") for f in GUIDES[guide]]
    for block in blocks:
        assert any(block in src for src in sources), (
            f"this block of {guide} is not verbatim in {GUIDES[guide]}:\n{block}"
        )
