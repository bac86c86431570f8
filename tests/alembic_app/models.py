"""The sample application's models (what its migrations build)."""

from __future__ import annotations

from sqlalchemy import LargeBinary, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from pg_mmretrieval.sqlalchemy import Collection, SpaceSpec


class Base(DeclarativeBase):
    pass


class Product(Base):
    __tablename__ = "products"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    caption: Mapped[str | None]
    image: Mapped[bytes | None] = mapped_column(LargeBinary)

    mmr = Collection(
        image_column="image",
        text_columns=["caption"],
        spaces=[
            SpaceSpec("txt", "mmr-test", "caption"),
            SpaceSpec("ext", "external", dimensions=8),
        ],
    )
