"""SQLAlchemy: declare a collection on a mapped class, then query nearest rows with select()."""

from __future__ import annotations

import numpy as np
from sqlalchemy import ForeignKey, String, create_engine, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, selectinload

import pg_mmretrieval as mmr
from pg_mmretrieval.sqlalchemy import Collection, SpaceSpec, nearest


class Base(DeclarativeBase):
    pass


class Brand(Base):
    __tablename__ = "brands"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))


class Product(Base):
    __tablename__ = "products"
    id: Mapped[int] = mapped_column(primary_key=True)
    brand_id: Mapped[int] = mapped_column(ForeignKey("brands.id"))
    price: Mapped[int]
    caption: Mapped[str | None]

    mmr = Collection(
        text_columns=["caption"],
        spaces=[
            SpaceSpec("caption_text", "mmr-test", "caption"),  # filled by `mmr worker`
            SpaceSpec("features", "external", dimensions=3),  # filled by the application
        ],
    )


# MMR_DATABASE_URL when set, else the embedded server (started on demand)
url = mmr.db.resolve_url().replace("postgresql://", "postgresql+psycopg://", 1)
engine = create_engine(url)
Base.metadata.create_all(engine)  # creates the tables, then registers the collection

with Session(engine) as session:
    session.add_all([Brand(id=1, name="acme"), Brand(id=2, name="globex")])
    session.add_all(
        Product(id=i, brand_id=1 + i % 2, price=10 * i, caption=f"product {i}") for i in range(1, 7)
    )
    session.commit()

with mmr.Client() as client:
    vectors = [np.array([1.0, i / 10, 0.0]) for i in range(1, 7)]
    client.collection("products").put_embeddings("features", list(range(1, 7)), vectors)

with Session(engine) as session:
    query = [1.0, 0.3, 0.0]
    # an ordinary Select: add where(), joins, offset(), options() as usual
    stmt = (
        nearest(Product, "features", query, k=2)
        .join(Brand, Brand.id == Product.brand_id)
        .where(Brand.name == "globex", Product.price < 60)
    )
    for product, score in session.execute(stmt):
        print(product.id, product.caption, round(score, 4))
    ids = [p.id for p, _ in session.execute(stmt)]
    assert ids == [3, 5], ids

    # page 2 of the unfiltered ranking
    page2 = session.execute(nearest(Product, "features", query, k=2).offset(2)).all()
    assert [p.id for p, _ in page2] == [2, 5]

    # a row's current embeddings, one attribute per space (lazy or eager, like any relationship)
    p = session.scalars(
        select(Product).options(selectinload(Product.embeddings)).where(Product.id == 3)
    ).one()
    print(p.embeddings.features)
    assert p.embeddings.caption_text is None  # the worker has not embedded it yet
