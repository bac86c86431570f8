"""``mmr serve``: the encoder service (docs/serve.md)."""

from __future__ import annotations

import logging
import os
import sys

import click

from ..errors import ConfigError
from ..loaders import LoadLimits

__all__ = ["register"]

ENV_TOKEN = "MMR_SERVE_TOKEN"


def register(cli: click.Group) -> None:
    cli.add_command(serve)


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=8765, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--token",
    envvar=ENV_TOKEN,
    help=f"Bearer token every request but /healthz must carry (or {ENV_TOKEN}); "
    "at least 16 characters.",
)
@click.option(
    "--insecure",
    is_flag=True,
    help="Allow a non-loopback --host without a token (anyone who reaches the port may "
    "use the encoders).",
)
@click.option("--max-batch", default=64, show_default=True, help="Most items per encoder run.")
@click.option(
    "--max-wait-ms",
    default=5.0,
    show_default=True,
    help="How long a batch's first item waits for others to join it.",
)
@click.option(
    "--threads",
    default=1,
    show_default=True,
    help="Encoder runs at once (across encoders and modalities; each runs one batch at a time).",
)
@click.option(
    "--max-items",
    default=64,
    show_default=True,
    help="Most items in one texts/images_base64 request.",
)
@click.option(
    "--max-queue",
    default=1024,
    show_default=True,
    help="Items waiting to be encoded; beyond, requests get 503.",
)
@click.option(
    "--max-body-bytes",
    type=int,
    help="Largest request body (default: one image of MMR_MAX_ITEM_BYTES in base64).",
)
@click.option(
    "--catalog-ttl",
    "catalog_ttl_s",
    default=5.0,
    show_default=True,
    help="Seconds the spaces' active versions are cached.",
)
@click.option(
    "--database-url",
    help="Where the catalog is read (default: MMR_WORKER_DATABASE_URL, MMR_DATABASE_URL, else "
    "the embedded server as mmr_worker).",
)
@click.option("-v", "--verbose", is_flag=True, help="Log every request.")
def serve(
    host: str,
    port: int,
    token: str | None,
    insecure: bool,
    verbose: bool,
    **opts: object,
) -> None:
    """Run the encoder service: POST /v1/embed turns a text or an image into the vector the
    worker would store for a space (its active encoder version), for applications in any
    language and for mmr.embed in PL/Python (SET mmr.encoder_url). Concurrent requests are
    batched into one encoder run. Item limits are the worker's (MMR_MAX_ITEM_BYTES,
    MMR_MAX_TEXT_CHARS, MMR_MAX_IMAGE_PIXELS, ...). Binds 127.0.0.1 by default; another
    address needs --token (or --insecure). Needs `pip install 'pg_mmretrieval[serve]'`.

    \b
    Example:
      mmr serve                                     # http://127.0.0.1:8765
      MMR_SERVE_TOKEN=$(openssl rand -hex 24) mmr serve --host 0.0.0.0
      curl -s localhost:8765/v1/embed -H 'Content-Type: application/json' \\
           -d '{"collection": "products", "space": "clip_image", "text": "a red circle"}'
      curl -s localhost:8765/v1/spaces
    """
    from ..serve import ServeConfig, is_loopback
    from ..serve.server import require_extra
    from ..serve.server import serve as run_server

    require_extra()
    token = token or None
    if not is_loopback(host) and token is None and not insecure:
        raise click.UsageError(
            f"--host {host} is reachable from other machines: give a --token (or "
            f"{ENV_TOKEN}), or --insecure to serve without one"
        )
    try:
        config = ServeConfig(token=token, limits=LoadLimits.from_env(), **opts)  # type: ignore[arg-type]
    except ConfigError as e:
        raise click.UsageError(str(e)) from None
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    auth = "bearer token required" if token else "no token"
    click.echo(f"mmr serve: http://{host}:{port} ({auth}; pid {os.getpid()})", err=True)
    run_server(config, host, port, "debug" if verbose else "info")
