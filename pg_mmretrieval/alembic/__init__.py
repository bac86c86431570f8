"""Alembic integration: collection/space operations on ``op``, ``op.install_mmr()``, and
autogenerate filters.  Importing this package registers the operations.
"""

from __future__ import annotations

from ..spec import SpaceSpec
from . import compare as _compare  # noqa: F401  (registers the autogenerate comparator)
from .autogenerate import combine, include_name, include_object
from .install_op import InstallMMROp
from .operations import (
    LATEST,
    PREVIOUS,
    AddSpaceOp,
    CreateCollectionOp,
    DropCollectionOp,
    DropSpaceOp,
    SwitchSpaceOp,
)

__all__ = [
    "LATEST",
    "PREVIOUS",
    "AddSpaceOp",
    "CreateCollectionOp",
    "DropCollectionOp",
    "DropSpaceOp",
    "InstallMMROp",
    "SpaceSpec",
    "SwitchSpaceOp",
    "combine",
    "include_name",
    "include_object",
]
