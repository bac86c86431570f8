"""``mmr serve``: an encoder service for applications in any language (docs/serve.md).

``POST /v1/embed`` turns a text or an image into the vector the worker would store for a
space (its active encoder version, the worker's loaders, limits and encoders); concurrent
requests are batched into one encoder run.  Needs the ``serve`` extra
(``pip install 'pg_mmretrieval[serve]'``: Starlette and uvicorn).
"""

from __future__ import annotations

from .catalog import ServedSpace, SpaceCatalog
from .config import ServeConfig, is_loopback

__all__ = ["ServeConfig", "ServedSpace", "SpaceCatalog", "is_loopback", "run"]


def run(config: ServeConfig, host: str = "127.0.0.1", port: int = 8765) -> None:
    """Serve until interrupted (SIGINT/SIGTERM).

    Raises:
        ConfigError: the ``serve`` extra (Starlette, uvicorn) is not installed.
    """
    from .server import serve

    serve(config, host, port)
