"""The mmr command end to end (subprocesses against the module's database)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import psycopg

from .helpers import unit_vectors


def mmr_cli(url: str, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MMR_DATABASE_URL": url}
    return subprocess.run(
        [sys.executable, "-m", "pg_mmretrieval", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        input=input,
    )


def test_collection_lifecycle_and_search_from_the_cli(
    db_url: str, conn: psycopg.Connection[Any]
) -> None:
    conn.execute("CREATE TABLE clitab (id int PRIMARY KEY, caption text, img bytea)")
    conn.execute("INSERT INTO clitab SELECT g, 'c' || g, NULL FROM generate_series(1, 30) g")
    r = mmr_cli(
        db_url,
        "collection",
        "create",
        "clic",
        "clitab",
        "--text-column",
        "caption",
        "--image-column",
        "img",
    )
    assert r.returncode == 0, r.stderr
    assert "created collection 'clic'" in r.stdout
    r = mmr_cli(
        db_url,
        "collection",
        "add-space",
        "clic",
        "ext",
        "--encoder",
        "external",
        "--dimensions",
        "4",
    )
    assert r.returncode == 0, r.stderr
    r = mmr_cli(
        db_url,
        "collection",
        "add-space",
        "clic",
        "cap",
        "--encoder",
        "mmr-test",
        "--column",
        "caption",
    )
    assert r.returncode == 0, r.stderr  # dimension taken from the encoder
    listing = json.loads(mmr_cli(db_url, "collection", "list", "--json").stdout)
    (c,) = [c for c in listing if c["collection"] == "clic"]
    assert {(s["space"], s["dimensions"]) for s in c["spaces"]} == {("ext", 4), ("cap", 32)}
    table = mmr_cli(db_url, "collection", "list")
    assert "clic" in table.stdout and "mmr-test" in table.stdout

    vecs = unit_vectors(30, 4)
    conn.execute(
        "SELECT mmr.put_embeddings('clic', 'ext', %s::jsonb[], %s::vector[])",
        ([str(i) for i in range(1, 31)], [str(v.tolist()) for v in vecs]),
    )
    r = mmr_cli(
        db_url,
        "search",
        "clic",
        "ext",
        "--vector",
        json.dumps(vecs[3].tolist()),
        "-k",
        "3",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    hits = json.loads(r.stdout)
    assert hits[0]["key"] == 4 and hits[0]["rank"] == 1 and len(hits) == 3
    r = mmr_cli(db_url, "search", "clic", "ext", "--vector", json.dumps(vecs[3].tolist()))
    assert r.returncode == 0 and "score" in r.stdout
    # a text query is embedded with the space's encoder
    r = mmr_cli(db_url, "search", "clic", "cap", "--text", "c7", "--json")
    assert r.returncode == 0, r.stderr

    r = mmr_cli(db_url, "collection", "drop", "clic", input="n\n")
    assert r.returncode != 0  # declined
    r = mmr_cli(db_url, "collection", "drop", "clic", "--yes")
    assert r.returncode == 0 and "dropped" in r.stdout


def test_cli_errors_are_one_clear_line_and_exit_nonzero(db_url: str) -> None:
    r = mmr_cli(db_url, "search", "nope", "s", "--vector", "[1, 2]")
    assert r.returncode == 2  # a user's mistake (issue 16): exit 2, as click's usage errors
    assert r.stderr.startswith("error: collection 'nope' does not exist")
    assert "Traceback" not in r.stderr
    r = mmr_cli(db_url, "search", "nope", "s", "--vector", "[1, 2")
    assert r.returncode == 2 and "not valid JSON" in r.stderr
    r = mmr_cli(db_url, "search", "nope", "s")
    assert r.returncode == 2 and "exactly one of" in r.stderr
    r = mmr_cli(db_url, "collection", "create", "x", "no_such_table")
    assert r.returncode == 2 and "does not exist" in r.stderr
    r = mmr_cli("postgresql://nobody@127.0.0.1:1/none", "db", "current")
    assert r.returncode == 1 and "cannot connect" in r.stderr


def test_every_command_has_help_with_an_example() -> None:
    for args in (
        [],
        ["server"],
        ["db"],
        ["collection"],
        ["search"],
    ):
        r = subprocess.run(
            [sys.executable, "-m", "pg_mmretrieval", *args, "--help"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert r.returncode == 0, r.stderr
        assert "Example" in r.stdout, args
