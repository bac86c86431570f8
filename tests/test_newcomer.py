"""Issue 16: the newcomer's path never dead-ends silently.

Validation where the mistake is made (the encoder catalog and mmr.add_space), spaces no worker
can serve reported everywhere, and no silent empty search results.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pg_mmretrieval import install
from pg_mmretrieval.encoder_catalog import unservable
from pg_mmretrieval.worker import Worker, WorkerConfig

from .helpers import worker_url
from .test_cli import mmr_cli


def _mmr(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``mmr`` with the worker logging in as mmr_worker (never as a superuser)."""
    env = {**os.environ, "MMR_DATABASE_URL": url, "MMR_WORKER_DATABASE_URL": worker_url(url)}
    return subprocess.run(
        [sys.executable, "-m", "pg_mmretrieval", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _notices(conn: psycopg.Connection[Any]) -> list[tuple[str, str]]:
    """(message, hint) of every notice from now on (a Diagnostic is valid only in the handler)."""
    seen: list[tuple[str, str]] = []
    conn.add_notice_handler(lambda d: seen.append((d.message_primary or "", d.message_hint or "")))
    return seen


@pytest.fixture()
def notes(conn: psycopg.Connection[Any]) -> Iterator[psycopg.Connection[Any]]:
    """A table ``notes`` (id, body text, img bytea) registered as collection ``notes``."""
    conn.execute("SELECT mmr.drop_collection(name) FROM mmr._collection WHERE name = 'notes'")
    conn.execute("DROP TABLE IF EXISTS notes CASCADE")
    conn.execute("CREATE TABLE notes (id int PRIMARY KEY, body text, img bytea)")
    conn.execute(
        "SELECT mmr.create_collection('notes', 'notes', image_column => 'img', "
        "text_columns => '{body}')"
    )
    yield conn
    conn.execute("SELECT mmr.drop_collection('notes')")
    conn.execute("DROP TABLE notes")


def test_upgrade_fills_the_encoder_catalog(conn: psycopg.Connection[Any], db_url: str) -> None:
    conn.execute("DELETE FROM mmr._encoder")
    install.upgrade(db_url)
    row = conn.execute(
        "SELECT dimensions, modalities, origin FROM mmr._encoder WHERE name = 'mmr-test'"
    ).fetchone()
    assert row == (32, ["image", "text"], "plugin")


def test_add_space_rejects_a_misspelled_encoder(notes: psycopg.Connection[Any]) -> None:
    with pytest.raises(psycopg.errors.UndefinedObject) as e:
        notes.execute("SELECT mmr.add_space('notes', 'v', 'mmr-tset', 'body', 32)")
    assert "encoder 'mmr-tset' is unknown" in str(e.value)
    assert "mmr-test (32-d, image+text)" in (e.value.diag.message_detail or "")
    assert "mmr.declare_encoder" in (e.value.diag.message_hint or "")


def test_add_space_rejects_a_wrong_dimension(notes: psycopg.Connection[Any]) -> None:
    with pytest.raises(psycopg.errors.InvalidParameterValue) as e:
        notes.execute("SELECT mmr.add_space('notes', 'v', 'mmr-test', 'body', 512)")
    assert "produces 32-dimensional vectors, not 512" in str(e.value)
    assert e.value.diag.message_hint == "Pass dimensions => 32."


def test_add_space_rejects_a_modality_the_encoder_lacks(notes: psycopg.Connection[Any]) -> None:
    notes.execute("SELECT mmr.declare_encoder('remote-text-only', 8, '{text}')")
    with pytest.raises(psycopg.errors.InvalidParameterValue) as e:
        notes.execute("SELECT mmr.add_space('notes', 'v', 'remote-text-only', 'img', 8)")
    assert "does not embed image" in str(e.value)
    assert "mmr-test" in (e.value.diag.message_hint or "")


def test_declare_encoder_checks_its_arguments(conn: psycopg.Connection[Any]) -> None:
    for args in ("'external', 8", "'x', 0", "'x', 8, '{audio}'", "'', 8"):
        with pytest.raises(psycopg.errors.InvalidParameterValue):
            conn.execute(f"SELECT mmr.declare_encoder({args})")


def test_declare_encoder_is_administrative(conn: psycopg.Connection[Any]) -> None:
    granted = conn.execute(
        "SELECT has_function_privilege('public', 'mmr.declare_encoder(text,int,text[],text)', "
        "'EXECUTE'), has_function_privilege('public', 'mmr._notice_unsearchable(int)', "
        "'EXECUTE'), has_table_privilege('public', 'mmr._unservable', 'SELECT')"
    ).fetchone()
    assert granted == (False, True, False)


def test_a_remote_encoder_no_worker_has_is_reported_and_once_exits_nonzero(
    notes: psycopg.Connection[Any], db_url: str
) -> None:
    notes.execute("SELECT mmr.declare_encoder('remote-only', 8, '{text}')")
    notes.execute("SELECT mmr.add_space('notes', 'rv', 'remote-only', 'body', 8)")
    notes.execute("INSERT INTO notes SELECT g, 'note ' || g FROM generate_series(1, 5) g")
    assert unservable(notes, "notes") == []  # declared: the catalog alone cannot tell

    stats = Worker(worker_url(db_url), WorkerConfig(collections=("notes",), once=True)).run()
    assert stats.written == 0
    assert "this worker has no encoder 'remote-only'" in stats.unservable["rv (version 1)"]
    (u,) = unservable(notes, "notes")
    assert (u.space, u.encoder) == ("rv", "remote-only")
    assert "no encoder 'remote-only'" in u.reason

    env_url = db_url
    r = mmr_cli(env_url, "status")
    assert r.returncode == 0, r.stderr
    assert "space 'rv' (version 1) of collection 'notes' cannot be served" in r.stderr
    r = mmr_cli(env_url, "status", "--json")  # --json is unchanged: the rows only
    assert r.returncode == 0 and isinstance(json.loads(r.stdout), list)
    r = mmr_cli(env_url, "check", "notes")
    assert r.returncode == 1 and "cannot be served" in r.stderr
    r = mmr_cli(env_url, "failed", "list", "--collection", "notes")
    assert r.returncode == 0 and "cannot be served" in r.stderr
    r = _mmr(env_url, "worker", "--once", "--collection", "notes")
    assert r.returncode == 3, r.stderr
    assert "error: space rv (version 1) was not served" in r.stderr
    assert "started: serving" in r.stderr and "NOT serving 1 space(s)" in r.stderr
    assert "PostmasterInfo" not in r.stderr and "pg_ctl" not in r.stderr  # quiet server logs


def test_a_stale_catalog_entry_is_reported_without_a_worker(
    notes: psycopg.Connection[Any],
) -> None:
    notes.execute("SELECT mmr.declare_encoder('shrinking', 8, '{text}')")
    notes.execute("SELECT mmr.add_space('notes', 'sv', 'shrinking', 'body', 8)")
    notes.execute("SELECT mmr.declare_encoder('shrinking', 16, '{text}')")
    (u,) = unservable(notes, "notes")
    assert u.reason == "space has 8 dimensions but encoder 'shrinking' produces 16"


def test_search_over_queued_rows_without_a_worker_says_so(
    notes: psycopg.Connection[Any], db_url: str
) -> None:
    notes.execute("SELECT mmr.add_space('notes', 'tv', 'mmr-test', 'body', 32)")
    notes.execute("INSERT INTO notes SELECT g, 'note ' || g FROM generate_series(1, 30) g")
    seen = _notices(notes)
    q = "[" + ",".join(["0.1"] * 32) + "]"
    rows = notes.execute("SELECT * FROM mmr.search('notes', 'tv', %s::vector, 5)", (q,)).fetchall()
    assert rows == []
    texts = [m for m, _ in seen]
    assert any("30 rows of space 'tv' (collection 'notes') are queued" in t for t in texts), texts
    assert any("mmr worker" in h for _, h in seen)

    seen.clear()  # the filtered (general) path says it too
    notes.execute(
        "SELECT * FROM mmr.search('notes', 'tv', %s::vector, 5, filter => '{\"id\": {\"<\": 9}}')",
        (q,),
    ).fetchall()
    assert any("not yet searchable" in m for m, _ in seen)

    r = mmr_cli(db_url, "search", "notes", "tv", "--vector", q, "-k", "3")
    assert r.returncode == 0, r.stderr
    assert "notice: 30 rows of space 'tv'" in r.stderr and "hint: Run `mmr worker`" in r.stderr

    Worker(worker_url(db_url), WorkerConfig(collections=("notes",), once=True)).run()
    seen.clear()
    rows = notes.execute("SELECT * FROM mmr.search('notes', 'tv', %s::vector, 5)", (q,)).fetchall()
    assert len(rows) == 5 and seen == []
    rows = notes.execute(
        "SELECT * FROM mmr.search('notes', 'tv', %s::vector, 100)", (q,)
    ).fetchall()
    assert len(rows) == 30 and seen == []  # short, but nothing is queued: no notice
    notes.execute("UPDATE notes SET img = '\\x0102'::bytea WHERE id = 1")
    r = mmr_cli(db_url, "search", "notes", "tv", "--vector", q, "-k", "30")
    assert r.returncode == 0, r.stderr
    assert "body" in r.stdout and "note 7" in r.stdout  # the row's text column
    assert "img" in r.stdout and "2 bytes" in r.stdout  # a bytea image: its size


def _all_commands() -> list[list[str]]:
    import click

    from pg_mmretrieval.cli import cli

    out: list[list[str]] = []

    def walk(cmd: click.Command, path: list[str]) -> None:
        out.append(path)
        if isinstance(cmd, click.Group):
            for name, sub in sorted(cmd.commands.items()):
                walk(sub, [*path, name])

    walk(cli, [])
    return out


def test_every_command_and_subcommand_has_an_example_in_its_help() -> None:
    from click.testing import CliRunner

    from pg_mmretrieval.cli import cli

    commands = _all_commands()
    assert ["server", "psql"] in commands and ["failed", "list"] in commands
    runner = CliRunner()
    missing = []
    for path in commands:
        res = runner.invoke(cli, [*path, "--help"])
        assert res.exit_code == 0, (path, res.output)
        if "Example" not in res.output:
            missing.append(" ".join(path))
        assert "%%" not in res.output, path  # click prints help text as written
    assert missing == [], f"no example in --help of: {missing}"


def test_user_mistakes_are_one_line_errors_with_exit_status_2(
    notes: psycopg.Connection[Any], db_url: str
) -> None:
    notes.execute("SELECT mmr.add_space('notes', 'tv', 'mmr-test', 'body', 32)")
    mistakes: list[tuple[dict[str, str], list[str], str]] = [
        ({"MMR_DATABASE_URL": "notaurl"}, ["status"], "'notaurl' is not a PostgreSQL connection"),
        ({}, ["search", "nosuch", "img_clip", "--text", "x"], "collection 'nosuch' does not exist"),
        ({}, ["search", "notes", "nospace", "--text", "x"], "collection 'notes' has no space"),
        ({}, ["search", "notes", "tv", "--vector", "[1, 2"], "not valid JSON"),
        ({}, ["check", "nosuch"], "collection 'nosuch' does not exist"),
        ({}, ["failed", "retry", "nosuch"], "collection 'nosuch' does not exist"),
        ({}, ["worker", "--once", "--collection", "nosuch"], "no collection named 'nosuch'"),
        (
            {},
            ["collection", "add-space", "notes", "v", "--encoder", "mmr-tset", "--column", "body"],
            "mmr-tset",
        ),
        ({}, ["search", "notes", "tv"], "exactly one of --vector, --text or --image"),
    ]
    for env, args, expected in mistakes:
        full = {
            **os.environ,
            "MMR_DATABASE_URL": db_url,
            "MMR_WORKER_DATABASE_URL": worker_url(db_url),
            **env,
        }
        if "MMR_DATABASE_URL" in env:
            full.pop("MMR_WORKER_DATABASE_URL")
        r = subprocess.run(
            [sys.executable, "-m", "pg_mmretrieval", *args],
            env=full,
            capture_output=True,
            text=True,
            timeout=120,
        )
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert r.returncode == 2, (args, r.returncode, r.stderr)
        assert "Traceback" not in r.stderr, (args, r.stderr)
        assert len([ln for ln in lines if ln.startswith(("error:", "Error:"))]) == 1, (
            args,
            r.stderr,
        )
        assert expected in r.stderr, (args, r.stderr)


def _requirements(extra: str | None = None) -> list[Any]:
    import tomllib

    from packaging.requirements import Requirement

    from .conftest import REPO

    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    raw = project["dependencies"] if extra is None else project["optional-dependencies"][extra]
    return [Requirement(r) for r in raw]


@pytest.mark.parametrize(
    ("system", "machine", "runtime"),
    [
        ("Linux", "x86_64", "onnxruntime-gpu"),
        ("Linux", "aarch64", "onnxruntime"),
        ("Darwin", "arm64", "onnxruntime"),
        ("Darwin", "x86_64", "onnxruntime"),
        ("Windows", "AMD64", "onnxruntime"),
    ],
)
def test_the_runtime_install_resolves_per_platform(system: str, machine: str, runtime: str) -> None:
    """`pip install pg_mmretrieval` pulls no torch/transformers/optimum, and one onnxruntime:
    the CUDA wheel where it exists (Linux x86_64), the CPU one elsewhere."""
    env = {"platform_system": system, "platform_machine": machine, "sys_platform": system.lower()}
    chosen = {r.name.lower() for r in _requirements() if r.marker is None or r.marker.evaluate(env)}
    assert {n for n in chosen if n.startswith("onnxruntime")} == {runtime}
    assert not chosen & {"torch", "transformers", "optimum", "optimum-onnx"}
    export = {
        r.name.lower()
        for r in _requirements("export")
        if r.marker is None or r.marker.evaluate(env)
    }
    assert {"torch", "transformers", "optimum-onnx"} <= export


def test_the_short_result_notice_respects_privileges(
    notes: psycopg.Connection[Any],
) -> None:
    """A role that may search but not read the queue gets no notice (and no error)."""
    notes.execute("SELECT mmr.add_space('notes', 'pv', 'mmr-test', 'body', 32)")
    notes.execute("INSERT INTO notes SELECT g, 'note ' || g FROM generate_series(1, 4) g")
    notes.execute("DROP ROLE IF EXISTS nc_reader")
    notes.execute("CREATE ROLE nc_reader")
    try:
        notes.execute("GRANT SELECT ON notes TO nc_reader")
        seen = _notices(notes)
        q = "[" + ",".join(["0.1"] * 32) + "]"
        notes.execute("SET ROLE nc_reader")
        rows = notes.execute(
            "SELECT * FROM mmr.search('notes', 'pv', %s::vector, 3)", (q,)
        ).fetchall()
        assert rows == [] and seen == []
        notes.execute("RESET ROLE")
        notes.execute("SELECT * FROM mmr.search('notes', 'pv', %s::vector, 3)", (q,)).fetchall()
        assert any("4 rows of space 'pv'" in m for m, _ in seen), seen
    finally:
        notes.execute("RESET ROLE")
        notes.execute("REVOKE ALL ON notes FROM nc_reader")
        notes.execute("DROP ROLE nc_reader")


@pytest.mark.parametrize("columns", [80, 100])
def test_status_fits_80_to_100_columns(
    columns: int, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from pg_mmretrieval.cli._display import print_status

    monkeypatch.setenv("COLUMNS", str(columns))
    row = {
        "collection": "products_catalogue",
        "space": "clip_caption",
        "version": 2,
        "active": False,
        "encoder": "shapes-clip:int8",
        "model_id": "shapes-clip@1234abcd",
        "rows": 1234567,
        "embedded": 1200000,
        "queued": 34567,
        "failed": 12,
        "throughput_1m": 4321,
        "lag_seconds": 123.456,
        "workers_alive": 2,
        "providers": "CUDAExecutionProvider",
    }
    print_status([row, {**row, "space": "clip_image", "version": 1, "active": True}])
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= columns, out
    for cell in ("1234567", "1200000", "34567", "123.5", "clip_caption v2", "shapes-clip:int8"):
        assert cell in out, (cell, out)  # no cell wraps mid-word
    assert "provider shapes-clip:int8: CUDAExecutionProvider" in out
    assert " workers" in out and out.count("       2") >= 2  # the last column is not cut


def test_progress_lines_are_structured(db_url: str, caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from pg_mmretrieval.worker.progress import JsonFormatter, _Reporter

    w = Worker(worker_url(db_url), WorkerConfig(once=True))
    w.stats.written = 40
    rep = _Reporter(w, 10.0, live=False)
    with caplog.at_level(logging.INFO, logger="pg_mmretrieval.worker"):
        rep.report()
    rep.close()
    (record,) = [r for r in caplog.records if r.getMessage().startswith("progress:")]
    line = json.loads(JsonFormatter().format(record))
    assert line["event"] == "progress" and line["embedded"] == 40
    assert line["queued"] == 0 and line["failed"] == 0 and line["level"] == "info"
    assert "rows/s" in line["message"]


def test_model_export_never_starts_a_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`mmr models export` refreshes the catalog of a running server only: `make models` must
    not leave an embedded server running in the user's data directory."""
    from pg_mmretrieval import server
    from pg_mmretrieval.cli import models_cmd

    monkeypatch.delenv("MMR_DATABASE_URL", raising=False)
    monkeypatch.setenv("MMR_DATA_DIR", str(tmp_path / "data"))
    models_cmd._publish("minilm")
    assert not server.status().running
    assert not (tmp_path / "data" / "pgdata").exists()
    assert "not running" in capsys.readouterr().err
