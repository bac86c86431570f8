"""Running the service with uvicorn, and the check that the ``serve`` extra is installed."""

from __future__ import annotations

import importlib.util
from typing import Any

from ..errors import ConfigError
from .config import ServeConfig

__all__ = ["make_server", "require_extra", "serve"]


def require_extra() -> None:
    """Raises ConfigError naming the extra when Starlette or uvicorn is missing."""
    missing = [m for m in ("starlette", "uvicorn") if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(
            f"mmr serve needs {' and '.join(missing)}: install the serve extra with "
            "`pip install 'pg_mmretrieval[serve]'`"
        )


def make_server(config: ServeConfig, host: str, port: int, log_level: str = "info") -> Any:
    """A ``uvicorn.Server`` for the service (``.run()`` blocks; ``.should_exit`` stops it)."""
    require_extra()
    import uvicorn

    from .app import create_app

    uv = uvicorn.Config(
        create_app(config),
        host=host,
        port=port,
        log_level=log_level,
        lifespan="on",
        # connections beyond this get 503 from uvicorn itself: requests waiting for a batch
        # are bounded by --max-queue, idle connections by this
        limit_concurrency=config.max_queue + 64,
        server_header=False,
        access_log=log_level == "debug",
    )
    return uvicorn.Server(uv)


def serve(config: ServeConfig, host: str, port: int, log_level: str = "info") -> None:
    make_server(config, host, port, log_level).run()
