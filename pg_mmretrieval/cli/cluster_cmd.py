"""``mmr cluster``: a local Citus cluster (coordinator + N workers) for development and tests."""

from __future__ import annotations

import json

import click

from .. import citus


def register(cli: click.Group) -> None:
    cli.add_command(cluster_group)


@click.group("cluster")
def cluster_group() -> None:
    """Run a local Citus cluster on 127.0.0.1 from the embedded binaries.

    A coordinator and N workers, each with its own data directory under
    MMR_DATA_DIR/citus (trust authentication on the loopback interface: for
    development and tests only).  Citus is built once from CITUS_SRC (a source
    tarball or tree) unless it is installed in the embedded server already.

    \b
    Example:
      CITUS_SRC=/path/to/citus-14.0.1.tar.gz mmr cluster start --workers 2
      MMR_DATABASE_URL=$(mmr cluster status --url) mmr db upgrade
    """


@cluster_group.command("start")
@click.option("--workers", default=2, show_default=True, help="Number of worker nodes.")
@click.option("--port", default=6001, show_default=True, help="Coordinator port (workers follow).")
def start(workers: int, port: int) -> None:
    """Start the cluster (creating it on first use) and print the coordinator's URL.

    \b
    Example:
      mmr cluster start --workers 2 --port 6001
    """
    st = citus.start_cluster(workers=workers, port=port)
    click.echo(st.coordinator_url)


@cluster_group.command("stop")
def stop() -> None:
    """Stop every node (data is kept).

    \b
    Example:
      mmr cluster stop
    """
    click.echo("stopped" if citus.stop_cluster() else "not running")


@cluster_group.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--url", "url_only", is_flag=True, help="Print only the coordinator's URL.")
def status(as_json: bool, url_only: bool) -> None:
    """Say which nodes run, on which ports, with which data directories.

    \b
    Example:
      mmr cluster status --json
    """
    st = citus.cluster_status()
    if url_only:
        if not st.nodes:
            raise citus.CitusUnavailable("no local cluster: start one with `mmr cluster start`")
        click.echo(st.coordinator_url)
        return
    if as_json:
        nodes = [
            {
                "role": n.role,
                "port": n.port,
                "data_dir": str(n.data_dir),
                "running": n.running,
                "url": n.url,
            }
            for n in st.nodes
        ]
        click.echo(json.dumps({"running": st.running, "nodes": nodes}))
        return
    if not st.nodes:
        click.echo("no local cluster (start one with `mmr cluster start`)")
        return
    for n in st.nodes:
        state = "running" if n.running else "stopped"
        click.echo(f"{n.role:<12} {n.url}  {state}  {n.data_dir}")
