"""Autogenerate for collections: diff the declared collections against the database.

When a mapped class in the migration's ``target_metadata`` declares a
:class:`pg_mmretrieval.sqlalchemy.Collection`, ``alembic revision --autogenerate`` emits:

* ``op.create_collection(...)`` for a declared collection the database lacks;
* ``op.add_space(...)`` for a declared space the collection lacks;
* ``op.add_space(..., new_version=True)`` when a declared space's definition (encoder,
  column, dimensions, distance, storage, model id) differs from the active version and from
  every shadow version: a model change becomes a shadow version filled in the background,
  never a drop and re-embed (switch to it with ``op.switch_space`` once it is filled);
* ``op.drop_space(...)``/``op.drop_collection(...)`` for what is no longer declared, with
  the definition that makes their downgrade recreate it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from alembic.autogenerate import comparators, renderers
from alembic.autogenerate.api import AutogenContext
from alembic.operations.ops import UpgradeOps
from sqlalchemy import Connection, MetaData, text

from ..spec import CollectionSpec, SpaceSpec
from .operations import (
    LATEST,
    PREVIOUS,
    AddSpaceOp,
    CreateCollectionOp,
    DropCollectionOp,
    DropSpaceOp,
    SwitchSpaceOp,
)

__all__ = ["compare_collections"]

_DEFINITION = ("encoder", "source_column", "dimensions", "distance", "storage")


def _db_state(connection: Connection) -> dict[str, dict[str, Any]]:
    if connection.execute(text("SELECT to_regclass('mmr._collection')")).scalar() is None:
        return {}
    out: dict[str, dict[str, Any]] = {}
    for r in connection.execute(
        text(
            "SELECT c.name, c.source::oid, c.source::text, c.image_column::text, c.image_kind, "
            "c.text_columns::text[], c.view_name::text, c.view_name IS NOT NULL FROM "
            "mmr._collection c"
        )
    ):
        out[r[0]] = {
            "oid": r[1],
            "spec": CollectionSpec(r[0], r[2], r[3], tuple(r[5] or ()), r[4], r[6], r[7]),
            "spaces": {},
        }
    for r in connection.execute(
        text(
            "SELECT c.name, s.name, s.version, s.active, s.encoder, s.source_column::text, "
            "s.dimensions, s.distance, s.storage, s.model_id, s.options FROM mmr._space s "
            "JOIN mmr._collection c ON c.id = s.collection_id ORDER BY s.version"
        )
    ):
        opts = r[10] or {}
        spec = SpaceSpec(
            r[1],
            r[4],
            r[5],
            r[6],
            r[7],
            r[8],
            r[9],
            hnsw_m=int(opts.get("hnsw_m", 16)),
            hnsw_ef_construction=int(opts.get("hnsw_ef_construction", 64)),
        )
        out[r[0]]["spaces"].setdefault(r[1], []).append((r[2], r[3], spec))
    return out


def _same(declared: SpaceSpec, stored: SpaceSpec) -> bool:
    for f in _DEFINITION:
        want = declared.resolved_dimensions() if f == "dimensions" else getattr(declared, f)
        if want != getattr(stored, f):
            return False
    return declared.model_id is None or declared.model_id == stored.model_id


def compare_collections(
    autogen_context: AutogenContext, upgrade_ops: UpgradeOps, schemas: Any
) -> None:
    """Append collection/space operations for the declared collections (see module doc)."""
    from ..sqlalchemy.collection import Collection

    connection = autogen_context.connection
    metadata = autogen_context.metadata
    if connection is None or metadata is None:
        return
    metadatas: list[MetaData] = (
        list(metadata) if isinstance(metadata, list | tuple) else [metadata]  # type: ignore[list-item]
    )
    declared = [
        c
        for c in Collection._by_class.values()
        if c.table is not None and any(c.table.metadata is m for m in metadatas)
    ]
    state = _db_state(connection)
    tables = {t for m in metadatas for t in m.tables.values()}
    for coll in declared:
        spec = coll.spec
        stored = state.get(spec.name)
        if stored is None:
            upgrade_ops.ops.append(CreateCollectionOp(spec))
            continue
        for s in spec.spaces:
            versions = stored["spaces"].get(s.name, [])
            if not versions:
                upgrade_ops.ops.append(AddSpaceOp(spec.name, s))
            elif not any(_same(s, v[2]) for v in versions):
                upgrade_ops.ops.append(AddSpaceOp(spec.name, s, new_version=True))
        for name, versions in stored["spaces"].items():
            if name not in {s.name for s in spec.spaces}:
                active = next((v[2] for v in versions if v[1]), versions[-1][2])
                upgrade_ops.ops.append(DropSpaceOp(spec.name, name, None, active))
    # collections on this metadata's tables that nothing declares any more
    names = {c.spec.name for c in declared}
    for table in tables:
        source = f"{table.schema}.{table.name}" if table.schema else table.name
        oid = connection.execute(text("SELECT to_regclass(:t)::oid"), {"t": source}).scalar()
        for name, stored in state.items():
            if oid is not None and stored["oid"] == oid and name not in names:
                spaces = tuple(
                    next((v[2] for v in vs if v[1]), vs[-1][2]) for vs in stored["spaces"].values()
                )
                upgrade_ops.ops.append(
                    DropCollectionOp(name, dataclasses.replace(stored["spec"], spaces=spaces))
                )


try:  # Alembic >= 1.18: run after the table comparisons (a new table comes first)
    from alembic.util import DispatchPriority

    comparators.dispatch_for("schema", priority=DispatchPriority.LAST)(compare_collections)
except ImportError:  # older Alembic: registration order (after the built-in comparators)
    comparators.dispatch_for("schema")(compare_collections)


# -- rendering into migration scripts ---------------------------------------------------------

_SPACE_DEFAULTS = {f.name: f.default for f in dataclasses.fields(SpaceSpec)}


def _imports(ctx: AutogenContext, *names: str) -> None:
    ctx.imports.add("import pg_mmretrieval.alembic")
    if names:
        ctx.imports.add(f"from pg_mmretrieval.alembic import {', '.join(sorted(names))}")


def _render_space(s: SpaceSpec) -> str:
    args = [repr(s.name), repr(s.encoder)]
    if s.source_column is not None:
        args.append(repr(s.source_column))
    for f in dataclasses.fields(SpaceSpec)[3:]:
        value = getattr(s, f.name)
        if value != _SPACE_DEFAULTS[f.name]:
            args.append(f"{f.name}={value!r}")
    return f"SpaceSpec({', '.join(args)})"


def _collection_kwargs(spec: CollectionSpec) -> str:
    parts = []
    for key in ("image_column", "image_kind", "view_name"):
        value = getattr(spec, key)
        if value is not None:
            parts.append(f"{key}={value!r}")
    if spec.text_columns:
        parts.append(f"text_columns={list(spec.text_columns)!r}")
    if not spec.create_view:
        parts.append("create_view=False")
    if spec.spaces:
        parts.append(f"spaces=[{', '.join(_render_space(s) for s in spec.spaces)}]")
    return "".join(f", {p}" for p in parts)


def _version(v: int | None) -> str:
    return {LATEST: "LATEST", PREVIOUS: "PREVIOUS"}.get(v, repr(v)) if v is not None else "None"


@renderers.dispatch_for(CreateCollectionOp)
def _render_create(ctx: AutogenContext, op: CreateCollectionOp) -> str:
    _imports(ctx, *(["SpaceSpec"] if op.spec.spaces else []))
    return (
        f"op.create_collection({op.spec.name!r}, {op.spec.source!r}{_collection_kwargs(op.spec)})"
    )


@renderers.dispatch_for(DropCollectionOp)
def _render_drop(ctx: AutogenContext, op: DropCollectionOp) -> str:
    if op.spec is None:
        _imports(ctx)
        return f"op.drop_collection({op.name!r})"
    _imports(ctx, *(["SpaceSpec"] if op.spec.spaces else []))
    return (
        f"op.drop_collection({op.name!r}, source={op.spec.source!r}{_collection_kwargs(op.spec)})"
    )


@renderers.dispatch_for(AddSpaceOp)
def _render_add_space(ctx: AutogenContext, op: AddSpaceOp) -> str:
    _imports(ctx, "SpaceSpec")
    extra = ", new_version=True" if op.new_version else ""
    return f"op.add_space({op.collection!r}, {_render_space(op.spec)}{extra})"


@renderers.dispatch_for(DropSpaceOp)
def _render_drop_space(ctx: AutogenContext, op: DropSpaceOp) -> str:
    names = [n for n, v in (("LATEST", LATEST), ("PREVIOUS", PREVIOUS)) if op.version == v]
    _imports(ctx, *names)
    args = [repr(op.collection), repr(op.space)]
    if op.version is not None:
        args.append(_version(op.version))
    if op.spec is not None:
        s = op.spec
        args += [f"encoder={s.encoder!r}", f"source_column={s.source_column!r}"]
        args.append(f"dimensions={s.resolved_dimensions()!r}")
        for f in dataclasses.fields(SpaceSpec)[4:]:
            value = getattr(s, f.name)
            if value != _SPACE_DEFAULTS[f.name]:
                args.append(f"{f.name}={value!r}")
    return f"op.drop_space({', '.join(args)})"


@renderers.dispatch_for(SwitchSpaceOp)
def _render_switch(ctx: AutogenContext, op: SwitchSpaceOp) -> str:
    names = ["PREVIOUS"] if op.version == PREVIOUS else []
    _imports(ctx, *names)
    force = ", force=True" if op.force else ""
    return f"op.switch_space({op.collection!r}, {op.space!r}, {_version(op.version)}{force})"
