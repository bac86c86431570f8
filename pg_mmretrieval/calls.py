"""The SQL API calls the Python surfaces make, each written once.

``collections``, both clients, the SQLAlchemy integration and the Alembic operations all call
``mmr.create_collection``, ``mmr.add_space`` and the others through the :class:`Call` objects
here: one list of arguments (with their casts) per function, rendered for psycopg
(``%(name)s`` placeholders) or for SQLAlchemy's ``text()`` (``:name`` bind parameters).
Argument names are those of :meth:`pg_mmretrieval.spec.SpaceSpec.add_space_args` and
:meth:`pg_mmretrieval.spec.CollectionSpec.create_collection_args`.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "ADD_SPACE",
    "CREATE_COLLECTION",
    "DROP_COLLECTION",
    "DROP_SPACE",
    "PUT_EMBEDDINGS",
    "SWITCH_SPACE",
    "Arg",
    "Call",
]


@dataclass(frozen=True)
class Arg:
    """One argument: its bind name, an optional cast, and whether psycopg sends it binary."""

    name: str
    cast: str | None = None
    binary: bool = False


@dataclass(frozen=True)
class Call:
    """``SELECT mmr.<function>(<args>)[::<returns>]``."""

    function: str
    args: tuple[Arg, ...]
    returns: str | None = None

    @property
    def names(self) -> tuple[str, ...]:
        """The arguments' names, in order."""
        return tuple(a.name for a in self.args)

    def _render(self, values: list[str]) -> str:
        out = f"SELECT mmr.{self.function}({', '.join(values)})"
        return f"{out}::{self.returns}" if self.returns else out

    def psycopg(self) -> str:
        """The statement with psycopg placeholders (``%(name)s::cast``)."""
        values = []
        for a in self.args:
            v = f"%({a.name})" + ("b" if a.binary else "s")
            values.append(f"{v}::{a.cast}" if a.cast else v)
        return self._render(values)

    def sqlalchemy(self, **exprs: str) -> str:
        """The statement with SQLAlchemy bind parameters (``CAST(:name AS cast)``); ``exprs``
        replace an argument by a SQL expression (e.g. a subquery computing a version)."""
        values = []
        for a in self.args:
            if a.name in exprs:
                values.append(exprs[a.name])
            elif a.cast:
                values.append(f"CAST(:{a.name} AS {a.cast})")
            else:
                values.append(f":{a.name}")
        return self._render(values)


def _args(*specs: str) -> tuple[Arg, ...]:
    out = []
    for s in specs:
        binary = s.startswith("!")
        name, _, cast = s.lstrip("!").partition("::")
        out.append(Arg(name, cast or None, binary))
    return tuple(out)


CREATE_COLLECTION = Call(
    "create_collection",
    _args(
        "name",
        "source::regclass",
        "image_column",
        "text_columns",
        "image_kind",
        "view_name",
        "create_view",
    ),
)
ADD_SPACE = Call(
    "add_space",
    _args(
        "collection",
        "space",
        "encoder",
        "source_column",
        "dimensions",
        "distance",
        "storage",
        "model_id",
        "new_version",
        "backfill",
        "hnsw_m",
        "hnsw_ef_construction",
    ),
    returns="text",
)
SWITCH_SPACE = Call("switch_space", _args("collection", "space", "version::int", "force"))
DROP_SPACE = Call("drop_space", _args("collection", "space", "version::int"))
DROP_COLLECTION = Call("drop_collection", _args("name"))
PUT_EMBEDDINGS = Call(
    "put_embeddings", _args("collection", "space", "keys::jsonb[]", "!embeddings::vector[]")
)
