"""``mmr collection``: register tables and add spaces."""

from __future__ import annotations

import click

from .. import collections as coll
from ._common import connect, echo_json, print_table


def register(cli: click.Group) -> None:
    cli.add_command(collection_group)


@click.group("collection")
def collection_group() -> None:
    """Create, list and drop collections and their spaces.

    \b
    Example:
      mmr collection create products public.products --image-column image --text-column caption
      mmr collection add-space products clip_image --encoder shapes-clip --column image
      mmr collection list
    """


@collection_group.command("create")
@click.argument("name")
@click.argument("source")
@click.option("--image-column", help="Column with the image: bytea, or text holding a path/URL.")
@click.option("--text-column", "text_columns", multiple=True, help="A text column (repeatable).")
@click.option(
    "--image-kind",
    type=click.Choice(["bytea", "path", "url", "auto"]),
    help="What the image column holds (default from its type).",
)
@click.option("--view-name", help="Name of the view joining rows and embeddings.")
@click.option("--no-view", is_flag=True, help="Do not create the view.")
def create(
    name: str,
    source: str,
    image_column: str | None,
    text_columns: tuple[str, ...],
    image_kind: str | None,
    view_name: str | None,
    no_view: bool,
) -> None:
    """Register table SOURCE (with a primary key) as collection NAME.

    \b
    Example:
      mmr collection create products products --text-column caption --image-column img
    """
    with connect() as conn:
        cid = coll.create_collection(
            conn,
            name,
            source,
            image_column=image_column,
            text_columns=list(text_columns) or None,
            image_kind=image_kind,
            view_name=view_name,
            create_view=not no_view,
        )
    click.echo(f"created collection {name!r} (id {cid})")


def _encoder_dimension(encoder: str) -> int | None:
    try:
        from ..encoders import get_encoder
    except ImportError:  # pragma: no cover - encoders land with the plugin system
        return None
    return int(get_encoder(encoder).dimension)


@collection_group.command("add-space")
@click.argument("collection")
@click.argument("space")
@click.option("--encoder", required=True, help="Registered encoder name, or 'external'.")
@click.option("--column", "source_column", help="Content column the encoder reads.")
@click.option("--dimensions", type=int, help="Vector size (default: the encoder's).")
@click.option(
    "--distance",
    type=click.Choice(["cosine", "l2", "inner_product"]),
    default="cosine",
    show_default=True,
)
@click.option(
    "--storage",
    type=click.Choice(["vector", "halfvec", "bit"]),
    default="vector",
    show_default=True,
    help="float32, float16, or bit: a binary-quantised index with exact cosine rerank.",
)
@click.option("--new-version", is_flag=True, help="Add a shadow version of an existing space.")
@click.option("--no-backfill", is_flag=True, help="Do not queue existing rows.")
def add_space(
    collection: str,
    space: str,
    encoder: str,
    source_column: str | None,
    dimensions: int | None,
    distance: str,
    storage: str,
    new_version: bool,
    no_backfill: bool,
) -> None:
    """Add SPACE to COLLECTION: ENCODER applied to one content column.

    A new space queueing at least 10000 rows, and every --new-version, is filled in bulk: its
    HNSW index is built once when the worker has drained it (or at `mmr space switch`).

    \b
    Example:
      mmr collection add-space products clip_image --encoder shapes-clip --column img
      mmr collection add-space products ext --encoder external --dimensions 384
      mmr collection add-space photos clip_bits --encoder shapes-clip --column image --storage bit
    """
    if dimensions is None:
        if encoder == "external":
            raise click.UsageError("--dimensions is required for encoder 'external'")
        dimensions = _encoder_dimension(encoder)
        if dimensions is None:
            raise click.UsageError("--dimensions is required (the encoder's is unknown)")
    with connect() as conn:
        table = coll.add_space(
            conn,
            collection,
            space,
            encoder,
            source_column,
            dimensions,
            distance=distance,
            storage=storage,
            new_version=new_version,
            backfill=not no_backfill,
        )
    click.echo(f"added space {space!r} to {collection!r}: embeddings in {table}")


@collection_group.command("drop")
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def drop(name: str, yes: bool) -> None:
    """Drop collection NAME: its embeddings, queue, triggers and view (never your table).

    \b
    Example:
      mmr collection drop products --yes
    """
    if not yes:
        click.confirm(f"Drop collection {name!r} and all its embeddings?", abort=True)
    with connect() as conn:
        coll.drop_collection(conn, name)
    click.echo(f"dropped collection {name!r}")


@collection_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_(as_json: bool) -> None:
    """List collections and their spaces.

    \b
    Example:
      mmr collection list
      mmr collection list --json
    """
    with connect() as conn:
        cols = coll.list_collections(conn)
        spaces = coll.list_spaces(conn)
    if as_json:
        for c in cols:
            c["spaces"] = [s for s in spaces if s["collection"] == c["collection"]]
        echo_json(cols)
        return
    print_table(
        cols, ["collection", "source", "image_column", "text_columns", "view"], "collections"
    )
    print_table(
        spaces,
        [
            "collection",
            "space",
            "version",
            "active",
            "encoder",
            "source_column",
            "dimensions",
            "storage",
        ],
        "spaces",
    )
