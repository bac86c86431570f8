"""Small helpers shared by tests."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg


def unit_vectors(n: int, d: int, seed: int = 0) -> npt.NDArray[np.float32]:
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def plan_nodes(plan: Any) -> list[dict[str, Any]]:
    """Every node of an EXPLAIN (FORMAT JSON) plan, depth first."""
    root = plan[0]["Plan"] if isinstance(plan, list) else plan["Plan"]
    out: list[dict[str, Any]] = []
    stack = [root]
    while stack:
        node = stack.pop()
        out.append(node)
        stack.extend(node.get("Plans", []))
    return out


def uses_hnsw(plan: Any) -> bool:
    """True when the plan has an index scan on an HNSW index ordered by distance."""
    return any(
        n.get("Node Type") == "Index Scan"
        and str(n.get("Index Name", "")).endswith("_hnsw")
        and "Order By" in n
        for n in plan_nodes(plan)
    )


def sqlstate(conn: psycopg.Connection[Any], sql: str, params: Any = None) -> str | None:
    """Run sql and return the SQLSTATE it fails with (None if it succeeds)."""
    try:
        with conn.transaction():
            conn.execute(sql, params)
    except psycopg.Error as e:
        return e.sqlstate
    return None


def worker_url(url: str) -> str:
    """``url`` logging in as the worker's least-privilege role (how the worker runs by default:
    ``mmr db upgrade`` creates ``mmr_worker``, and the tests' embedded server trusts its socket).
    """
    from pg_mmretrieval import db

    return db.with_user(url, db.WORKER_ROLE)
