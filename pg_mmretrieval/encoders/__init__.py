"""Encoders: the public API (``get_encoder``) and the base class plugins implement.

The base class lives in :mod:`pg_mmretrieval.bases`, the registry (filled by plugins through
the ``register_encoders`` hook) in :mod:`pg_mmretrieval.registry`; both are re-exported here.
An encoder turns items into vectors: ``str`` is text, ``bytes`` is an encoded image file.
"""

from __future__ import annotations

from ..bases import Encoder, Item
from ..registry import _ENCODERS as _REGISTRY  # noqa: F401  (kept for code that reached in)
from ..registry import get_encoder, list_encoders, register_encoder

__all__ = ["Encoder", "Item", "get_encoder", "list_encoders", "register_encoder"]
