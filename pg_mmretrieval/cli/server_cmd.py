"""``mmr server``: the embedded PostgreSQL server."""

from __future__ import annotations

import json

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
