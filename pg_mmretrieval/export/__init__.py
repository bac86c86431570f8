"""``mmr models export`` (being built: see issue 3)."""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError

__all__ = ["export_model"]


def export_model(
    source: str,
    name: str,
    *,
    output_dir: Path | None = None,
    fp16: bool = False,
    int8: bool = False,
    overwrite: bool = False,
) -> Path:
    """Export a checkpoint to an ONNX model directory (not implemented yet)."""
    raise ConfigError("model export is not implemented yet")
