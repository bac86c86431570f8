"""SQLAlchemy helpers: declared collections, nearest() with the user's own SQL, sync + async."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from pgvector.sqlalchemy import VECTOR
from sqlalchemy import ForeignKey, LargeBinary, String, select
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, selectinload

import pg_mmretrieval as mmr
from pg_mmretrieval import install
from pg_mmretrieval.sqlalchemy import Collection, SpaceSpec, nearest, ranked, register, search
from tests.surfaces_helpers import drain_queue

N = 2000


class Base(DeclarativeBase):
    pass


class Category(Base):
    __tablename__ = "categories"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))


class Product(Base):
    __tablename__ = "products"
    id: Mapped[int] = mapped_column(primary_key=True)
    category_id: Mapped[int] = mapped_column(ForeignKey("categories.id"))
    price: Mapped[int]
    caption: Mapped[str | None]
    image: Mapped[bytes | None] = mapped_column(LargeBinary)

    mmr = Collection(
        image_column="image",
        text_columns=["caption"],
        spaces=[
            SpaceSpec("txt", "mmr-test", "caption"),
            SpaceSpec("ext", "external", dimensions=8),
            SpaceSpec("half", "external", dimensions=8, storage="halfvec", distance="l2"),
        ],
    )


class Tile(Base):
    __tablename__ = "tiles"
    map: Mapped[str] = mapped_column(String(10), primary_key=True)
    n: Mapped[int] = mapped_column(primary_key=True)

    mmr = Collection(spaces=[SpaceSpec("ext", "external", dimensions=8)])


class Plain(Base):
    __tablename__ = "plain"
    id: Mapped[int] = mapped_column(primary_key=True)


def _vec(i: int) -> np.ndarray[Any, Any]:
    return np.random.default_rng(i).standard_normal(8).astype(np.float32)


@pytest.fixture(scope="module")
def engine(db_url: str) -> Iterator[sa.Engine]:
    eng = sa.create_engine(install._sa_url(db_url))
    Base.metadata.create_all(eng)
    with Session(eng) as s:
        s.add_all([Category(id=1, name="shoes"), Category(id=2, name="hats")])
        s.add_all(
            Product(id=i, category_id=1 + i % 2, price=i % 100, caption=f"caption {i}")
            for i in range(1, N + 1)
        )
        s.commit()
    with mmr.connect(db_url, autocommit=True) as conn:
        keys = list(range(1, N + 1))
        mmr.put_embeddings(conn, "products", "ext", keys, [_vec(i) for i in keys])
        mmr.put_embeddings(conn, "products", "half", keys, [_vec(i) for i in keys])
        drain_queue(conn, "products")
        conn.execute("INSERT INTO tiles SELECT 'm', g FROM generate_series(1, 50) g")
        tile_keys = [{"map": "m", "n": i} for i in range(1, 51)]
        mmr.put_embeddings(conn, "tiles", "ext", tile_keys, [_vec(i) for i in range(1, 51)])
        conn.execute("ANALYZE")
    yield eng
    eng.dispose()


def test_create_all_registers_the_declared_collection(engine: sa.Engine) -> None:
    with engine.connect() as c:
        rows = c.exec_driver_sql(
            "SELECT space, dimensions, storage, modality FROM mmr.spaces "
            "WHERE collection = 'products' ORDER BY space"
        ).all()
        view = c.exec_driver_sql(
            "SELECT view::text FROM mmr.collections WHERE collection = 'products'"
        ).scalar()
    assert [tuple(r) for r in rows] == [
        ("ext", 8, "vector", "external"),
        ("half", 8, "halfvec", "external"),
        ("txt", 32, "vector", "text"),
    ]
    assert view == "products_mmr"
    # create_all again (tables exist) and register() are no-ops
    Base.metadata.create_all(engine)
    with engine.begin() as c:
        register(c, Product)


def test_nearest_returns_orm_objects_with_scores(engine: sa.Engine) -> None:
    with Session(engine) as s:
        rows = s.execute(nearest(Product, "ext", _vec(7), k=5)).all()
        assert len(rows) == 5
        product, score = rows[0]
        assert isinstance(product, Product) and product.id == 7
        assert score == pytest.approx(1.0, abs=1e-5)
        assert [r.score for r in rows] == sorted((r.score for r in rows), reverse=True)
        # by text, through the space's encoder
        (hit,) = s.execute(nearest(Product, "txt", text="caption 12", k=1)).all()
        assert hit[0].id == 12
        # l2 on halfvec: score is minus the distance
        top = s.execute(nearest(Product, "half", _vec(9), k=1)).one()
        assert top[0].id == 9 and top.score == pytest.approx(0.0, abs=1e-2)


def test_nearest_composes_with_where_join_and_offset(engine: sa.Engine) -> None:
    with Session(engine) as s:
        q = _vec(42)
        stmt = (
            nearest(Product, "ext", q, k=10)
            .join(Category, Category.id == Product.category_id)
            .where(Category.name == "hats", Product.price < 20)
        )
        rows = s.execute(stmt).all()
        assert len(rows) == 10  # filters still give k rows (iterative index scan)
        assert all(p.category_id == 2 and p.price < 20 for p, _ in rows)
        # exact answer: the same filter without any index
        vecs = {i: _vec(i) / np.linalg.norm(_vec(i)) for i in range(1, N + 1)}
        qn = q / np.linalg.norm(q)
        exact = sorted(
            (i for i in vecs if i % 2 == 1 and i % 100 < 20),
            key=lambda i: -float(vecs[i] @ qn),
        )[:10]
        # HNSW is approximate: near-exact recall is what the index promises
        assert len({p.id for p, _ in rows} & set(exact)) >= 8
        page1 = s.execute(nearest(Product, "ext", q, k=5).where(Product.price < 20)).all()
        page2 = s.execute(nearest(Product, "ext", q, k=5).where(Product.price < 20).offset(5)).all()
        both = s.execute(nearest(Product, "ext", q, k=10).where(Product.price < 20)).all()
        assert [p.id for p, _ in page1 + page2] == [p.id for p, _ in both]


def _plan_nodes(plan: Any) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _plan_nodes(child)


def test_plan_uses_the_hnsw_index(engine: sa.Engine) -> None:
    stmt = nearest(Product, "ext", _vec(3), k=10).where(Product.price < 50)
    sql = str(stmt.compile(engine, compile_kwargs={"literal_binds": True}))
    with engine.begin() as c:
        c.exec_driver_sql("SELECT set_config('hnsw.iterative_scan', 'strict_order', true)")
        plan = c.exec_driver_sql("EXPLAIN (FORMAT JSON) " + sql).scalar()
        table = c.exec_driver_sql(
            "SELECT embedding_table::text FROM mmr.spaces WHERE collection = 'products' "
            "AND space = 'ext'"
        ).scalar()
    if isinstance(plan, str):
        plan = json.loads(plan)
    nodes = list(_plan_nodes(plan[0]["Plan"]))
    assert nodes[0]["Node Type"] == "Limit"
    index_names = {n.get("Index Name") for n in nodes}
    assert f"{table.split('.')[-1]}_hnsw" in index_names, nodes
    assert not any(n["Node Type"] == "Sort" for n in nodes)


def test_hnsw_settings_are_transaction_local(engine: sa.Engine) -> None:
    with Session(engine) as s:
        s.execute(nearest(Product, "ext", _vec(1), k=3, ef_search=123))
        assert s.execute(sa.text("SHOW hnsw.ef_search")).scalar() == "123"
        assert s.execute(sa.text("SHOW hnsw.iterative_scan")).scalar() == "strict_order"
        # set once per transaction: a second statement does not set them again
        s.execute(sa.text("SELECT set_config('hnsw.ef_search', '55', true)"))
        s.execute(nearest(Product, "ext", _vec(2), k=3, ef_search=123))
        assert s.execute(sa.text("SHOW hnsw.ef_search")).scalar() == "55"
        s.commit()
        # a new transaction starts from the server's settings, and gets them set again
        assert s.execute(sa.text("SHOW hnsw.ef_search")).scalar() == "40"
        s.execute(nearest(Product, "ext", _vec(2), k=3, ef_search=99))
        assert s.execute(sa.text("SHOW hnsw.ef_search")).scalar() == "99"


def test_search_function_as_ranked_select(engine: sa.Engine, db_url: str) -> None:
    with Session(engine) as s:
        stmt = search(Product, "ext", _vec(7), k=5, filter={"price": {"<": 50}})
        rows = s.execute(stmt).all()
        assert rows[0][0].id == 7 and rows[0].score == pytest.approx(1.0, abs=1e-5)
        assert len(rows) == 5 and all(p.price < 50 for p, _ in rows)
        with mmr.connect(db_url) as conn:
            expected = mmr.search(conn, "products", "ext", _vec(7), 5, filter={"price": {"<": 50}})
        assert [p.id for p, _ in rows] == [h.key for h in expected]
        # composite keys, and a where() on the function's top k
        tiles = s.execute(search(Tile, "ext", _vec(3), k=4).where(Tile.n != 3)).all()
        assert len(tiles) == 3 and all(t.map == "m" and t.n != 3 for t, _ in tiles)
        near = s.execute(nearest(Tile, "ext", _vec(3), k=2)).all()
        assert (near[0][0].map, near[0][0].n) == ("m", 3)
        # ranked() over any (key, score) function
        q5 = sa.bindparam(None, [float(x) for x in _vec(5)], type_=VECTOR(8))
        hits = sa.func.mmr.search("tiles", "ext", q5, 3).table_valued(
            sa.column("key", JSONB), sa.column("score", sa.Float)
        )
        top = s.execute(ranked(Tile, hits)).all()
        assert top[0][0].n == 5 and len(top) == 3


def test_hnsw_settings_in_autocommit_mode(engine: sa.Engine) -> None:
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
        c.exec_driver_sql("SET hnsw.ef_search = 21")
        rows = c.execute(nearest(Product, "ext", _vec(2), k=3, ef_search=77)).all()
        assert rows[0][0] == 2
        assert c.exec_driver_sql("SHOW hnsw.ef_search").scalar() == "21"


def test_relationship_to_embeddings(engine: sa.Engine) -> None:
    with Session(engine) as s:
        p = s.get(Product, 5)
        assert p is not None
        v = np.asarray(p.embeddings.ext)
        expected = _vec(5) / np.linalg.norm(_vec(5))
        assert np.allclose(v, expected, atol=1e-6)
        assert len(p.embeddings.txt) == 32
        eager = s.scalars(
            select(Product).options(selectinload(Product.embeddings)).where(Product.id < 4)
        ).all()
        assert [len(x.embeddings.half) for x in eager] == [8, 8, 8]


def test_errors(engine: sa.Engine) -> None:
    with pytest.raises(mmr.InputError, match="does not declare a collection"):
        nearest(Plain, "ext", _vec(1))
    with pytest.raises(mmr.InputError, match="declares no space"):
        nearest(Product, "nope", _vec(1))
    with pytest.raises(mmr.InputError, match="external"):
        nearest(Product, "ext", text="hello")
    with pytest.raises(mmr.InputError, match="exactly one"):
        nearest(Product, "ext")


def test_async_engine(db_url: str, engine: sa.Engine) -> None:
    async def main() -> tuple[list[int], list[int]]:
        aeng = create_async_engine(install._sa_url(db_url).replace("+psycopg", "+psycopg_async"))
        try:
            async with AsyncSession(aeng) as s:
                rows = (await s.execute(nearest(Product, "ext", _vec(11), k=3))).all()
                eager = (
                    await s.scalars(
                        nearest(Product, "txt", text="caption 8", k=2)
                        .with_only_columns(Product)
                        .options(selectinload(Product.embeddings))
                    )
                ).all()
                return [p.id for p, _ in rows], [len(p.embeddings.ext) for p in eager]
        finally:
            await aeng.dispose()

    ids, lens = asyncio.run(main())
    assert ids[0] == 11 and len(ids) == 3
    assert lens == [8, 8]


def test_drop_all_unregisters(db_url: str, engine: sa.Engine) -> None:
    Base.metadata.drop_all(engine)
    with engine.connect() as c:
        assert c.exec_driver_sql("SELECT count(*) FROM mmr.collections").scalar() == 0
        assert c.exec_driver_sql("SELECT to_regclass('products_mmr')").scalar() is None
