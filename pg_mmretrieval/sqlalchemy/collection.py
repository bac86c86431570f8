"""Declare that a mapped class is a collection.

::

    class Product(Base):
        __tablename__ = "products"
        id: Mapped[int] = mapped_column(primary_key=True)
        image: Mapped[bytes | None]
        caption: Mapped[str | None]

        mmr = Collection(
            image_column="image",
            text_columns=["caption"],
            spaces=[SpaceSpec("clip_image", "mmr-test", "image")],
        )

``Base.metadata.create_all()`` then registers the collection (``mmr.create_collection`` and
``mmr.add_space``) right after it creates the table, and ``drop_all()`` unregisters it first;
migrations use the same spec (``op.create_collection(**Product.mmr.op_kwargs())``).
``Product.embeddings`` is a read-only relationship to the row's current embeddings (one
attribute per space), loaded lazily or eagerly like any relationship.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any, ClassVar

from pgvector.sqlalchemy import HALFVEC, VECTOR
from sqlalchemy import Column, MetaData, Table, and_, event, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Mapper, registry, relationship
from sqlalchemy.sql import bindparam
from sqlalchemy.types import Text

from .. import calls
from ..errors import InputError, NotFoundError
from ..spec import CollectionSpec, SpaceSpec, default_view_name

__all__ = ["Collection", "collection_of", "register", "unregister"]


# One registry (and MetaData) of generated view classes per application MetaData: the views
# never enter the application's metadata, so create_all and autogenerate never see them, and
# two applications with a table of the same name do not collide.
_VIEW_REGISTRIES: weakref.WeakKeyDictionary[MetaData, registry] = weakref.WeakKeyDictionary()


def _view_registry(metadata: MetaData) -> registry:
    reg = _VIEW_REGISTRIES.get(metadata)
    if reg is None:
        reg = _VIEW_REGISTRIES[metadata] = registry(metadata=MetaData())
    return reg


class Collection:
    """Declares the mapped class it is assigned to as a collection (see the module doc).

    Args:
        name: the collection's name (default: the table's name).
        image_column, text_columns, image_kind, view_name: as for ``mmr.create_collection``.
        spaces: the spaces to create with the collection.
        relationship: the name of the relationship to the row's embeddings added to the
            class (``None``: none).
    """

    _by_class: ClassVar[dict[type[Any], Collection]] = {}

    def __init__(
        self,
        name: str | None = None,
        *,
        image_column: str | None = None,
        text_columns: Sequence[str] = (),
        image_kind: str | None = None,
        view_name: str | None = None,
        spaces: Sequence[SpaceSpec] = (),
        relationship: str | None = "embeddings",
    ) -> None:
        self._name = name
        self.image_column = image_column
        self.text_columns = tuple(text_columns)
        self.image_kind = image_kind
        self._view_name = view_name
        self.spaces = tuple(spaces)
        self.relationship_name = relationship
        self.owner: type[Any] | None = None
        self.table: Table | None = None
        self.embeddings_class: type[Any] | None = None

    # -- declaration -----------------------------------------------------------------------
    def __set_name__(self, owner: type[Any], attr: str) -> None:
        self.owner = owner
        Collection._by_class[owner] = self
        event.listen(owner, "after_mapper_constructed", self._mapped)

    def __get__(self, obj: Any, owner: type[Any] | None = None) -> Collection:
        return self

    def _mapped(self, mapper: Mapper[Any], cls: type[Any]) -> None:
        table = mapper.local_table
        if not isinstance(table, Table):
            raise InputError(f"{cls.__name__}: a collection must be mapped to a table")
        self.table = table
        _ = self.spec  # validate the declaration now, at class definition
        metadata = table.metadata
        metadata.info.setdefault("mmr_managed_views", set()).add((table.schema, self.view_name))
        event.listen(metadata, "after_create", self._after_create)
        event.listen(metadata, "before_drop", self._before_drop)
        self.embeddings_class = self._embeddings_class(cls, table)
        if self.relationship_name is not None:
            emb_table = self.embeddings_class.__table__
            mapper.add_property(
                self.relationship_name,
                relationship(
                    self.embeddings_class,
                    primaryjoin=and_(
                        *(table.c[c.name] == emb_table.c[c.name] for c in table.primary_key)
                    ),
                    foreign_keys=[emb_table.c[c.name] for c in table.primary_key],
                    viewonly=True,
                    uselist=False,
                ),
            )

    def _embeddings_class(self, cls: type[Any], table: Table) -> type[Any]:
        if not self.spec.create_view:
            raise InputError(f"{cls.__name__}: the SQLAlchemy helpers need the collection view")
        columns: list[Column[Any]] = [
            Column(c.name, c.type, primary_key=True) for c in table.primary_key
        ]
        for s in self.spaces:
            vtype = HALFVEC(s.dimensions) if s.storage == "halfvec" else VECTOR(s.dimensions)
            columns.append(Column(s.name, vtype))
        reg = _view_registry(table.metadata)
        view = Table(
            self.view_name, reg.metadata, *columns, schema=table.schema, info={"mmr_view": True}
        )
        emb_cls = type(
            f"{cls.__name__}Embeddings",
            (),
            {"__doc__": _emb_doc(cls), "__module__": cls.__module__},
        )
        reg.map_imperatively(emb_cls, view)
        return emb_cls

    # -- the spec --------------------------------------------------------------------------
    @property
    def name(self) -> str:
        """The collection's name."""
        return self._name or self._table().name

    @property
    def view_name(self) -> str:
        """The collection view's name."""
        return self._view_name or default_view_name(self._table().name)

    def _table(self) -> Table:
        if self.table is None:
            raise InputError("the class declaring this collection is not mapped yet")
        return self.table

    @property
    def spec(self) -> CollectionSpec:
        """The collection as a :class:`~pg_mmretrieval.CollectionSpec`."""
        table = self._table()
        source = f"{table.schema}.{table.name}" if table.schema else table.name
        return CollectionSpec(
            name=self.name,
            source=source,
            image_column=self.image_column,
            text_columns=self.text_columns,
            image_kind=self.image_kind,
            view_name=self._view_name,
            spaces=self.spaces,
        )

    def space(self, name: str) -> SpaceSpec:
        """The declared space called ``name``."""
        return self.spec.space(name)

    def op_kwargs(self) -> dict[str, Any]:
        """Arguments for ``op.create_collection(**...)`` in a migration."""
        args = self.spec.create_collection_args()
        args["text_columns"] = list(self.text_columns)
        args["spaces"] = list(self.spaces)
        return args

    # -- create_all / drop_all -------------------------------------------------------------
    def _after_create(self, target: MetaData, connection: Connection, **kw: Any) -> None:
        if _includes(kw, self.table):
            register(connection, self.owner)

    def _before_drop(self, target: MetaData, connection: Connection, **kw: Any) -> None:
        if _includes(kw, self.table):
            unregister(connection, self.owner)


def _includes(kw: dict[str, Any], table: Table | None) -> bool:
    # create_all/drop_all pass the tables they create/drop (after checkfirst) as tables=
    return table is not None and any(t is table for t in kw.get("tables", [table]))


def _emb_doc(cls: type[Any]) -> str:
    return f"Current embeddings of a {cls.__name__} row (read-only; one attribute per space)."


def collection_of(cls: type[Any]) -> Collection:
    """The :class:`Collection` a mapped class declares.

    Raises:
        InputError: the class declares none.
    """
    for klass in getattr(cls, "__mro__", (cls,)):
        found = Collection._by_class.get(klass)
        if found is not None:
            return found
    raise InputError(
        f"{getattr(cls, '__name__', cls)!r} does not declare a collection: add "
        "`mmr = Collection(...)` to the class"
    )


_CREATE = text(calls.CREATE_COLLECTION.sqlalchemy()).bindparams(
    bindparam("text_columns", type_=ARRAY(Text))
)

_ADD_SPACE = text(calls.ADD_SPACE.sqlalchemy())

# mmr.drop_collection when the collection is registered (constant text)
_DROP_IF_REGISTERED = text(
    calls.DROP_COLLECTION.sqlalchemy()  # noqa: S608
    + " WHERE EXISTS (SELECT 1 FROM mmr._collection WHERE name = :name)"
)


def register(connection: Connection, *classes: type[Any] | None) -> None:
    """Create the collections that mapped classes declare, and any missing declared spaces.

    ``create_all`` calls it for you; call it yourself when the tables already exist (e.g.
    created by a migration without ``op.create_collection``).  With an ``AsyncConnection``:
    ``await conn.run_sync(register, Product)``.
    """
    if connection.execute(text("SELECT to_regclass('mmr._collection')")).scalar() is None:
        raise NotFoundError(
            "the mmr schema is not installed in this database, so collections cannot be "
            "registered: run `mmr db upgrade` (or op.install_mmr() in a migration) first"
        )
    for cls in classes:
        if cls is None:
            continue
        coll = collection_of(cls)
        spec = coll.spec
        exists = connection.execute(
            text("SELECT 1 FROM mmr._collection WHERE name = :n"), {"n": spec.name}
        ).first()
        if not exists:
            args = spec.create_collection_args()
            args["source"] = _quoted_source(connection, coll._table())
            connection.execute(_CREATE, args)
        have = {
            r[0]
            for r in connection.execute(
                text(
                    "SELECT s.name FROM mmr._space s JOIN mmr._collection c "
                    "ON c.id = s.collection_id WHERE c.name = :n"
                ),
                {"n": spec.name},
            )
        }
        for s in spec.spaces:
            if s.name not in have:
                connection.execute(_ADD_SPACE, s.add_space_args(spec.name))


def unregister(connection: Connection, *classes: type[Any] | None) -> None:
    """Drop the collections mapped classes declare (when registered); tables stay."""
    installed = connection.execute(text("SELECT to_regclass('mmr._collection')")).scalar()
    if installed is None:
        return
    for cls in classes:
        if cls is None:
            continue
        name = collection_of(cls).name
        connection.execute(_DROP_IF_REGISTERED, {"name": name})


def _quoted_source(connection: Connection, table: Table) -> str:
    return str(connection.dialect.identifier_preparer.format_table(table))
