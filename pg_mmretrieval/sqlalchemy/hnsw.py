"""Index scan settings for statements built by :func:`nearest`, carried as an execution option.

A statement with the execution option ``mmr_hnsw`` (a dict of ``hnsw.*`` settings) gets them
set on the connection that runs it, for sync and async engines alike:

* inside a transaction (the usual case: a ``Session``), transaction-locally
  (``set_config(..., true)``), once per transaction and set of values: later statements with
  the same settings cost no extra round trip, and the settings end with the transaction;
* in autocommit mode, for the session just before the statement, restored right after.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import Connection, Engine

__all__ = ["OPTION", "hnsw_options"]

OPTION = "mmr_hnsw"
_SAVED = "mmr_hnsw_saved"
_DONE = "mmr_hnsw_done"
_ALLOWED = {"hnsw.ef_search", "hnsw.iterative_scan", "hnsw.max_scan_tuples"}


def hnsw_options(
    ef_search: int | None = None,
    iterative_scan: str = "strict_order",
    max_scan_tuples: int | None = None,
) -> dict[str, str]:
    """The ``mmr_hnsw`` execution option's value for the given settings."""
    out = {"hnsw.iterative_scan": iterative_scan}
    if ef_search is not None:
        out["hnsw.ef_search"] = str(int(ef_search))
    if max_scan_tuples is not None:
        out["hnsw.max_scan_tuples"] = str(int(max_scan_tuples))
    return out


def _local(conn: Connection) -> bool:
    # Transaction-local settings vanish at once in autocommit mode: set them for the session
    # there (and restore them after the statement).
    return conn.get_execution_options().get("isolation_level") != "AUTOCOMMIT"


@event.listens_for(Engine, "before_execute")
def _before_execute(
    conn: Connection,
    clauseelement: Any,
    multiparams: Any,
    params: Any,
    execution_options: Mapping[str, Any],
) -> None:
    settings = execution_options.get(OPTION)
    if not settings:
        return
    unknown = set(settings) - _ALLOWED
    if unknown:
        raise ValueError(f"{OPTION}: unsupported settings {sorted(unknown)}")
    if _local(conn):
        tx = conn.get_nested_transaction() or conn.get_transaction()
        key = tuple(sorted((n, str(v)) for n, v in settings.items()))
        done = conn.info.get(_DONE)
        if done is not None and done[0]() is tx and done[1] == key:
            return
        binds: dict[str, Any] = {}
        calls = []
        for i, (name, value) in enumerate(key):
            binds[f"n{i}"], binds[f"v{i}"] = name, value
            calls.append(f"set_config(:n{i}, :v{i}, true)")
        conn.execute(text(f"SELECT {', '.join(calls)}"), binds)
        if tx is not None:
            conn.info[_DONE] = (weakref.ref(tx), key)
        return
    names = list(settings)
    # One round trip: read the current values (the CTE is evaluated first), then set ours.
    binds = {"l": False}
    reads, writes = [], []
    for i, name in enumerate(names):
        binds[f"n{i}"], binds[f"v{i}"] = name, str(settings[name])
        reads.append(f"current_setting(:n{i}, true) AS p{i}")
        writes.append(f"set_config(:n{i}, :v{i}, :l)")
    # Only bind-parameter names are interpolated; the values are parameters.
    sql = f"WITH prev AS MATERIALIZED (SELECT {', '.join(reads)}) SELECT prev.*, {', '.join(writes)} FROM prev"  # noqa: E501, S608
    row = conn.execute(text(sql), binds).one()
    saved = [(name, row[i]) for i, name in enumerate(names)]
    conn.info.setdefault(_SAVED, []).append((saved, False))


@event.listens_for(Engine, "after_execute")
def _after_execute(
    conn: Connection,
    clauseelement: Any,
    multiparams: Any,
    params: Any,
    execution_options: Mapping[str, Any],
    result: Any,
) -> None:
    if not execution_options.get(OPTION) or _local(conn):
        return
    stack = conn.info.get(_SAVED)
    if not stack:
        return
    saved, local = stack.pop()
    restore = [(n, v) for n, v in saved if v is not None]
    if not restore:
        return
    binds: dict[str, Any] = {"l": local}
    calls = []
    for i, (name, value) in enumerate(restore):
        binds[f"n{i}"], binds[f"v{i}"] = name, value
        calls.append(f"set_config(:n{i}, :v{i}, :l)")
    conn.execute(text(f"SELECT {', '.join(calls)}"), binds)
