#!/usr/bin/env python3
"""Generate the sync client (``pg_mmretrieval/client/sync.py``) from the async one (``aio.py``).

The async client is the source, as in psycopg (its ``tools/async_to_sync.py``): this script
rewrites its text token by token, keeping comments and layout, then lets ruff drop the imports
the sync client no longer needs and format the result.  Rules:

* ``async def`` / ``async with`` / ``async for`` lose ``async``; ``await`` goes;
  ``asyncio.to_thread(f, *args)`` becomes ``f(*args)``; ``asyncio.sleep`` ``time.sleep``.
* Names in :data:`RENAMES` are renamed (``AsyncClient`` -> ``Client``, ...).
* An ``if True:  # ASYNC`` block is replaced by its ``else:`` block (code that differs).
* A method decorated ``@sync_property`` becomes a property: ``await x.spaces()`` reads
  ``x.spaces``.
* Definitions in :data:`ASYNC_ONLY` are left out; docstrings in :data:`DOCSTRINGS` replace
  the async ones.

Usage: ``python scripts/async_to_sync.py`` writes sync.py; ``--check`` exits 1 when it is stale.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "pg_mmretrieval" / "client" / "aio.py"
TARGET = ROOT / "pg_mmretrieval" / "client" / "sync.py"

HEADER = "# generated from aio.py by scripts/async_to_sync.py; do not edit\n"

RENAMES = {
    "AsyncClient": "Client",
    "AsyncCollection": "Collection",
    "AsyncConnection": "Connection",
    "AsyncIterator": "Iterator",
    "asynccontextmanager": "contextmanager",
    "register_vector_async": "register_vector",
    "__aenter__": "__enter__",
    "__aexit__": "__exit__",
}
ASYNC_ONLY = ("connect_async",)
PROPERTY_MARK = "sync_property"

# Docstrings of the sync module and classes (None: the module's).
DOCSTRINGS: dict[str | None, str] = {
    None: '''"""The synchronous client: collections, ingestion, search and status over one \
connection.

>>> import pg_mmretrieval as mmr
>>> with mmr.Client() as client:                        # doctest: +SKIP
...     products = client.collection("products")
...     hits = products.search("clip_text", text="a red circle", k=5)

Over ~400 lines: generated from ``aio.py`` (one client, see there).
"""''',
    "AsyncClient": '''"""A connection to a database with the mmr schema, and the operations on it.

    Args:
        url: connection URL; defaults to ``MMR_DATABASE_URL`` or the embedded server.
        conn: use this psycopg connection instead of opening one (the client does not close
            it). It should be in autocommit mode: each operation commits on its own.

    Example::

        with Client() as client:
            photos = client.create_collection("photos", "photos", image_column="jpeg")
            photos.add_space("clip", encoder="mmr-test", source_column="jpeg")
            photos.insert([{"id": 1, "jpeg": data}], wait=True)
            photos.search("clip", text="a red circle", k=5)
    """''',
    "AsyncCollection": '''"""One collection of a :class:`Client`: spaces, ingestion, search."""''',
}

_DOC = re.compile(r'[ \t]*(?:"""|\'\'\')(?:.|\n)*?(?:"""|\'\'\')\n', re.MULTILINE)


def _replace_docstrings(text: str) -> str:
    text = _DOC.sub(DOCSTRINGS[None] + "\n", text, count=1)
    for cls, doc in DOCSTRINGS.items():
        if cls is None:
            continue
        m = re.search(rf"^class {cls}\b.*:\n", text, re.MULTILINE)
        if m is None:
            raise SystemExit(f"class {cls} not found in {SOURCE.name}")
        d = _DOC.match(text, m.end())
        if d is None:
            raise SystemExit(f"class {cls} has no docstring")
        text = text[: d.start()] + "    " + doc + "\n" + text[d.end() :]
    return text


def _drop_async_only(lines: list[str]) -> list[str]:
    out: list[str] = []
    skipping = False
    for line in lines:
        if any(re.match(rf"(async )?def {name}\(", line) for name in ASYNC_ONLY):
            skipping = True
            continue
        if skipping and line.strip() and not line[0].isspace() and not line.startswith(")"):
            skipping = False
        if not skipping:
            out.append(line)
    return out


def _take_else_branches(lines: list[str]) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(lines):
        m = re.match(r"^(\s*)if True:  # ASYNC\s*$", lines[i])
        if m is None:
            out.append(lines[i])
            i += 1
            continue
        indent = m.group(1)
        i += 1
        while i < len(lines) and lines[i].rstrip() != indent + "else:":
            if lines[i].strip() and len(lines[i]) - len(lines[i].lstrip()) <= len(indent):
                i -= 1  # no else: the block simply goes
                break
            i += 1
        i += 1
        while i < len(lines) and (
            not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > len(indent)
        ):
            out.append(lines[i][4:] if lines[i].strip() else lines[i])
            i += 1
    return out


def _properties(text: str) -> list[str]:
    return re.findall(rf"@{PROPERTY_MARK}\n\s*async def (\w+)\(self\)", text)


def transform(source: str) -> str:
    """The sync client's text before ruff (imports unpruned, layout unformatted)."""
    text = _replace_docstrings(source)
    props = _properties(text)
    lines = _take_else_branches(_drop_async_only(text.splitlines(keepends=True)))
    text = "".join(lines)
    for name in ASYNC_ONLY:
        text = re.sub(rf',?\s*"{name}"', "", text)
    text = text.replace(f"@{PROPERTY_MARK}\n", "@property\n")
    for name in props:
        text = re.sub(rf"\.{name}\(\)", f".{name}", text)
    text = re.sub(r"\basync (def|with|for)\b", r"\1", text)
    text = re.sub(r"(?<![\w)\]])\(await (self[\w.]*(?:\([^()]*\))?)\)", r"\1", text)
    text = re.sub(r"\bawait ", "", text)
    text = re.sub(r"\basyncio\.to_thread\(\s*([\w.]+),\s*", r"\1(", text)
    text = re.sub(r"\basyncio\.sleep\(", "time.sleep(", text)
    for old, new in RENAMES.items():
        text = re.sub(rf"\b{old}\b", new, text)
    return HEADER + text


def _ruff(args: list[str], text: str) -> str:
    cmd = [sys.executable, "-m", "ruff", *args, "--stdin-filename", str(TARGET), "-"]
    done = subprocess.run(cmd, input=text, capture_output=True, text=True, cwd=ROOT, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr}{done.stdout}")
    return done.stdout


def generate(source: str | None = None) -> str:
    """The sync client's text, as ``sync.py`` must hold it."""
    text = transform(SOURCE.read_text() if source is None else source)
    text = _ruff(["check", "--fix", "--select", "F401,I", "--quiet"], text)
    bad = [ln for ln in text.splitlines() if re.search(r"^\s*(async |await |import asyncio)", ln)]
    if bad:
        raise SystemExit(f"async code left after the rules: {bad[:5]}")
    return _ruff(["format", "--quiet"], text)


def main(argv: list[str]) -> int:
    text = generate()
    if "--check" in argv:
        if TARGET.read_text() != text:
            print(f"{TARGET.relative_to(ROOT)} is stale: run python scripts/async_to_sync.py")
            return 1
        return 0
    TARGET.write_text(text)
    print(f"wrote {TARGET.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
