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
@click.option(
    "--sql",
    "as_sql",
    is_flag=True,
    help="Print the install/upgrade SQL instead of running it (for psql; connects to nothing).",
)
@click.option(
    "--from",
    "from_revision",
    metavar="REV",
    help="With --sql: the revision the database is at (`mmr db current`); omit for a new install.",
)
@click.option(
    "--vector-schema",
    default="public",
    show_default=True,
    help="With --sql: the schema the vector extension is (or will be) installed in; the "
    "script checks it and stops if it is wrong.",
)
@click.option(
    "--python-path",
    multiple=True,
    metavar="DIR",
    help="With --sql: the site-packages directory where pg_mmretrieval is installed on the "
    "database server, recorded for mmr.embed (repeatable; default: none recorded).",
)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, writable=True),
    help="With --sql: write the script to this file instead of standard output.",
)
def upgrade(
    revision: str,
    as_sql: bool,
    from_revision: str | None,
    vector_schema: str,
    python_path: tuple[str, ...],
    output: str | None,
) -> None:
    """Install or upgrade the mmr schema to REVISION (default: head).

    Also creates the worker's least-privilege role mmr_worker when this login may (a
    superuser), and grants it (and roles given to mmr.grant_worker) what the worker needs.

    With --sql, prints the same steps as one SQL script instead (Alembic's offline mode), for
    a DBA to apply with psql on a server where Python cannot connect: the server checks, the
    versioned SQL of each revision and the version table's updates, then every function,
    view and grant. Nothing is connected to. Use --from REV to upgrade a database at REV.

    \b
    Example:
      mmr db upgrade
      psql -c "SELECT mmr.grant_worker('embedder')"   # a worker role of your own
      mmr db upgrade --sql -o install.sql && psql -v ON_ERROR_STOP=1 -d mydb -f install.sql
      mmr db upgrade --sql --from 0003 | psql -v ON_ERROR_STOP=1 -d mydb
    """
    if not as_sql:
        if from_revision or output or python_path or vector_schema != "public":
            raise click.UsageError(
                "--from, --output, --vector-schema and --python-path go with --sql"
            )
        version = install.upgrade(revision=revision)
        click.echo(f"mmr schema at revision {version.current} (head {version.head})")
        return
    from ..install_sql import upgrade_sql

    script = upgrade_sql(
        from_revision, revision, vector_schema=vector_schema, python_path=python_path
    )
    if output is None:
        click.echo(script, nl=False)
    else:
        with open(output, "w", encoding="utf-8") as f:
            f.write(script)
        click.echo(f"wrote {output}: apply it with psql -v ON_ERROR_STOP=1 -f {output}", err=True)


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
