"""``mmr check``, ``status``, ``failed`` and ``space``: the operations on queues and spaces."""

from __future__ import annotations

import sys

import click

from ..encoder_catalog import Unservable, unservable
from ..worker import admin
from ._common import connect, echo_json, print_table
from ._display import print_status

__all__ = ["print_unservable", "register"]


def register(cli: click.Group) -> None:
    for cmd in (check, status, failed_group, space_group):
        cli.add_command(cmd)


def print_unservable(unserved: list[Unservable]) -> None:
    """Spaces no worker can serve: their rows stay queued for ever until fixed."""
    for u in unserved:
        click.echo(f"warning: {u.line()}", err=True)


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
        print_unservable(unserved)
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
    print_unservable(unserved)
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
    print_unservable(unserved)
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
