"""What ``mmr worker`` tells while it runs: log set-up, JSON log lines, periodic progress.

Progress every ``interval`` seconds: rows embedded (and rows/s since the last report), rows
still queued for the spaces it serves, dead-lettered items.  On a terminal it is one live
status line (rich); otherwise one log line per interval (``--log-format json``: one JSON object
per line, the fields under their own keys).
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import psycopg

from .. import db
from ..errors import MMRError

if TYPE_CHECKING:
    from .runner import Worker

__all__ = ["JsonFormatter", "configure_logging", "report_progress"]

_log = logging.getLogger("pg_mmretrieval.worker")


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, and the record's ``mmr``
    fields (progress counters) under their own keys."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "mmr", None)
        if isinstance(fields, dict):
            out.update(fields)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def configure_logging(verbose: bool, log_format: str = "text") -> None:
    """pg_mmretrieval's own messages at INFO (DEBUG with ``verbose``); other libraries' (the
    embedded server's pg_ctl lines among them) only from WARNING unless ``verbose``."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.WARNING)
    logging.getLogger("pg_mmretrieval").setLevel(logging.DEBUG if verbose else logging.INFO)


class _Reporter:
    def __init__(self, worker: Worker, interval: float, live: bool) -> None:
        self.worker = worker
        self.interval = interval
        self.live = live
        self._stop = threading.Event()
        self._conn: psycopg.Connection[Any] | None = None
        self._last = (time.monotonic(), 0)
        self._status: Any = None

    def queued(self) -> int | None:
        """Rows queued for the spaces the worker serves (None when it cannot tell now)."""
        try:
            if self._conn is None or self._conn.closed:
                self._conn = db.connect(
                    self.worker.url, autocommit=True, application_name="mmr-worker-progress"
                )
            return self.worker.queued(self._conn)
        except (MMRError, psycopg.Error) as e:
            _log.debug("progress: queue count failed: %s", e)
            if self._conn is not None:
                self._conn.close()
            self._conn = None
            return None

    def report(self) -> None:
        s = self.worker.stats
        now = time.monotonic()
        t0, done0 = self._last
        rate = (s.done - done0) / max(now - t0, 1e-6)
        self._last = (now, s.done)
        queued = self.queued()
        fields = {
            "event": "progress",
            "embedded": s.written,
            "unchanged": s.unchanged,
            "rows_per_s": round(rate, 1),
            "queued": queued,
            "failed": s.dead,
            "retrying": s.retried,
        }
        text = (
            f"progress: {s.written} embedded ({rate:.1f} rows/s), "
            f"{'?' if queued is None else queued} queued, {s.dead} failed"
        )
        if self._status is not None:
            self._status.update(text)
        else:
            _log.info(text, extra={"mmr": fields})

    def run(self) -> None:
        while not self._stop.wait(self.interval):
            self.report()

    def close(self) -> None:
        self._stop.set()
        if self._conn is not None:
            self._conn.close()


@contextmanager
def report_progress(worker: Worker, interval: float, live: bool | None = None) -> Iterator[None]:
    """Report ``worker``'s progress every ``interval`` seconds while the block runs (0: never).

    ``live``: a rich status line (default: when stderr is a terminal); else log lines.
    """
    if interval <= 0:
        yield
        return
    live = sys.stderr.isatty() if live is None else live
    rep = _Reporter(worker, interval, live)
    thread = threading.Thread(target=rep.run, name="mmr-progress", daemon=True)
    if live:
        from rich.console import Console

        with Console(stderr=True).status("starting…") as status:
            rep._status = status
            thread.start()
            try:
                yield
            finally:
                rep.close()
                thread.join(timeout=5)
        return
    thread.start()
    try:
        yield
    finally:
        rep.close()
        thread.join(timeout=5)
