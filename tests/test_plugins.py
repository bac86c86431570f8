"""The plugin system: entry-point loading, MMR_LOAD_PLUGINS, hook checks, a third-party plugin."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from pg_mmretrieval import hookspecs, plugins
from pg_mmretrieval.cli import cli
from pg_mmretrieval.encoders import Encoder, get_encoder, list_encoders
from pg_mmretrieval.errors import NotFoundError, PermanentLoadError, PluginError
from pg_mmretrieval.hookspecs import hookimpl
from pg_mmretrieval.loaders import get_loader, load_cell
from pg_mmretrieval.rerankers import get_reranker

REPO = Path(__file__).resolve().parent.parent
PLUGIN_PKG = Path(__file__).resolve().parent / "plugin_pkg"
HOOKS = sorted(
    name
    for name in dir(hookspecs)
    if getattr(getattr(hookspecs, name), "pg_mmretrieval_spec", None)
)


@pytest.fixture(scope="module")
def installed_plugin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """tests/plugin_pkg built and installed by pip into a directory put on sys.path."""
    target = tmp_path_factory.mktemp("site")
    source = tmp_path_factory.mktemp("src") / "plugin_pkg"
    # build from a copy: setuptools writes build/ and *.egg-info next to the sources
    shutil.copytree(PLUGIN_PKG, source)
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
         "--no-index", "--target", str(target), str(source)],
        check=True,
    )  # fmt: skip
    sys.path.insert(0, str(target))
    plugins.reset()
    try:
        yield target
    finally:
        sys.path.remove(str(target))
        sys.modules.pop("mmr_example_plugin", None)
        plugins.reset()


@pytest.fixture()
def fresh_plugins(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """Reset the plugin manager before and after a test that changes what loads."""
    plugins.reset()
    try:
        yield monkeypatch
    finally:
        monkeypatch.undo()
        plugins.reset()


def test_builtin_plugins_load_through_entry_points() -> None:
    names = {p.name for p in plugins.list_plugins()}
    assert {"mmr_test_encoders", "builtin_loaders", "builtin_onnx_encoders"} <= names
    assert plugins.encoder_origins()["mmr-test"] == "mmr_test_encoders"


def test_load_plugins_env_restricts(fresh_plugins: pytest.MonkeyPatch) -> None:
    fresh_plugins.setenv("MMR_LOAD_PLUGINS", "builtin_loaders")
    assert [p.name for p in plugins.list_plugins()] == ["builtin_loaders"]
    with pytest.raises(NotFoundError, match="mmr-test"):
        get_encoder("mmr-test")
    assert get_loader("bytea").kind == "bytea"


def test_load_plugins_empty_loads_none(fresh_plugins: pytest.MonkeyPatch) -> None:
    fresh_plugins.setenv("MMR_LOAD_PLUGINS", "")
    assert plugins.list_plugins() == []
    assert list_encoders() == {}
    with pytest.raises(NotFoundError, match="registered encoders: none"):
        get_encoder("mmr-test")


class _Misspelled:
    @hookimpl
    def register_encoder(self, register: Any) -> None:  # missing the final "s"
        raise AssertionError("never called")


def test_misspelled_hook_is_an_error(fresh_plugins: pytest.MonkeyPatch) -> None:
    with pytest.raises(PluginError, match="register_encoder"):
        plugins.register_plugin(_Misspelled(), "misspelled")
    assert "misspelled" not in {p.name for p in plugins.list_plugins()}


class _Duplicate:
    @hookimpl
    def register_encoders(self, register: Any) -> None:
        from mmr_test_encoders import HashEncoder

        register(HashEncoder())


def test_duplicate_encoder_name_is_an_error(fresh_plugins: pytest.MonkeyPatch) -> None:
    plugins.register_plugin(_Duplicate(), "duplicate")
    with pytest.raises(PluginError, match="both register an encoder named 'mmr-test'"):
        list_encoders()


class _Failing:
    @hookimpl
    def register_encoders(self, register: Any) -> None:
        raise RuntimeError("boom")


def test_failing_plugin_is_wrapped(fresh_plugins: pytest.MonkeyPatch) -> None:
    plugins.register_plugin(_Failing(), "failing")
    with pytest.raises(PluginError, match="'failing' failed in register_encoders: boom"):
        get_encoder("mmr-test")


def test_unknown_encoder_lists_registered() -> None:
    with pytest.raises(NotFoundError, match=r"registered encoders: .*mmr-test"):
        get_encoder("nope")


def test_encoder_options_rejected_when_unknown() -> None:
    with pytest.raises(Exception, match="takes no options"):
        get_encoder("mmr-test", truncate=True)


# -- the third-party plugin, one test per hook (the meta-test below checks the names) ----------


def test_hook_register_encoders(installed_plugin: Path, db_url: str) -> None:
    import pg_mmretrieval as mmr

    enc = get_encoder("example-bow")
    assert isinstance(enc, Encoder)
    assert plugins.encoder_origins()["example-bow"] == "example"
    texts = ["red circle", "blue square", "red circle small"]
    vectors = list(enc.embed_batch(texts))
    assert all(v.shape == (16,) and abs(np.linalg.norm(v) - 1) < 1e-5 for v in vectors)
    # end to end: embed -> store through the SQL API -> search
    with mmr.connect(db_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE notes (id int PRIMARY KEY, body text)")
        conn.execute(
            "INSERT INTO notes SELECT i, t FROM unnest(%s::text[]) WITH ORDINALITY u(t, i)",
            (texts,),
        )
        mmr.create_collection(conn, "notes", "notes", text_columns=["body"])
        # vectors the application computed with the plugin's encoder: an 'external' space
        mmr.add_space(conn, "notes", "bow", encoder="external", source_column=None,
                      dimensions=16)  # fmt: skip
        mmr.put_embeddings(conn, "notes", "bow", [1, 2, 3], vectors)
        (query,) = enc.embed_batch(["red circle"])
        hits = mmr.search(conn, "notes", "bow", query, k=3)
    assert [h.key for h in hits][:2] == [1, 3]
    assert hits[0].score == pytest.approx(1.0, abs=1e-5)


def test_hook_register_loaders(installed_plugin: Path) -> None:
    assert load_cell("olleh", "reversed") == "hello"
    with pytest.raises(PermanentLoadError):
        load_cell("", "reversed")


def test_hook_register_rerankers(installed_plugin: Path) -> None:
    reranker = get_reranker("example-overlap")
    assert reranker.score("red circle", ["a red square", "red circle", "blue"]) == [1.0, 2.0, 0.0]


def test_hook_register_commands(installed_plugin: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", "from pg_mmretrieval.cli import main; main()",
         "example-hello", "you"],
        env={**os.environ, "PYTHONPATH": str(installed_plugin)},
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "hello you from example"


def test_hook_prepare_connection(installed_plugin: Path, db_url: str) -> None:
    import pg_mmretrieval as mmr

    with mmr.connect(db_url) as conn:
        assert conn.info.transaction_status == 0  # idle: the hook left no transaction open
        assert conn.execute("SHOW mmr_example.prepared").fetchone() == ("yes",)


def test_mmr_plugins_command_lists_everything(installed_plugin: Path) -> None:
    result = CliRunner().invoke(cli, ["plugins", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    example = next(p for p in data["plugins"] if p["name"] == "example")
    assert example["distribution"] == "mmr-example-plugin"
    assert example["hooks"] == HOOKS
    assert example["encoders"] == ["example-bow"]
    enc = next(e for e in data["encoders"] if e["name"] == "example-bow")
    assert enc == {"name": "example-bow", "plugin": "example", "dimension": 16,
                   "modalities": ["text"], "model_id": "example-bow/v1"}  # fmt: skip
    table = CliRunner().invoke(cli, ["plugins"])
    assert table.exit_code == 0 and "example-bow" in table.output


# -- meta-tests ---------------------------------------------------------------------------------


def test_every_hook_is_documented() -> None:
    doc = (REPO / "docs" / "plugins.md").read_text()
    documented = set(re.findall(r"^### `(\w+)\(", doc, flags=re.M))
    assert documented == set(HOOKS)
    for name in HOOKS:
        assert getattr(hookspecs, name).__doc__, f"hookspec {name} has no docstring"


def test_every_hook_is_tested() -> None:
    tests = "".join(p.read_text() for p in (REPO / "tests").glob("test_*.py"))
    missing = [h for h in HOOKS if f"def test_hook_{h}(" not in tests]
    assert missing == []
