"""What users of the package get: the demo world apart from the core, its former import paths
kept as aliases, and a wheel without the development-only test encoder (docs/plugins.md)."""

from __future__ import annotations

import configparser
import importlib
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# the runtime library: what an application imports to search and to run the worker
CORE = [
    "pg_mmretrieval",
    "pg_mmretrieval.cli",
    "pg_mmretrieval.client",
    "pg_mmretrieval.collections",
    "pg_mmretrieval.encoders",
    "pg_mmretrieval.plugins",
    "pg_mmretrieval.retrieval",
    "pg_mmretrieval.search",
    "pg_mmretrieval.sqlalchemy",
    "pg_mmretrieval.worker",
]


def test_the_core_does_not_import_the_demo_world() -> None:
    code = (
        "import importlib, sys\n"
        f"for m in {CORE!r}: importlib.import_module(m)\n"
        "from pg_mmretrieval.encoders import list_encoders\n"
        "list_encoders()\n"
        "print(sorted(m for m in sys.modules if m.startswith(("
        "'pg_mmretrieval.demo', 'pg_mmretrieval.shapes'))))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    )
    assert out.stdout.strip() == "[]", out.stdout


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("pg_mmretrieval.shapes.generator", "pg_mmretrieval.demo.shapes.generator"),
        ("pg_mmretrieval.shapes.cir", "pg_mmretrieval.demo.shapes.cir"),
        ("pg_mmretrieval.shapes.evaluate", "pg_mmretrieval.demo.shapes.evaluate"),
        ("pg_mmretrieval.demo_sql", "pg_mmretrieval.demo.sql"),
    ],
)
def test_former_paths_are_the_same_modules(old: str, new: str) -> None:
    assert importlib.import_module(old) is importlib.import_module(new)


def test_former_package_exports_the_same_names() -> None:
    old = importlib.import_module("pg_mmretrieval.shapes")
    new = importlib.import_module("pg_mmretrieval.demo.shapes")
    assert old.__all__ == new.__all__
    for name in new.__all__:
        assert getattr(old, name) is getattr(new, name), name
    from pg_mmretrieval.shapes.generator import Attributes

    assert Attributes is new.Attributes


def test_former_evaluate_path_still_runs_as_a_script() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "pg_mmretrieval.shapes.evaluate", "--help"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert out.returncode == 0, out.stderr
    assert "--model-dir" in out.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # built from a copy: setuptools writes build/ and *.egg-info next to the sources
    src = out / "src"
    shutil.copytree(
        REPO,
        src,
        ignore=shutil.ignore_patterns(
            ".git",
            ".venv",
            ".mmr-test-data",
            "onnx_models",
            "build",
            "*.egg-info",
            "demo-output",
            "__pycache__",
            ".*_cache",
            ".bench-cache",
        ),
    )
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(src)],
        check=True,
        capture_output=True,
        text=True,
    )
    (path,) = out.glob("pg_mmretrieval-*.whl")
    return path


def test_the_wheel_has_no_test_encoder(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        (ep_name,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        entry_points = configparser.ConfigParser()
        entry_points.read_string(z.read(ep_name).decode())
    plugins = dict(entry_points["pg_mmretrieval"])
    assert plugins == {
        "builtin_loaders": "pg_mmretrieval_plugins.loaders",
        "builtin_onnx_encoders": "pg_mmretrieval_plugins.onnx_encoders",
    }
    assert not [n for n in names if "test_encoders" in n or "mmr_test" in n]
    # the demo world is in the wheel, as its own subpackage, with the former paths as aliases
    assert "pg_mmretrieval/demo/run.py" in names
    assert "pg_mmretrieval/demo/shapes/generator.py" in names
    assert "pg_mmretrieval/shapes/generator.py" in names
    assert "pg_mmretrieval/demo.py" not in names


def test_the_checkout_environment_has_the_test_encoder() -> None:
    """`make venv` installs the development-only plugin: the tests' workers need it."""
    from importlib.metadata import entry_points

    eps = {ep.name: ep.value for ep in entry_points(group="pg_mmretrieval")}
    assert eps.get("mmr_test_encoders") == "mmr_test_encoders"
