"""SQLAlchemy with an async engine (psycopg async): the same nearest() statements."""

from __future__ import annotations

import asyncio

from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

import pg_mmretrieval as mmr
from pg_mmretrieval.sqlalchemy import Collection, SpaceSpec, nearest


class Base(DeclarativeBase):
    pass


class Doc(Base):
    __tablename__ = "docs"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str]

    mmr = Collection(spaces=[SpaceSpec("vec", "external", dimensions=2)])


async def main() -> None:
    url = mmr.db.resolve_url().replace("postgresql://", "postgresql+psycopg_async://")
    engine = create_async_engine(url)
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    async with AsyncSession(engine) as session:
        session.add_all([Doc(id=1, title="east"), Doc(id=2, title="north")])
        await session.commit()
    async with await mmr.AsyncClient.connect() as client:
        docs = await client.collection("docs")
        await docs.put_embeddings("vec", [1, 2], [[1.0, 0.0], [0.0, 1.0]])
    async with AsyncSession(engine) as session:
        rows = (await session.execute(nearest(Doc, "vec", [0.1, 0.9], k=1))).all()
        print([(d.title, round(s, 3)) for d, s in rows])
        assert rows[0][0].title == "north"
    await engine.dispose()


asyncio.run(main())
