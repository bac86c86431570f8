"""A writer thread: the database write of batch N overlaps the encoding of batch N+1."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import psycopg

__all__ = ["Writer", "WriterFailed"]

J = TypeVar("J")


class WriterFailed(Exception):
    """The writer thread failed; everything in flight is abandoned (and released)."""


class Writer(Generic[J]):
    """Runs ``handle(conn, job)`` for submitted jobs, in order, on its own connection.

    At most one job waits while another is written, so at most three batches are in
    flight (one encoding, one waiting, one writing).  After a failure every later job is
    dropped and :meth:`submit` / :meth:`flush` raise :class:`WriterFailed`: the caller then
    reconnects and releases what it holds.
    """

    def __init__(
        self,
        connect: Callable[[], psycopg.Connection[Any]],
        handle: Callable[[psycopg.Connection[Any], J], None],
    ) -> None:
        self._connect = connect
        self._handle = handle
        self._q: queue.Queue[J | None] = queue.Queue(maxsize=1)
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="mmr-writer", daemon=True)
        self._thread.start()

    def submit(self, job: J) -> None:
        self._raise()
        self._q.put(job)

    def flush(self) -> None:
        """Wait until every submitted job is written."""
        self._q.join()
        self._raise()

    def check(self) -> None:
        """Raise :class:`WriterFailed` if the writer has failed."""
        self._raise()

    def close(self, timeout: float = 30.0, abandon: bool = False) -> None:
        """Stop the thread after the submitted jobs (dropped instead with ``abandon``)."""
        if abandon and self.error is None:
            self.error = WriterFailed("abandoned")
        self._q.put(None)
        self._thread.join(timeout)

    def _raise(self) -> None:
        if self.error is not None:
            raise WriterFailed(f"the writer failed: {self.error}") from self.error

    def _run(self) -> None:
        conn: psycopg.Connection[Any] | None = None
        while True:
            job = self._q.get()
            try:
                if job is None:
                    return
                if self.error is not None:
                    continue
                if conn is None:
                    conn = self._connect()
                self._handle(conn, job)
            except BaseException as e:  # handed to the caller's thread
                self.error = e
            finally:
                self._q.task_done()
                if job is None and conn is not None:
                    conn.close()
