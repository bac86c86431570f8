"""The local Citus cluster of the tests (tests/test_citus*.py): one per session, or a skip.

Citus comes from the embedded server (already installed) or from CITUS_SRC (a source tarball
or tree, built once per PostgreSQL version and cached); without either the tests that need a
cluster are skipped, saying how to enable them.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from pg_mmretrieval import citus, install

WORKERS = 2


def free_base_port(start: int = 6101, span: int = WORKERS + 1) -> int:
    for base in range(start, start + 400, 10):
        try:
            for p in range(base, base + span):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
    raise RuntimeError("no free block of ports for the Citus test cluster")


@pytest.fixture(scope="session")
def citus_cluster() -> Iterator[citus.ClusterStatus]:
    """A coordinator and two workers on 127.0.0.1, stopped at the end of the session."""
    reason = citus.availability()
    if reason is not None:
        pytest.skip(reason)
    current = citus.cluster_status()
    was_running = current.running and len(current.nodes) == WORKERS + 1
    port = current.nodes[0].port if was_running else free_base_port()
    st = citus.start_cluster(workers=WORKERS, port=port)
    try:
        yield st
    finally:
        if not was_running:  # a cluster a developer started stays up
            citus.stop_cluster()


@pytest.fixture(scope="module")
def citus_url(citus_cluster: citus.ClusterStatus) -> Iterator[str]:
    """A fresh database on every node (Citus needs the same database everywhere), with Citus
    and pgvector, the workers registered, and the mmr schema installed on the coordinator."""
    name = f"tc_{uuid.uuid4().hex[:10]}"
    coord = citus.create_database(citus_cluster, name)
    install.upgrade(coord)
    try:
        yield coord
    finally:
        citus.drop_database(citus_cluster, name)


def one(conn: psycopg.Connection[Any], sql: str, params: Any = None) -> Any:
    row = conn.execute(sql, params).fetchone()
    assert row is not None
    return row[0]
