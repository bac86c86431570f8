"""Issue 12: the attack catalogue as a whole, and its item 13 (documented behaviours).

docs/security.md lists every attack tried, the defect it found and the tests that replay it;
``test_catalogue_is_replayed`` keeps that table and the test modules in step (every test it
names exists, every ``test_item<N>_`` test is listed under its item).  The per-area modules
(tests/test_attack_*.py) replay the attacks with several roles: an application role owning its
own objects, an administrator, the worker's role, readers with partial grants.
"""

from __future__ import annotations

import ast
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

REPO = Path(__file__).resolve().parent.parent
SECURITY = REPO / "docs" / "security.md"


def _attack_tests() -> set[str]:
    names: set[str] = set()
    for path in sorted((REPO / "tests").glob("test_attack_*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names |= {
            n.name
            for n in tree.body
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name.startswith("test_")
        }
    return names


def _catalogue() -> dict[int, set[str]]:
    """Item number -> test names, from the table of docs/security.md."""
    text = SECURITY.read_text(encoding="utf-8")
    section = text.split("## Attacks tried and their regression tests", 1)[1]
    items: dict[int, set[str]] = {}
    for line in section.splitlines():
        m = re.match(r"\|\s*(\d+)\s*\|", line)
        if m:
            items[int(m.group(1))] = set(re.findall(r"`(test_\w+)`", line))
    return items


def test_catalogue_is_replayed() -> None:
    items = _catalogue()
    assert sorted(items) == list(range(1, 14)), "the table lists items 1-13 of the catalogue"
    tests = _attack_tests()
    for item, names in items.items():
        assert names, f"item {item} names no regression test"
        missing = names - tests
        assert not missing, f"item {item} names tests that do not exist: {missing}"
    listed = set().union(*items.values())
    for name in tests:
        m = re.match(r"test_item(\d+)_", name)
        if m:
            assert name in items[int(m.group(1))], f"{name} is not listed under its item"
        else:
            assert name in listed, f"{name} is not listed in docs/security.md"


@pytest.fixture()
def admin(conn: psycopg.Connection[Any]) -> Iterator[tuple[str, str]]:
    """An application role owning a table, and an administrator that does not own it."""
    suffix = uuid.uuid4().hex[:8]
    owner, adm = f"owner_{suffix}", f"adm_{suffix}"
    for r in (owner, adm):
        conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(r)))
    yield owner, adm
    conn.execute("RESET ROLE")
    for r in (owner, adm):
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(r)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(r)))


def test_item13_registration_needs_trigger_privilege_not_ownership(
    conn: psycopg.Connection[Any], admin: tuple[str, str]
) -> None:
    owner, adm = (sql.Identifier(r) for r in admin)
    table = f"t13_{admin[0]}"
    conn.execute(sql.SQL("GRANT CREATE ON SCHEMA public TO {}").format(owner))
    conn.execute(sql.SQL("SET ROLE {}").format(owner))
    conn.execute(
        sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, body text)").format(sql.Identifier(table))
    )
    conn.execute(sql.SQL("INSERT INTO {} VALUES (1, 'one')").format(sql.Identifier(table)))
    conn.execute("RESET ROLE")
    # an administrator: a member of the installing role (docs/security.md, Roles), no superuser
    installer = conn.execute("SELECT current_user").fetchone()
    assert installer is not None
    conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(str(installer[0])), adm))
    conn.execute(sql.SQL("SET ROLE {}").format(adm))
    assert conn.execute(
        "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
    ).fetchone() == (False,)
    conn.execute("RESET ROLE")
    conn.execute(sql.SQL("SET ROLE {}").format(adm))
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("SELECT mmr.create_collection('c13', %s, text_columns => '{body}')", (table,))
    conn.execute("RESET ROLE")
    conn.execute(sql.SQL("GRANT TRIGGER, SELECT ON {} TO {}").format(sql.Identifier(table), adm))
    conn.execute(sql.SQL("SET ROLE {}").format(adm))
    conn.execute("SELECT mmr.create_collection('c13', %s, text_columns => '{body}')", (table,))
    conn.execute("SELECT mmr.add_space('c13', 'x', 'external', NULL, 3)")
    # dropping the triggers again is the table owner's right (DROP TRIGGER needs ownership)
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="must be owner"):
        conn.execute("SELECT mmr.drop_collection('c13')")
    conn.execute("RESET ROLE")
    conn.execute("SELECT mmr.drop_collection('c13')")


def test_item13_a_failing_queue_insert_aborts_the_users_statement(
    conn: psycopg.Connection[Any],
) -> None:
    """Documented on purpose: a row that is written but never queued would never be found."""
    conn.execute("CREATE TABLE t13q (id int PRIMARY KEY, body text)")
    conn.execute("SELECT mmr.create_collection('c13q', 't13q', text_columns => '{body}')")
    conn.execute("SELECT mmr.add_space('c13q', 't', 'mmr-test', 'body', 32)")
    (queue,) = conn.execute(
        "SELECT queue_table::text FROM mmr._collection WHERE name = 'c13q'"
    ).fetchone() or (None,)
    conn.execute(f"ALTER TABLE {queue} ADD CONSTRAINT t13_full CHECK (false) NOT VALID")
    with pytest.raises(psycopg.errors.CheckViolation):
        conn.execute("INSERT INTO t13q VALUES (1, 'one')")
    assert conn.execute("SELECT count(*) FROM t13q").fetchone() == (0,)
    conn.execute(f"ALTER TABLE {queue} DROP CONSTRAINT t13_full")
    conn.execute("INSERT INTO t13q VALUES (1, 'one')")
    assert conn.execute(f"SELECT count(*) FROM {queue}").fetchone() == (1,)
    conn.execute("SELECT mmr.drop_collection('c13q')")
