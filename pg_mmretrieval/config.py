"""Settings read from the environment, in one place."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

__all__ = [
    "ENV_DATABASE_URL",
    "ENV_DATA_DIR",
    "ENV_LOAD_PLUGINS",
    "ENV_MODEL_DIR",
    "ENV_ONNX_PROVIDERS",
    "data_dir",
    "database_url",
    "project_model_dir",
    "user_model_dir",
]

ENV_DATABASE_URL = "MMR_DATABASE_URL"
ENV_DATA_DIR = "MMR_DATA_DIR"
ENV_MODEL_DIR = "MMR_MODEL_DIR"
ENV_LOAD_PLUGINS = "MMR_LOAD_PLUGINS"
ENV_ONNX_PROVIDERS = "MMR_ONNX_PROVIDERS"

_PACKAGE_ROOT = Path(__file__).resolve().parent


def database_url() -> str | None:
    """The connection URL given by ``MMR_DATABASE_URL``, or None to use the embedded server."""
    url = os.environ.get(ENV_DATABASE_URL, "").strip()
    return url or None


ENV_WORKER_DATABASE_URL = "MMR_WORKER_DATABASE_URL"


def worker_database_url() -> str | None:
    """The worker's connection URL given by ``MMR_WORKER_DATABASE_URL`` (None: not set)."""
    url = os.environ.get(ENV_WORKER_DATABASE_URL, "").strip()
    return url or None


def data_dir() -> Path:
    """Per-user directory for the embedded server's data (``MMR_DATA_DIR`` overrides it)."""
    override = os.environ.get(ENV_DATA_DIR, "").strip()
    if override:
        return Path(override).expanduser().resolve()
    return platformdirs.user_data_path("pg_mmretrieval")


def project_model_dir() -> Path:
    """``onnx_models/`` of the source checkout (models the project builds or ships)."""
    return _PACKAGE_ROOT.parent / "onnx_models"


def user_model_dir() -> Path | None:
    """The user's model directory from ``MMR_MODEL_DIR``, if set."""
    override = os.environ.get(ENV_MODEL_DIR, "").strip()
    return Path(override).expanduser().resolve() if override else None
