"""``mmr worker``, ``backfill``, ``check``, ``status``, ``failed`` and ``space``."""

from __future__ import annotations

import os
import sys

import click

from .. import db
from .. import loaders as _ld
from ..encoder_catalog import Unservable, unservable
from ..errors import ConfigError
from ..worker import admin
from ..worker.backfill import run_backfill
from ..worker.failures import RetryPolicy
from ..worker.progress import configure_logging, report_progress
from ..worker.runner import WorkerConfig
from ..worker.supervisor import UNSERVABLE_EXIT, run_pool, run_worker
from ._common import connect, echo_json, print_table
from ._display import print_status

__all__ = ["register"]


def register(cli: click.Group) -> None:
    for cmd in (worker, backfill, check, status, failed_group, space_group):
        cli.add_command(cmd)


def _worker_options(f: click.decorators.FC) -> click.decorators.FC:
    for opt in reversed(
        [
            click.option(
                "--batch-size",
                default=256,
                show_default=True,
                help="Entries per claim (the encoder sorts texts by length across a claim).",
            ),
            click.option(
                "--lease",
                "lease_s",
                default=30.0,
                show_default=True,
                help="Seconds a claim holds; a dead worker's items return after this.",
            ),
            click.option(
                "--max-attempts", default=3, show_default=True, help="Failures before dead letter."
            ),
            click.option(
                "--retry-base",
                default=2.0,
                show_default=True,
                help="Backoff after the first failure (doubles each time, ±50 % jitter).",
            ),
            click.option(
                "--max-claims",
                default=5,
                show_default=True,
                help="Claims lost to dying workers before an item is dead-lettered as a crash.",
            ),
            click.option(
                "--allow-superuser",
                is_flag=True,
                help="Run even when the worker's session user is a superuser (refused by "
                "default: user code its statements evaluate would run as that superuser).",
            ),
            click.option(
                "--path-root",
                "path_roots",
                multiple=True,
                help="A directory path cells may name files in, symlinks resolved (repeatable; "
                "MMR_PATH_ROOTS). Without one, path cells are refused.",
            ),
            click.option(
                "--url-allow-host",
                "url_allow_hosts",
                multiple=True,
                help="Fetch only these hosts: a name, *.domain, an address or a network; "
                "lists loopback/private addresses to opt them in (repeatable; "
                "MMR_URL_ALLOW_HOSTS).",
            ),
            click.option(
                "--url-deny-host",
                "url_deny_hosts",
                multiple=True,
                help="Never fetch this name, *.domain, address or network (repeatable; "
                "MMR_URL_DENY_HOSTS).",
            ),
            click.option(
                "--url-deadline",
                type=float,
                help="Seconds one URL item may take in all, redirects and body included "
                "(MMR_URL_DEADLINE, default 30).",
            ),
            click.option(
                "--max-image-bytes",
                type=int,
                help="Refuse images whose decoded pixels would take more bytes "
                "(MMR_MAX_IMAGE_BYTES, default 96 MiB).",
            ),
            click.option(
                "--max-text-chars",
                type=int,
                help="Refuse longer texts (MMR_MAX_TEXT_CHARS, default 100000).",
            ),
            click.option(
                "--max-text-windows",
                type=int,
                help="Refuse texts needing more context windows (MMR_MAX_TEXT_WINDOWS, "
                "default 128).",
            ),
        ]
    ):
        f = opt(f)
    return f


_LIMIT_OPTIONS = {
    "path_roots": (_ld.ENV_PATH_ROOTS, os.pathsep),
    "url_allow_hosts": (_ld.ENV_URL_ALLOW_HOSTS, ","),
    "url_deny_hosts": (_ld.ENV_URL_DENY_HOSTS, ","),
    "url_deadline": (_ld.ENV_URL_DEADLINE, ""),
    "max_image_bytes": (_ld.ENV_MAX_IMAGE_BYTES, ""),
    "max_text_chars": (_ld.ENV_MAX_TEXT_CHARS, ""),
    "max_text_windows": (_ld.ENV_MAX_TEXT_WINDOWS, ""),
}


def _apply_limits(opts: dict[str, object]) -> None:
    """Move the loading flags into their ``MMR_*`` variables (read by the loaders, the
    encoders and the --concurrency children alike), then check them all."""
    for key, (env, sep) in _LIMIT_OPTIONS.items():
        value = opts.pop(key, None)
        if value is None or value == ():
            continue
        if isinstance(value, tuple):
            if sep == os.pathsep:
                value = tuple(os.path.abspath(v) for v in value)
            os.environ[env] = sep.join(str(v) for v in value)
        else:
            os.environ[env] = str(value)
    try:
        _ld.LoadLimits.from_env()
    except ConfigError as e:
        raise click.UsageError(str(e)) from None


def _config(
    batch_size: int,
    lease_s: float,
    max_attempts: int,
    retry_base: float,
    max_claims: int,
    allow_superuser: bool = False,
    **kw: object,
) -> WorkerConfig:
    if batch_size < 1 or lease_s <= 0 or max_attempts < 1 or max_claims < 1:
        raise click.UsageError("--batch-size, --lease, --max-attempts, --max-claims must be > 0")
    retry = RetryPolicy(max_attempts=max_attempts, base_s=retry_base, max_claims=max_claims)
    if allow_superuser:
        kw["allow_superuser"] = True
    return WorkerConfig(batch_size=batch_size, lease_s=lease_s, retry=retry, **kw)  # type: ignore[arg-type]


def _print_unservable(unserved: list[Unservable]) -> None:
    """Spaces no worker can serve: their rows stay queued for ever until fixed."""
    for u in unserved:
        click.echo(f"warning: {u.line()}", err=True)


@click.command("worker")
@click.option("--collection", "collections", multiple=True, help="Serve only this (repeatable).")
@click.option("--concurrency", default=1, show_default=True, help="Worker processes.")
@click.option("--once", is_flag=True, help="Exit when the queue is empty (for scripts).")
@click.option("--poll", "poll_s", default=5.0, show_default=True, help="Fallback poll seconds.")
@click.option(
    "-v", "--verbose", is_flag=True, help="Debug logs, the embedded server's own logs included."
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="json: one JSON object per line (progress counters as fields).",
)
@click.option(
    "--progress-interval",
    default=10.0,
    show_default=True,
    help="Seconds between progress reports (0: none); a live line on a terminal.",
)
@_worker_options
def worker(
    collections: tuple[str, ...],
    concurrency: int,
    once: bool,
    poll_s: float,
    verbose: bool,
    log_format: str,
    progress_interval: float,
    **opts: object,
) -> None:
    """Embed queued rows: claim, load, encode, write; until stopped (SIGTERM/Ctrl-C finish
    the current batch) or, with --once, until the queue is empty.  With --once the exit
    status is 3 when a space could not be served (unknown encoder, wrong dimension): the
    reason is printed, and `mmr status` lists such spaces.

    The worker logs in as the least-privilege role mmr_worker on the embedded server (created
    by `mmr db upgrade`), else at MMR_WORKER_DATABASE_URL, else at MMR_DATABASE_URL as given.
    It refuses a superuser session unless --allow-superuser (docs/security.md).
    Path cells are read only under --path-root directories; URLs are fetched only from
    global addresses unless --url-allow-host lists others (docs/security.md).

    \b
    Example:
      mmr worker                                  # all collections, one process
      mmr worker --collection products --concurrency 4
      mmr worker --once                           # drain and exit (scripts, cron)
      mmr worker --log-format json --progress-interval 30   # for a log collector
      MMR_WORKER_DATABASE_URL=postgresql://mmr_worker:secret@db/app mmr worker
      mmr worker --once --allow-superuser         # only on a server without user code
      mmr worker --path-root /srv/images --url-allow-host '*.cdn.example.com' \\
                 --url-deadline 20 --max-text-chars 50000
    """
    configure_logging(verbose, log_format)
    _apply_limits(opts)
    cfg = _config(collections=collections or None, once=once, poll_s=poll_s, **opts)  # type: ignore[arg-type]
    url = db.resolve_worker_url()
    if concurrency > 1:
        bad = run_pool(url, cfg, concurrency)
        if bad and once:
            sys.exit(1)
        return
    live = sys.stderr.isatty() and log_format == "text"
    stats = run_worker(url, cfg, watch=lambda w: report_progress(w, progress_interval, live=live))
    click.echo(
        f"worker done: {stats.written} embedded, {stats.unchanged} unchanged, "
        f"{stats.removed} removed, {stats.retried} to retry, {stats.dead} dead-lettered",
        err=True,
    )
    for space, reason in sorted(stats.unservable.items()):
        click.echo(f"error: space {space} was not served: {reason}", err=True)
    if once and stats.unservable:
        sys.exit(UNSERVABLE_EXIT)


@click.command("backfill")
@click.argument("collection")
@click.argument("space", required=False)
@click.option("--version", type=int, help="A version of SPACE (default: every version).")
@click.option("--force", is_flag=True, help="Re-embed every row, even unchanged ones.")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: on a tty).")
@_worker_options
def backfill(
    collection: str,
    space: str | None,
    version: int | None,
    force: bool,
    progress: bool | None,
    **opts: object,
) -> None:
    """Embed the existing rows of COLLECTION (one SPACE or all) and exit when done.

    Queues the rows without an up-to-date embedding, then works the queue in this process
    with a progress bar and ETA.  Run more `mmr worker` processes to go faster.

    \b
    Example:
      mmr backfill products clip_image
      mmr backfill products --no-progress && mmr check products
    """
    _apply_limits(opts)
    cfg = _config(**opts)  # type: ignore[arg-type]
    queued, stats = run_backfill(
        None, collection, space, version=version, force=force, config=cfg, progress=progress
    )
    click.echo(
        f"backfill of {collection}{'/' + space if space else ''}: {queued} rows queued, "
        f"{stats.written} embedded, {stats.dead} dead-lettered",
        err=True,
    )
    if stats.dead:
        sys.exit(1)


@click.command("check")
@click.argument("collection")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--repair", "do_repair", is_flag=True, help="Queue the fixes, delete orphans.")
def check(collection: str, as_json: bool, do_repair: bool) -> None:
    """Report missing, stale, duplicate and orphan embeddings of COLLECTION.

    Exit status 0 when all are zero, 1 otherwise.  --repair queues missing and stale rows
    (run `mmr worker` to process them) and deletes orphans.

    \b
    Example:
      mmr check products --json
      mmr check products --repair && mmr worker --once
    """
    with connect() as conn:
        report = admin.check(conn, collection)
        repaired = admin.repair(conn, collection) if do_repair else None
        conn.commit()
        unserved = unservable(conn, collection)
    ok = admin.healthy(report) and not unserved
    if as_json:
        echo_json({"collection": collection, "healthy": ok, "spaces": report, "repair": repaired})
    else:
        print_table(
            report,
            [
                "space",
                "version",
                "active",
                "rows",
                "embedded",
                *admin.PROBLEMS,
                "queued",
                "pending",
                "failed",
            ],
            f"check {collection}: {'healthy' if ok else 'PROBLEMS'}",
        )
        if repaired is not None:
            print_table(repaired, ["space", "version", "queued", "orphans_deleted"], "repair")
    if not as_json:
        _print_unservable(unserved)
    if not ok:
        sys.exit(1)


@click.command("status")
@click.option("--collection", help="Only this collection.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status(collection: str | None, as_json: bool) -> None:
    """Per collection and space: rows, embedded, queued, failed, throughput, lag, workers.

    One table per collection (fits 80-100 columns); spaces no worker can serve are listed
    with the reason.  --json prints the rows of mmr.status() as they are.

    \b
    Example:
      mmr status
      mmr status --json | jq '.[] | select(.queued > 0)'
    """
    with connect() as conn:
        rows = admin.status(conn, collection)
        unserved = unservable(conn, collection)
    if as_json:
        echo_json(rows)
        return
    _print_unservable(unserved)
    print_status(rows)


@click.group("failed")
def failed_group() -> None:
    """Dead-lettered items: list, retry, purge.

    \b
    Example:
      mmr failed list --collection products
      mmr failed retry products --space clip_image
      mmr failed purge products --id 17
    """


@failed_group.command("list")
@click.option("--collection")
@click.option("--space")
@click.option("--limit", default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (with attempt history).")
def failed_list(collection: str | None, space: str | None, limit: int, as_json: bool) -> None:
    """List dead letters, newest first.

    \b
    Example:
      mmr failed list --collection products --json
    """
    with connect() as conn:
        rows = admin.failed_list(conn, collection, space, limit)
        unserved = [u for u in unservable(conn, collection) if space in (None, u.space)]
    if as_json:
        echo_json(rows)
        return
    _print_unservable(unserved)
    print_table(
        rows,
        ["id", "collection", "space", "version", "key", "error_class", "attempts", "error"],
        "failed items",
    )


@failed_group.command("retry")
@click.argument("collection")
@click.option("--space")
@click.option("--id", "ids", type=int, multiple=True, help="Only these ids (repeatable).")
def failed_retry(collection: str, space: str | None, ids: tuple[int, ...]) -> None:
    """Put dead letters of COLLECTION back into the queue.

    \b
    Example:
      mmr failed retry products --space clip_image && mmr worker --once
    """
    with connect() as conn:
        n = admin.failed_retry(conn, collection, space, list(ids))
        conn.commit()
    click.echo(f"{n} items queued again")


@failed_group.command("purge")
@click.argument("collection")
@click.option("--space")
@click.option("--id", "ids", type=int, multiple=True, help="Only these ids (repeatable).")
def failed_purge(collection: str, space: str | None, ids: tuple[int, ...]) -> None:
    """Delete dead letters of COLLECTION.

    \b
    Example:
      mmr failed purge products --id 17
    """
    with connect() as conn:
        n = admin.failed_purge(conn, collection, space, list(ids))
        conn.commit()
    click.echo(f"{n} dead letters deleted")


@click.group("space")
def space_group() -> None:
    """Switch and drop space versions (model change without downtime).

    \b
    Example:
      mmr collection add-space products clip_image --encoder clip-b32 --column image --new-version
      mmr backfill products clip_image
      mmr space switch products clip_image
      mmr space drop products clip_image --version 1
    """


@space_group.command("switch")
@click.argument("collection")
@click.argument("space")
@click.option("--version", type=int, help="Version to activate (default: newest shadow).")
@click.option("--force", is_flag=True, help="Switch even if the version is still filling.")
def space_switch(collection: str, space: str, version: int | None, force: bool) -> None:
    """Make a shadow version of SPACE the one searches use, atomically.

    \b
    Example:
      mmr space switch products clip_image --version 2
    """
    with connect() as conn:
        admin.switch_space(conn, collection, space, version, force)
        conn.commit()
    click.echo(f"switched {collection}/{space}")


@space_group.command("drop")
@click.argument("collection")
@click.argument("space")
@click.option("--version", type=int, help="Drop only this version (not the active one).")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def space_drop(collection: str, space: str, version: int | None, yes: bool) -> None:
    """Drop a version of SPACE (or all its versions) with its embeddings.

    \b
    Example:
      mmr space drop products clip_image --version 1 --yes
    """
    if not yes:
        what = f"version {version} of" if version else "every version of"
        click.confirm(f"Drop {what} space {space!r} of {collection!r}?", abort=True)
    with connect() as conn:
        admin.drop_space(conn, collection, space, version)
        conn.commit()
    click.echo(f"dropped {collection}/{space}" + (f" version {version}" if version else ""))
