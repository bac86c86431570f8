"""Run one worker in this process, or N worker processes under ``--concurrency N``."""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from types import FrameType
from typing import Any

from .runner import Worker, WorkerConfig, WorkerStats

__all__ = ["UNSERVABLE_EXIT", "run_pool", "run_worker"]

#: exit status of ``mmr worker --once`` when a space it should serve cannot be served
UNSERVABLE_EXIT = 3

_log = logging.getLogger("pg_mmretrieval.worker")


def run_worker(
    url: str | None,
    config: WorkerConfig,
    watch: Callable[[Worker], AbstractContextManager[None]] | None = None,
) -> WorkerStats:
    """Run one worker here; SIGTERM/SIGINT finish the current batch, then exit.

    ``watch``: a context manager around the run (``mmr worker``'s progress reports).
    """
    worker = Worker(url, config)
    seen = {"n": 0}

    def handler(signum: int, frame: FrameType | None) -> None:
        seen["n"] += 1
        if seen["n"] > 1:
            raise KeyboardInterrupt  # a second signal: stop now; leases expire
        _log.info("signal %d: finishing the current batch, then exiting", signum)
        worker.stop()

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        if watch is None:
            return worker.run()
        with watch(worker):
            return worker.run()
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _child(
    url: str | None, config: WorkerConfig, level: int, env: dict[str, str] | None = None
) -> None:
    """Entry point of a worker process (``env``: extra environment, e.g. fault injection)."""
    if env:
        os.environ.update(env)
    logging.basicConfig(level=level, format="%(asctime)s %(processName)s %(message)s")
    stats = run_worker(url, config)
    if config.once and stats.unservable:
        sys.exit(UNSERVABLE_EXIT)  # drained what it could, but some spaces it cannot serve


def run_pool(url: str | None, config: WorkerConfig, n: int) -> int:
    """Run ``n`` worker processes; restart any that dies (unless draining with ``once``).

    Returns the number of children that exited abnormally.
    """
    ctx = mp.get_context("spawn")
    level = logging.getLogger("pg_mmretrieval").getEffectiveLevel()
    procs: dict[int, Any] = {}
    stopping = {"flag": False}

    def start(i: int) -> None:
        p = ctx.Process(target=_child, args=(url, config, level), name=f"mmr-worker-{i}")
        p.start()
        procs[i] = p

    def handler(signum: int, frame: FrameType | None) -> None:
        stopping["flag"] = True
        for p in procs.values():
            if p.is_alive() and p.pid is not None:
                p.terminate()  # SIGTERM: each child finishes its batch

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    failures = 0
    try:
        for i in range(n):
            start(i)
        while procs:
            time.sleep(0.5)
            for i, p in list(procs.items()):
                if p.is_alive():
                    continue
                p.join()
                del procs[i]
                if p.exitcode != 0:
                    failures += 1
                    _log.warning("worker process %s exited with %s", p.name, p.exitcode)
                    if not stopping["flag"] and not config.once:
                        time.sleep(1.0)
                        start(i)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    return failures
