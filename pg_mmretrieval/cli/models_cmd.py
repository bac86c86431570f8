"""``mmr models``: export, list and verify ONNX model directories."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ._common import echo_json, print_table

__all__ = ["register"]


@click.group("models")
def models_group() -> None:
    """ONNX models: export from Hugging Face or a local directory, list, verify.

    Models live in onnx_models/NAME/ or $MMR_MODEL_DIR/NAME/ and become encoders called NAME
    (and NAME:int8, NAME:fp16 for checked variants).  An export lands in onnx_models/NAME/
    (or --output-dir): copy it to every machine that embeds with it, workers and the ones
    that search with --text/--image alike.

    \b
    Example:
      mmr models export openai/clip-vit-base-patch32 --name clip-b32 --int8 && mmr models list
    """


@models_group.command("export")
@click.argument("source")
@click.option("--name", required=True, help="Model (and encoder) name: the directory name.")
@click.option("--fp16", is_flag=True, help="Also write an fp16 variant (checked vs fp32).")
@click.option("--int8", is_flag=True, help="Also write an int8 variant (checked vs fp32).")
@click.option(
    "--output-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Parent directory (default: $MMR_MODEL_DIR, else onnx_models/).",
)
@click.option("--force", is_flag=True, help="Replace an existing model directory.")
def export_command(
    source: str, name: str, fp16: bool, int8: bool, output_dir: Path | None, force: bool
) -> None:
    """Export SOURCE (a Hugging Face id or a local directory) to ONNX.

    CLIP and SigLIP models get a text and a vision graph; sentence-transformers models get a
    text graph with the pooling of their config.  Needs the `export` extra (torch).

    \b
    Example:
      mmr models export openai/clip-vit-base-patch32 --name clip-b32 --int8
      mmr models export ./my-minilm --name minilm
    """
    from ..export import export_model

    target = export_model(
        source, name, output_dir=output_dir, fp16=fp16, int8=int8, overwrite=force
    )
    click.echo(f"exported {source} to {target}")
    _publish(name)


def _publish(name: str) -> None:
    """Tell the database's encoder catalog about the new model (mmr.add_space checks it)."""
    import psycopg

    from .. import config, db, plugins, server
    from ..encoder_catalog import publish
    from ..errors import MMRError

    plugins.reset()  # the registry rediscovers model directories, the new one included
    if config.database_url() is None and not server.status().running:
        # never start a server as a side effect of an export (make models runs one per checkout)
        click.echo(
            "note: the embedded server is not running, so its encoder catalog was left as is; "
            "`mmr db upgrade` and every worker's start refresh it",
            err=True,
        )
        return
    try:
        with db.connect(autocommit=True, application_name="mmr-models") as conn:
            n = publish(conn, "mmr models export")
        click.echo(
            f"encoder catalog refreshed ({n} encoders): add a space with "
            f"SELECT mmr.add_space('collection', 'space', '{name}', 'column', <dimensions>)"
        )
    except (MMRError, psycopg.Error) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        click.echo(
            f"note: the database's encoder catalog was not refreshed ({first}); run "
            "`mmr db upgrade` where the schema is installed",
            err=True,
        )


@models_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_command(as_json: bool) -> None:
    """List the model directories found (MMR_MODEL_DIR first, then onnx_models/).

    \b
    Example:
      mmr models list --json
    """
    from ..modeldir import discover_models, read_manifest

    rows: list[dict[str, Any]] = []
    for name, directory in sorted(discover_models().items()):
        m = read_manifest(directory)
        rows.append(
            {
                "name": name,
                "kind": m.kind,
                "dimension": m.dimension,
                "modalities": sorted(m.modalities),
                "variants": sorted(m.raw.get("variants", {})),
                "source": m.raw.get("source"),
                "path": str(directory),
            }
        )
    if as_json:
        echo_json(rows)
        return
    print_table(
        [
            {**r, "modalities": ", ".join(r["modalities"]), "variants": ", ".join(r["variants"])}
            for r in rows
        ],
        ["name", "kind", "dimension", "modalities", "variants", "path"],
        title="models",
    )


@models_group.command("verify")
@click.argument("names", nargs=-1)
def verify_command(names: tuple[str, ...]) -> None:
    """Check manifests and sha256 checksums (all models when no NAME is given).

    \b
    Example:
      mmr models verify minilm
    """
    from ..errors import ConfigError
    from ..modeldir import discover_models, find_model, verify_model

    targets = [find_model(n) for n in names] if names else list(discover_models().values())
    bad = 0
    for directory in targets:
        problems = verify_model(directory)
        if problems:
            bad += 1
            click.echo(f"{directory.name}: FAILED")
            for p in problems:
                click.echo(f"  {p}")
        else:
            click.echo(f"{directory.name}: ok")
    if bad:
        raise ConfigError(f"{bad} model(s) failed verification")


@models_group.command("embed")
@click.argument("encoder")
@click.argument("items", nargs=-1, required=True)
@click.option(
    "--truncate",
    is_flag=True,
    help="Keep only the first context window of long texts (default: average windows).",
)
def embed_command(encoder: str, items: tuple[str, ...], truncate: bool) -> None:
    """Embed ITEMS with ENCODER and print one JSON line per item.

    An item starting with @ is an image file (@photo.jpg); anything else is text.

    \b
    Example:
      mmr models embed minilm "a red circle" "two blue squares"
      mmr models embed clip-b32 @dog.jpg "a dog" --truncate
    """
    from ..encoders import Item, get_encoder

    enc = get_encoder(encoder, truncate=True) if truncate else get_encoder(encoder)
    inputs: list[Item] = [Path(i[1:]).read_bytes() if i.startswith("@") else i for i in items]
    for item, vector in zip(items, enc.embed_batch(inputs), strict=True):
        echo_json(
            {
                "item": item,
                "encoder": enc.name,
                "model_id": enc.model_id,
                "provider": enc.provider,
                "embedding": [round(float(x), 7) for x in vector],
            }
        )


def register(cli: click.Group) -> None:
    cli.add_command(models_group)
