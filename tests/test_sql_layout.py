"""The layout of ``sql/idempotent`` (issue 14): files named by feature in dependency order.

* every file is ``NNN-feature.sql``, no two with one number;
* no table or type is created there (they belong to the versioned files of ``sql/incremental``,
  run once per Alembic revision, so that an upgrade can change them); tables that
  ``EXECUTE format(...)`` creates per collection are fine;
* no file calls a function that only a later file defines.  PL/pgSQL resolves names at run
  time, so a forward call installs, but it hides a dependency that points the wrong way.

These read the files only (no database).  Calls are found as ``mmr.<name>(`` outside comments
and outside the text of messages (``RAISE ... USING HINT = 'run mmr.refresh_view(...)'``);
the names in dynamic SQL strings (``EXECUTE format('... mmr._foo(%L)')``) count as calls.

The native module (``native/pg_mmretrieval.c``) is an executor only: it names no composed
method and no method parameter (those live in the SQL planners, issue 14 item 1).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

IDEMPOTENT = Path(__file__).resolve().parent.parent / "sql" / "idempotent"
NATIVE = Path(__file__).resolve().parent.parent / "native" / "pg_mmretrieval.c"
FILES = sorted(p.name for p in IDEMPOTENT.glob("*.sql"))

# A forward call that is a real cycle, with the reason (none today).
ALLOWED_FORWARD: dict[tuple[str, str], str] = {}

_DEF = re.compile(r"\bCREATE\s+(?:OR\s+REPLACE\s+)?(?:FUNCTION|PROCEDURE)\s+mmr\.(\w+)\s*\(", re.I)
_CALL = re.compile(r"\bmmr\.(\w+)\s*\(")
_CREATE_OBJECT = re.compile(
    r"\bCREATE\s+(?:TABLE|TYPE)\s+(?:IF\s+NOT\s+EXISTS\s+)?([\w.%$\"]+)", re.I
)
_NAME = re.compile(r"^(\d{3})-[a-z0-9]+(?:-[a-z0-9]+)*\.sql$")


def _segments(text: str) -> Iterator[tuple[bool, int, str]]:
    """``(is_literal, offset, text)`` pieces of a file: single-quoted literals and the code
    around them (dollar-quoted bodies are code; double-quoted text stays in the code around it),
    with ``--`` comments blanked."""
    i, start, n = 0, 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "-" and text.startswith("--", i):
            end = text.find("\n", i)
            end = n if end < 0 else end
            yield False, start, text[start:i]
            yield False, i, " " * (end - i)
            i = start = end
        elif ch == "'":
            yield False, start, text[start:i]
            escaped = i > 0 and text[i - 1] in "Ee" and not text[i - 2 : i - 1].isalnum()
            j = i + 1
            while j < n:
                if escaped and text[j] == "\\":
                    j += 2
                    continue
                if text[j] == "'":
                    if text.startswith("''", j):
                        j += 2
                        continue
                    break
                j += 1
            yield True, i, text[i : j + 1]
            i = start = j + 1
        elif ch == '"':
            # a quoted identifier, or a double-quoted string in a PL/Python body: a ' inside
            # it ("the server's Python") does not open a literal
            end = text.find('"', i + 1)
            i = n if end < 0 else end + 1
        else:
            i += 1
    yield False, start, text[start:]


def _calls_in(sql: str) -> list[str]:
    """The ``mmr.<name>(`` in ``sql`` that are not the name of what it creates."""
    return _CALL.findall(_CREATE_OBJECT.sub("", _DEF.sub("", sql)))


def _calls(text: str) -> list[str]:
    """The names a file calls.  A literal inside a RAISE or COMMENT statement is message
    text, not SQL: its ``mmr.x(`` are not calls."""
    calls: list[str] = []
    statement = ""
    for literal, _, piece in _segments(text):
        if not literal:
            statement = (statement + piece).rsplit(";", 1)[-1]
            calls += _calls_in(piece)
        elif not re.search(r"\bRAISE\b|^\s*COMMENT\b", statement, re.I):
            calls += _calls_in(piece)
    return calls


def _without_comments(text: str) -> str:
    return "".join(piece for _, _, piece in _segments(text))


def _created(sql: str) -> list[str]:
    """The tables and types ``sql`` creates under a fixed name, also inside a string run by
    EXECUTE; a name built by format() (``mmr.%I``) is a per-collection table: not counted."""
    return [name for name in _CREATE_OBJECT.findall(sql) if "%" not in name]


def _parse() -> tuple[dict[str, list[str]], dict[str, list[str]], dict[str, str]]:
    defined: dict[str, list[str]] = {}
    calls: dict[str, list[str]] = {}
    code: dict[str, str] = {}
    for name in FILES:
        text = (IDEMPOTENT / name).read_text(encoding="utf-8")
        calls[name] = _calls(text)
        code[name] = _without_comments(text)
        # Definitions also count inside dynamic SQL (089-native creates mmr._native_abi).
        for found in _DEF.findall(code[name]):
            defined.setdefault(found, []).append(name)
    return defined, calls, code


DEFINED, CALLS, CODE = _parse()


def forward_calls(file: str) -> list[str]:
    """``name (defined in FILE)`` for each function that ``file`` calls and only later files
    define."""
    out = set()
    for called in CALLS[file]:
        where = DEFINED.get(called)
        if not where or file in where or min(where) < file:
            continue
        if (file, called) in ALLOWED_FORWARD:
            continue
        out.add(f"mmr.{called} (defined in {min(where)})")
    return sorted(out)


def created_objects(file: str) -> list[str]:
    """Tables and types that ``file`` creates itself (not inside a dynamic SQL string)."""
    return sorted(_created(CODE[file]))


def naming_problems(names: list[str]) -> list[str]:
    """Names that are not ``NNN-feature.sql``, and numbers that two files share."""
    problems = [f"{name}: not NNN-feature.sql" for name in names if not _NAME.match(name)]
    numbers: dict[str, list[str]] = {}
    for name in names:
        numbers.setdefault(name[:3], []).append(name)
    problems += [f"{', '.join(n)}: one number" for n in numbers.values() if len(n) > 1]
    return problems


def test_file_names_are_numbered_features() -> None:
    assert FILES, IDEMPOTENT
    problems = naming_problems(FILES)
    assert not problems, "; ".join(problems)


@pytest.mark.parametrize("file", FILES)
def test_no_tables_or_types_in_idempotent_files(file: str) -> None:
    found = created_objects(file)
    assert not found, (
        f"{file} creates {', '.join(found)}: create tables and types in sql/incremental "
        "(a new revision)"
    )


@pytest.mark.parametrize("file", FILES)
def test_no_call_to_a_later_file(file: str) -> None:
    found = forward_calls(file)
    assert not found, f"{file} calls functions that only later files define: {'; '.join(found)}"


# The checks can fail: each rule applied to a made-up file.


def test_checker_sees_a_forward_call_and_skips_messages() -> None:
    text = (
        "CREATE OR REPLACE FUNCTION mmr._a() RETURNS void LANGUAGE plpgsql AS $$\n"
        "BEGIN\n"
        "    PERFORM mmr._b(1);  -- mmr._c( in a comment\n"
        "    EXECUTE format('SELECT mmr._d(%L)', 1);\n"
        "    RAISE EXCEPTION 'no' USING HINT = 'run mmr._e(x) first';\n"
        "    RAISE NOTICE 'it''s mmr._f()';\n"
        "    PERFORM mmr._g(E'\\'');\n"
        "END $$;\n"
        "CREATE TABLE mmr.t (a int);\n"
        "SELECT format('CREATE TABLE mmr.%I (a int)', 'x');\n"
        "DO $$ BEGIN EXECUTE 'CREATE TYPE mmr.u AS (a int)'; END $$;\n"
        "-- CREATE TABLE mmr.v (a int);\n"
    )
    assert sorted(set(_calls(text))) == ["_b", "_d", "_g"]
    assert _created(_without_comments(text)) == ["mmr.t", "mmr.u"]
    assert _DEF.findall(text) == ["_a"]


def test_checker_sees_bad_names() -> None:
    assert naming_problems(["060-fusion.sql", "060-worker.sql", "61-x.sql", "070-A.sql"]) == [
        "61-x.sql: not NNN-feature.sql",
        "070-A.sql: not NNN-feature.sql",
        "060-fusion.sql, 060-worker.sql: one number",
    ]


# The native executor knows no method: names from the method table (mmr._composed_methods) and
# its parameters, as C string literals.
_METHOD_ROW = re.compile(r"\(\d+, '(\w+)', '\{([\w,]*)\}',\s*'_plan_\w+'")


def method_words(composed_sql: str) -> set[str]:
    """The method names and parameter names of the method table in 070-composed.sql."""
    words: set[str] = set()
    for name, params in _METHOD_ROW.findall(composed_sql):
        words.add(name)
        words.update(p for p in params.split(",") if p)
    return words


def test_native_module_names_no_method_or_parameter() -> None:
    words = method_words((IDEMPOTENT / "070-composed.sql").read_text())
    assert {"weighted", "weimocir", "score_sum", "caption_space", "alpha"} <= words, words
    literals = set(re.findall(r'"([^"\\]*)"', NATIVE.read_text()))
    found = sorted(w for w in words | {"exclude_reference"} if w in literals)
    assert not found, f"native/pg_mmretrieval.c decides by method or parameter: {found}"
    # the check can fail: the by-key fast path of earlier releases named them
    assert "weimocir" in set(re.findall(r'"([^"\\]*)"', 'is_method(fcinfo, "weimocir")'))
