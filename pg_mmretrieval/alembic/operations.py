"""Alembic operations for collections and spaces, each with its reverse for downgrades.

Import this module (or ``pg_mmretrieval.alembic``) in your ``env.py`` or migration script
and the operations appear on ``op``::

    op.create_collection("products", "products", image_column="image",
                         spaces=[SpaceSpec("clip", "mmr-test", "image")])
    op.add_space("products", "caption_ext", "external", dimensions=384)
    op.switch_space("products", "clip")
    op.drop_space("products", "caption_ext", encoder="external", dimensions=384)
    op.drop_collection("products", source="products", image_column="image")

Every statement is a call of the SQL API, so ``alembic upgrade --sql`` prints it too.  The
reverse of a drop can only recreate what the operation was told: give ``drop_space`` and
``drop_collection`` the definition (as Alembic's own ``drop_table`` needs the columns) or the
downgrade raises.  Embeddings are not restored by a downgrade: a recreated encoder space is
refilled by the worker (its backfill is queued), an external one by your application.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from alembic.operations import MigrateOperation, Operations
from sqlalchemy import text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.sql import bindparam
from sqlalchemy.types import Text

from .. import calls
from ..errors import InputError
from ..spec import CollectionSpec, SpaceSpec

__all__ = [
    "AddSpaceOp",
    "CreateCollectionOp",
    "DropCollectionOp",
    "DropSpaceOp",
    "SwitchSpaceOp",
]

#: ``version`` value meaning "the newest version of the space" (the one add_space made)
LATEST = -1
#: ``version`` value meaning "the version below the active one" (the one switched away from)
PREVIOUS = -2


@Operations.register_operation("create_collection")
class CreateCollectionOp(MigrateOperation):
    """``mmr.create_collection`` and ``mmr.add_space`` for each of ``spaces``."""

    def __init__(self, spec: CollectionSpec) -> None:
        self.spec = spec

    @classmethod
    def create_collection(
        cls,
        operations: Operations,
        name: str,
        source: str,
        *,
        image_column: str | None = None,
        text_columns: Sequence[str] = (),
        image_kind: str | None = None,
        view_name: str | None = None,
        create_view: bool = True,
        spaces: Sequence[SpaceSpec] = (),
    ) -> None:
        """Register table ``source`` as collection ``name``, with optional spaces.

        Downgrade: ``op.drop_collection(name)`` (the table stays).
        """
        spec = CollectionSpec(
            name,
            source,
            image_column,
            tuple(text_columns),
            image_kind,
            view_name,
            create_view,
            tuple(spaces),
        )
        operations.invoke(cls(spec))

    def reverse(self) -> DropCollectionOp:
        return DropCollectionOp(self.spec.name, self.spec)

    def to_diff_tuple(self) -> tuple[Any, ...]:
        return ("create_collection", self.spec.name)


@Operations.register_operation("drop_collection")
class DropCollectionOp(MigrateOperation):
    """``mmr.drop_collection``: queue, embeddings, triggers and view go; the table stays."""

    def __init__(self, name: str, spec: CollectionSpec | None = None) -> None:
        self.name = name
        self.spec = spec

    @classmethod
    def drop_collection(
        cls,
        operations: Operations,
        name: str,
        *,
        source: str | None = None,
        image_column: str | None = None,
        text_columns: Sequence[str] = (),
        image_kind: str | None = None,
        view_name: str | None = None,
        create_view: bool = True,
        spaces: Sequence[SpaceSpec] = (),
    ) -> None:
        """Drop collection ``name``.  Pass its definition (``source`` etc.) to make the
        operation reversible."""
        spec = None
        if source is not None:
            spec = CollectionSpec(
                name,
                source,
                image_column,
                tuple(text_columns),
                image_kind,
                view_name,
                create_view,
                tuple(spaces),
            )
        operations.invoke(cls(name, spec))

    def reverse(self) -> CreateCollectionOp:
        if self.spec is None:
            raise InputError(
                f"drop_collection({self.name!r}) cannot be reversed: pass the collection's "
                "definition (source=..., image_column=..., text_columns=..., spaces=...)"
            )
        return CreateCollectionOp(self.spec)

    def to_diff_tuple(self) -> tuple[Any, ...]:
        return ("drop_collection", self.name)


@Operations.register_operation("add_space")
class AddSpaceOp(MigrateOperation):
    """``mmr.add_space``: a space, or a shadow version of one (``new_version=True``)."""

    def __init__(self, collection: str, spec: SpaceSpec, new_version: bool = False) -> None:
        self.collection = collection
        self.spec = spec
        self.new_version = new_version

    @classmethod
    def add_space(
        cls,
        operations: Operations,
        collection: str,
        space: str | SpaceSpec,
        encoder: str | None = None,
        source_column: str | None = None,
        *,
        dimensions: int | None = None,
        new_version: bool = False,
        **options: Any,
    ) -> None:
        """Add a space (see ``mmr.add_space``); ``space`` may be a :class:`SpaceSpec`.

        Downgrade: drop the space (all its versions), or with ``new_version=True`` only the
        newest version.
        """
        operations.invoke(
            cls(
                collection,
                _space_spec(space, encoder, source_column, dimensions, options),
                new_version,
            )
        )

    def reverse(self) -> DropSpaceOp:
        return DropSpaceOp(
            self.collection,
            self.spec.name,
            LATEST if self.new_version else None,
            self.spec,
        )

    def to_diff_tuple(self) -> tuple[Any, ...]:
        return ("add_space", self.collection, self.spec.name, self.new_version)


@Operations.register_operation("drop_space")
class DropSpaceOp(MigrateOperation):
    """``mmr.drop_space``: one version of a space, or every version."""

    def __init__(
        self,
        collection: str,
        space: str,
        version: int | None = None,
        spec: SpaceSpec | None = None,
    ) -> None:
        self.collection = collection
        self.space = space
        self.version = version
        self.spec = spec

    @classmethod
    def drop_space(
        cls,
        operations: Operations,
        collection: str,
        space: str,
        version: int | None = None,
        *,
        encoder: str | None = None,
        source_column: str | None = None,
        dimensions: int | None = None,
        **options: Any,
    ) -> None:
        """Drop a space (every version, or ``version``).  Pass its definition (``encoder``,
        ``source_column``, ``dimensions``, ...) to make the operation reversible."""
        spec = None
        if encoder is not None:
            spec = SpaceSpec(space, encoder, source_column, dimensions, **options)
        operations.invoke(cls(collection, space, version, spec))

    def reverse(self) -> AddSpaceOp:
        if self.spec is None:
            raise InputError(
                f"drop_space({self.collection!r}, {self.space!r}) cannot be reversed: pass "
                "the space's definition (encoder=..., source_column=..., dimensions=...)"
            )
        return AddSpaceOp(self.collection, self.spec, new_version=self.version is not None)

    def to_diff_tuple(self) -> tuple[Any, ...]:
        return ("drop_space", self.collection, self.space, self.version)


@Operations.register_operation("switch_space")
class SwitchSpaceOp(MigrateOperation):
    """``mmr.switch_space``: make a shadow version of a space the active one."""

    def __init__(
        self, collection: str, space: str, version: int | None = None, force: bool = False
    ) -> None:
        self.collection = collection
        self.space = space
        self.version = version
        self.force = force

    @classmethod
    def switch_space(
        cls,
        operations: Operations,
        collection: str,
        space: str,
        version: int | None = None,
        *,
        force: bool = False,
    ) -> None:
        """Switch to ``version`` (default: the newest shadow version).

        Downgrade: switch back to the version below the active one.
        """
        operations.invoke(cls(collection, space, version, force))

    def reverse(self) -> SwitchSpaceOp:
        return SwitchSpaceOp(self.collection, self.space, PREVIOUS, self.force)

    def to_diff_tuple(self) -> tuple[Any, ...]:
        return ("switch_space", self.collection, self.space, self.version)


def _space_spec(
    space: str | SpaceSpec,
    encoder: str | None,
    source_column: str | None,
    dimensions: int | None,
    options: dict[str, Any],
) -> SpaceSpec:
    if isinstance(space, SpaceSpec):
        return space
    if encoder is None:
        raise InputError(f"add_space({space!r}): encoder is required")
    return SpaceSpec(space, encoder, source_column, dimensions, **options)


# -- implementations: SQL API calls (rendered as SQL text in offline mode) -------------------

_CREATE = text(calls.CREATE_COLLECTION.sqlalchemy()).bindparams(
    bindparam("text_columns", type_=ARRAY(Text))
)

_ADD_SPACE = text(calls.ADD_SPACE.sqlalchemy())

# The version a reverse operation means, computed by the database at run time.
_VERSION_SQL = {
    LATEST: "(SELECT max(version) FROM mmr.spaces WHERE collection = :collection "
    "AND space = :space)",
    PREVIOUS: "(SELECT max(version) FROM mmr.spaces WHERE collection = :collection "
    "AND space = :space AND version < (SELECT version FROM mmr.spaces "
    "WHERE collection = :collection AND space = :space AND active))",
}


def _version(version: int | None) -> tuple[dict[str, str], dict[str, Any]]:
    """The version argument: a SQL expression for LATEST/PREVIOUS, else a bound value."""
    if version in _VERSION_SQL:
        return {"version": _VERSION_SQL[version]}, {}
    return {}, {"version": version}


@Operations.implementation_for(CreateCollectionOp)
def _create_collection(operations: Operations, operation: CreateCollectionOp) -> None:
    spec = operation.spec
    args = spec.create_collection_args()
    operations.execute(_CREATE.bindparams(**args))
    for s in spec.spaces:
        operations.execute(_ADD_SPACE.bindparams(**s.add_space_args(spec.name)))


@Operations.implementation_for(DropCollectionOp)
def _drop_collection(operations: Operations, operation: DropCollectionOp) -> None:
    operations.execute(text(calls.DROP_COLLECTION.sqlalchemy()).bindparams(name=operation.name))


@Operations.implementation_for(AddSpaceOp)
def _add_space(operations: Operations, operation: AddSpaceOp) -> None:
    args = operation.spec.add_space_args(operation.collection, new_version=operation.new_version)
    operations.execute(_ADD_SPACE.bindparams(**args))


@Operations.implementation_for(DropSpaceOp)
def _drop_space(operations: Operations, operation: DropSpaceOp) -> None:
    vsql, vparams = _version(operation.version)
    operations.execute(
        text(calls.DROP_SPACE.sqlalchemy(**vsql)).bindparams(
            collection=operation.collection, space=operation.space, **vparams
        )
    )


@Operations.implementation_for(SwitchSpaceOp)
def _switch_space(operations: Operations, operation: SwitchSpaceOp) -> None:
    vsql, vparams = _version(operation.version)
    operations.execute(
        text(calls.SWITCH_SPACE.sqlalchemy(**vsql)).bindparams(
            collection=operation.collection, space=operation.space, force=operation.force, **vparams
        )
    )
