"""``mmr worker`` and ``backfill`` (the operations commands are in :mod:`.ops_cmd`)."""

from __future__ import annotations

import os
import sys

import click

from .. import db
from .. import loaders as _ld
from ..errors import ConfigError
from ..worker.backfill import run_backfill
from ..worker.failures import RetryPolicy
from ..worker.progress import configure_logging, report_progress
from ..worker.runner import WorkerConfig
from ..worker.supervisor import UNSERVABLE_EXIT, run_pool, run_worker
from . import ops_cmd

__all__ = ["register"]


def register(cli: click.Group) -> None:
    for cmd in (worker, backfill):
        cli.add_command(cmd)
    ops_cmd.register(cli)


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
