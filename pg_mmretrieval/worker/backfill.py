"""``mmr backfill``: queue what a space lacks and fill it here, with a progress bar."""

from __future__ import annotations

import sys
from dataclasses import replace

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from .. import db
from . import admin
from .runner import Worker, WorkerConfig, WorkerStats

__all__ = ["run_backfill"]


def _pending(url: str, collection: str, space: str | None) -> int:
    with db.connect(url, autocommit=True, application_name="mmr-backfill") as conn:
        rows = admin.status(conn, collection)
    return sum(int(r["queued"]) for r in rows if space is None or r["space"] == space)


def run_backfill(
    url: str | None,
    collection: str,
    space: str | None = None,
    *,
    version: int | None = None,
    force: bool = False,
    config: WorkerConfig | None = None,
    progress: bool | None = None,
    worker_url: str | None = None,
) -> tuple[int, WorkerStats]:
    """Queue the rows of ``collection`` (one ``space`` or all) that need embedding, then
    run a draining worker on them.  Returns (rows queued now, worker counters).

    Args:
        progress: show a progress bar with ETA (default: when stderr is a terminal).
        worker_url: where the draining worker logs in (default: ``url`` when given, else
            :func:`pg_mmretrieval.db.resolve_worker_url`: ``mmr_worker`` on the embedded server).
    """
    target = db.resolve_url(url)
    as_worker = worker_url or url or db.resolve_worker_url()
    with db.connect(target, autocommit=True, application_name="mmr-backfill") as conn:
        queued_now = admin.backfill_queue(conn, collection, space, version, force)
    total = _pending(target, collection, space)
    cfg = replace(
        config or WorkerConfig(),
        collections=(collection,),
        spaces=(space,) if space else None,
        once=True,
    )
    show = sys.stderr.isatty() if progress is None else progress
    if not show:
        return queued_now, Worker(as_worker, cfg).run()
    with Progress(
        TextColumn(f"[bold]{collection}{'/' + space if space else ''}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:.0f} rows/s"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        transient=False,
    ) as bar:
        task = bar.add_task("backfill", total=max(total, 1), rate=0.0)

        def on_batch(stats: WorkerStats) -> None:
            t = bar.tasks[task]
            elapsed = t.elapsed or 1e-9
            bar.update(task, completed=min(stats.done, total), rate=stats.done / elapsed)

        worker = Worker(as_worker, cfg, on_batch=on_batch)
        stats = worker.run()
        bar.update(task, completed=total)
    return queued_now, stats
