"""``mmr cluster``: a local Citus cluster (coordinator + N workers) for development and tests."""

from __future__ import annotations

import json

import click

from .. import citus, citus_nodes


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
      mmr cluster add-node && mmr cluster rebalance   # grow it, searches keep answering
    """


@cluster_group.command("start")
@click.option(
    "--workers",
    type=int,
    default=None,
    help="Number of worker nodes [default: the existing cluster's (added nodes too), else 2].",
)
@click.option(
    "--port",
    type=int,
    default=None,
    help="Coordinator port, workers follow [default: the existing cluster's, else 6001].",
)
def start(workers: int | None, port: int | None) -> None:
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


@cluster_group.command("add-node")
def add_node() -> None:
    """Start one more worker node and add it to every Citus database of the cluster.

    Runs citus_add_node in each database; the new node holds no shards until
    `mmr cluster rebalance` moves some onto it.  Prints the new node's URL.

    \b
    Example:
      mmr cluster add-node
    """
    node = citus_nodes.add_node()
    click.echo(node.url)


@cluster_group.command("rebalance")
@click.option(
    "--database",
    default=None,
    help="Rebalance only this database [default: every database with Citus].",
)
@click.option(
    "--mode",
    type=click.Choice(citus_nodes.TRANSFER_MODES),
    default="auto",
    show_default=True,
    help="Citus shard transfer mode: logical replication (auto, force_logical) lets writes "
    "continue during a move; block_writes blocks them.",
)
def rebalance(database: str | None, mode: str) -> None:
    """Move shards so that every worker node holds a fair share, and wait for it.

    Citus's background rebalancer (citus_rebalance_start, citus_rebalance_wait)
    moves each shard group (a table's shard with the co-located shards of its
    collection's queue and embedding tables) by logical replication: searches
    keep answering and writes continue while it runs.  Prints one line per
    database: the moves, the job id, how long it took.

    \b
    Example:
      mmr cluster rebalance --database mmr
    """
    for r in citus_nodes.rebalance(database=database, mode=mode):
        job = "-" if r.job_id is None else str(r.job_id)
        click.echo(f"{r.database}: {r.moves} moves, job {job}, {r.state}, {r.seconds:.1f} s")
