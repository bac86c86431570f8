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
    """Print the installed revision and whether it is the newest.

    \b
    Example:
      mmr db current
    """
    version = install.current()
    if version.current is None:
        click.echo(f"not installed (head {version.head}); run `mmr db upgrade`")
        raise SystemExit(1)
    state = "up to date" if version.up_to_date else "upgrade available: run `mmr db upgrade`"
    click.echo(f"{version.current} ({state}; head {version.head})")


@db_group.command("uninstall")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option(
    "--cascade",
    is_flag=True,
    help="Also drop your objects that depend on schema mmr (listed); without it, uninstall "
    "refuses and changes nothing when there are any.",
)
def uninstall(yes: bool, cascade: bool) -> None:
    """Remove pg_mmretrieval from the database: all collections (triggers, views, queues,
    embeddings) and schema mmr. Your tables and their rows are kept.

    If objects of yours depend on schema mmr (a generated column calling an mmr function,
    a view over mmr.collections, an index calling an mmr function...), uninstall lists them
    and refuses, changing nothing; --cascade drops them too and lists what it dropped.

    \b
    Example:
      mmr db uninstall --yes             # refuses if your objects depend on schema mmr
      mmr db uninstall --yes --cascade   # drops those objects too, and lists them
    """
    if not yes:
        click.confirm("Remove schema mmr with every collection and embedding?", abort=True)
    result = install.uninstall(cascade=cascade)
    for kind, obj, on in result.dropped:
        click.echo(f"dropped {kind} {obj} (it used {on})")
    click.echo(f"removed schema mmr ({len(result.collections)} collections dropped)")
