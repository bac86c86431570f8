"""The ONNX Runtime layer: the one place that creates inference sessions.

Sessions are cached per process, run on the first usable provider of CUDA -> CPU (or the
order in ``MMR_ONNX_PROVIDERS``) and validate their inputs.  Importing this package imports
neither torch nor transformers.
"""

from __future__ import annotations

from .batching import length_sorted_batches, size_batches
from .providers import requested_providers
from .session import Session, clear_cache, get_session

__all__ = [
    "Session",
    "clear_cache",
    "get_session",
    "length_sorted_batches",
    "requested_providers",
    "size_batches",
]
