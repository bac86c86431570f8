"""Test fixtures: a real PostgreSQL (the embedded one unless MMR_DATABASE_URL is set).

Each test module gets a fresh database with the mmr schema installed.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

REPO = Path(__file__).resolve().parent.parent

# The tests' embedded server lives in the checkout, apart from the user's own server.
if not os.environ.get("MMR_DATABASE_URL"):
    os.environ.setdefault("MMR_DATA_DIR", str(REPO / ".mmr-test-data"))

from pg_mmretrieval import db, install  # noqa: E402


def _with_database(url: str, dbname: str) -> str:
    if "?" in url:
        base, query = url.split("?", 1)
        return re.sub(r"/[^/]*$", f"/{dbname}", base) + "?" + query
    return re.sub(r"/[^/]*$", f"/{dbname}", url)


@pytest.fixture(scope="session")
def server_url() -> str:
    """URL of the server the tests use (a maintenance database on it)."""
    return db.resolve_url()


@pytest.fixture(scope="module")
def db_url(server_url: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh database with the mmr schema installed, dropped after the module."""
    name = "t_" + re.sub(r"\W", "_", request.module.__name__.split(".")[-1])[:40]
    name = f"{name}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = _with_database(server_url, name)
    install.upgrade(url)
    try:
        yield url
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture()
def conn(db_url: str) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection to the module's database."""
    with db.connect(db_url, autocommit=True) as c:
        yield c


@pytest.fixture(scope="module")
def empty_db_url(server_url: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh database without the mmr schema."""
    name = f"e_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _with_database(server_url, name)
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
