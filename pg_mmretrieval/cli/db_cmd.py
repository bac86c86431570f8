"""``mmr db``: install and upgrade the mmr schema."""

from __future__ import annotations

import click

from .. import install


def register(cli: click.Group) -> None:
    cli.add_command(db_group)


@click.group("db")
def db_group() -> None:
    """Install, upgrade and inspect the mmr schema.

    \b
    Example:
      mmr db upgrade     # safe to run again, and from several processes at once
      mmr db current
    """


@db_group.command("upgrade")
@click.argument("revision", default="head")
def upgrade(revision: str) -> None:
    """Install or upgrade the mmr schema to REVISION (default: head).

    Also creates the worker's least-privilege role mmr_worker when this login may (a
    superuser), and grants it (and roles given to mmr.grant_worker) what the worker needs.

    \b
    Example:
      mmr db upgrade
      psql -c "SELECT mmr.grant_worker('embedder')"   # a worker role of your own
    """
    version = install.upgrade(revision=revision)
    click.echo(f"mmr schema at revision {version.current} (head {version.head})")


@db_group.command("current")
def current() -> None:
    """Print the installed revision and whether it is the newest."""
    version = install.current()
    if version.current is None:
        click.echo(f"not installed (head {version.head}); run `mmr db upgrade`")
        raise SystemExit(1)
    state = "up to date" if version.up_to_date else "upgrade available: run `mmr db upgrade`"
    click.echo(f"{version.current} ({state}; head {version.head})")


@db_group.command("uninstall")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def uninstall(yes: bool) -> None:
    """Remove pg_mmretrieval from the database: all collections (triggers, views, queues,
    embeddings) and schema mmr. Your tables and their rows are kept."""
    if not yes:
        click.confirm("Remove schema mmr with every collection and embedding?", abort=True)
    names = install.uninstall()
    click.echo(f"removed schema mmr ({len(names)} collections dropped)")
