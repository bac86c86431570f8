"""``mmr models export``: Hugging Face checkpoints to ONNX model directories.

Needs the ``export`` extra (torch, transformers, optimum-onnx); nothing on the runtime path
imports this package.
"""

from __future__ import annotations

from .api import export_model

__all__ = ["export_model"]
