"""A sample application upgrades and downgrades through pg_mmretrieval's Alembic operations."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata, produce_migrations, render_python_code
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.operations import Operations
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

import pg_mmretrieval.alembic as mmr_alembic
from pg_mmretrieval import install
from pg_mmretrieval.spec import SpaceSpec
from pg_mmretrieval.sqlalchemy import Collection
from tests.alembic_app.models import Base

APP = Path(__file__).parent / "alembic_app"


@pytest.fixture(scope="module")
def engine(empty_db_url: str) -> Iterator[sa.Engine]:
    eng = sa.create_engine(install._sa_url(empty_db_url), poolclass=sa.pool.NullPool)
    yield eng
    eng.dispose()


def _run(engine: sa.Engine, fn: Any, revision: str) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(APP))
    with engine.begin() as connection:
        cfg.attributes["connection"] = connection
        fn(cfg, revision)


def _spaces(engine: sa.Engine) -> list[tuple[str, int, bool]]:
    with engine.connect() as c:
        return [
            (r[0], r[1], r[2])
            for r in c.exec_driver_sql(
                "SELECT space, version, active FROM mmr.spaces ORDER BY space, version"
            )
        ]


def _app_revision(engine: sa.Engine) -> str | None:
    with engine.connect() as c:
        return MigrationContext.configure(c).get_current_revision()


def test_upgrade_and_downgrade_through_operations(engine: sa.Engine) -> None:
    _run(engine, command.upgrade, "a001")
    with engine.connect() as c:
        assert install._current(c) == install.head_revision()
        # the two version tables stay apart
        assert c.exec_driver_sql("SELECT version_num FROM public.alembic_version").scalar() == (
            "a001"
        )
    _run(engine, command.upgrade, "head")
    assert _app_revision(engine) == "a004"
    assert _spaces(engine) == [("ext", 1, True), ("txt", 1, False), ("txt", 2, True)]
    with engine.connect() as c:
        view = c.exec_driver_sql("SELECT view::text FROM mmr.collections").scalar()
        assert view == "products_mmr"

    _run(engine, command.downgrade, "a003")
    assert _spaces(engine) == [("ext", 1, True), ("txt", 1, True)]
    _run(engine, command.downgrade, "a002")
    assert _spaces(engine) == [("txt", 1, True)]
    _run(engine, command.downgrade, "a001")
    with engine.connect() as c:
        assert c.exec_driver_sql("SELECT count(*) FROM mmr.collections").scalar() == 0
        assert c.exec_driver_sql("SELECT to_regclass('products')").scalar() is None
    # up again: install_mmr is idempotent
    _run(engine, command.upgrade, "head")
    assert _spaces(engine) == [("ext", 1, True), ("txt", 1, False), ("txt", 2, True)]


def test_failed_migration_rolls_back_the_install(server_url: str) -> None:
    from tests.conftest import _with_database

    name = "e_alembic_rollback"
    with psycopg.connect(server_url, autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}"')
        c.execute(f'CREATE DATABASE "{name}"')
    eng = sa.create_engine(
        install._sa_url(_with_database(server_url, name)), poolclass=sa.pool.NullPool
    )
    try:
        with pytest.raises(sa.exc.ProgrammingError), eng.begin() as connection:
            ops = Operations(MigrationContext.configure(connection))
            ops.install_mmr()
            connection.exec_driver_sql("SELECT no_such_function()")
        with eng.connect() as c:
            assert c.exec_driver_sql("SELECT to_regnamespace('mmr')").scalar() is None
    finally:
        eng.dispose()
        with psycopg.connect(server_url, autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_autogenerate_leaves_mmr_objects_alone(engine: sa.Engine) -> None:
    _run(engine, command.upgrade, "head")
    opts: dict[str, Any] = {"include_schemas": True}
    with engine.connect() as c:
        with warnings.catch_warnings():
            # reflecting mmr's catalog (regclass/regtype columns) is what the filter avoids
            warnings.simplefilter("ignore", sa.exc.SAWarning)
            raw = compare_metadata(MigrationContext.configure(c, opts=opts), Base.metadata)
        filtered = compare_metadata(
            MigrationContext.configure(
                c,
                opts={
                    **opts,
                    "include_name": mmr_alembic.include_name,
                    "include_object": mmr_alembic.include_object,
                },
            ),
            Base.metadata,
        )
    dropped_raw = {d[1].fullname for d in raw if d[0] == "remove_table"}
    # without the filters autogenerate wants to drop the mmr catalog, queues and embeddings
    assert {"mmr._collection", "mmr._space", "mmr.alembic_version"} <= dropped_raw
    assert filtered == []


def _flat(code: str) -> str:
    # render_python_code indents the body of upgrade()/downgrade(); our ops are one line each
    return "\n".join(line.strip() for line in code.splitlines())


def test_autogenerate_diffs_declared_collections(engine: sa.Engine) -> None:
    _run(engine, command.upgrade, "head")
    md = sa.MetaData()

    class B2(DeclarativeBase):
        metadata = md

    class Product2(B2):
        __tablename__ = "products"
        id: Mapped[int] = mapped_column(primary_key=True)
        name: Mapped[str] = mapped_column(sa.String(200))
        caption: Mapped[str | None]
        image: Mapped[bytes | None] = mapped_column(sa.LargeBinary)

        # txt changes distance (a model change: a shadow version), img is new, ext is gone
        mmr = Collection(
            name="products",
            image_column="image",
            text_columns=["caption"],
            spaces=[
                SpaceSpec("txt", "mmr-test", "caption", distance="l2"),
                SpaceSpec("img", "mmr-test", "image"),
            ],
        )

    opts = {
        "include_schemas": True,
        "include_name": mmr_alembic.include_name,
        "include_object": mmr_alembic.include_object,
        "target_metadata": md,
    }
    with engine.connect() as c:
        script = produce_migrations(MigrationContext.configure(c, opts=opts), md)
    up = render_python_code(script.upgrade_ops)
    down = render_python_code(script.downgrade_ops)
    assert (
        "op.add_space('products', SpaceSpec('txt', 'mmr-test', 'caption', distance='l2'), "
        "new_version=True)" in up
    )
    assert "op.add_space('products', SpaceSpec('img', 'mmr-test', 'image'))" in up
    assert (
        "op.drop_space('products', 'ext', encoder='external', source_column=None, "
        "dimensions=8)" in up
    )
    assert "op.drop_space('products', 'txt', LATEST, encoder='mmr-test'" in down
    namespace = {"SpaceSpec": SpaceSpec, "LATEST": mmr_alembic.LATEST}
    before = _spaces(engine)
    with engine.begin() as c:
        namespace["op"] = Operations(MigrationContext.configure(c))
        exec(_flat(up), namespace)
    assert _spaces(engine) == [
        ("img", 1, True),
        ("txt", 1, False),
        ("txt", 2, True),
        ("txt", 3, False),
    ]
    with engine.begin() as c:
        namespace["op"] = Operations(MigrationContext.configure(c))
        exec(_flat(down), namespace)
    assert _spaces(engine) == before


def test_each_operation_reverses(db_url: str) -> None:
    eng = sa.create_engine(install._sa_url(db_url), poolclass=sa.pool.NullPool)
    try:
        with eng.begin() as connection:
            connection.exec_driver_sql("CREATE TABLE docs (id int PRIMARY KEY, body text)")
            ops = Operations(MigrationContext.configure(connection))
            create = mmr_alembic.CreateCollectionOp(
                mmr_alembic.operations.CollectionSpec(
                    "docs",
                    "docs",
                    text_columns=("body",),
                    spaces=(SpaceSpec("t", "mmr-test", "body"),),
                )
            )
            ops.invoke(create)
            add = mmr_alembic.AddSpaceOp("docs", SpaceSpec("e", "external", dimensions=4))
            ops.invoke(add)
            shadow = mmr_alembic.AddSpaceOp("docs", SpaceSpec("t", "mmr-test", "body"), True)
            ops.invoke(shadow)
            switch = mmr_alembic.SwitchSpaceOp("docs", "t", force=True)
            ops.invoke(switch)

            def state() -> list[tuple[str, int, bool]]:
                return [
                    tuple(r)  # type: ignore[misc]
                    for r in connection.exec_driver_sql(
                        "SELECT space, version, active FROM mmr.spaces "
                        "WHERE collection = 'docs' ORDER BY 1, 2"
                    )
                ]

            assert state() == [("e", 1, True), ("t", 1, False), ("t", 2, True)]
            ops.invoke(switch.reverse())
            assert state() == [("e", 1, True), ("t", 1, True), ("t", 2, False)]
            ops.invoke(shadow.reverse())
            assert state() == [("e", 1, True), ("t", 1, True)]
            ops.invoke(add.reverse())
            assert state() == [("t", 1, True)]
            drop_space = mmr_alembic.DropSpaceOp(
                "docs", "t", spec=SpaceSpec("t", "mmr-test", "body")
            )
            ops.invoke(drop_space)
            assert state() == []
            ops.invoke(drop_space.reverse())
            assert state() == [("t", 1, True)]
            ops.invoke(create.reverse())
            assert (
                connection.exec_driver_sql(
                    "SELECT count(*) FROM mmr.collections WHERE collection = 'docs'"
                ).scalar()
                == 0
            )
            ops.invoke(create.reverse().reverse())
            assert state() == [("t", 1, True)]
            with pytest.raises(mmr_alembic.operations.InputError, match="cannot be reversed"):
                mmr_alembic.DropCollectionOp("docs").reverse()
            with pytest.raises(mmr_alembic.operations.InputError, match="cannot be reversed"):
                mmr_alembic.DropSpaceOp("docs", "t").reverse()
    finally:
        eng.dispose()


def test_offline_mode_renders_sql(engine: sa.Engine) -> None:
    import io

    buf = io.StringIO()
    ctx = MigrationContext.configure(
        dialect_name="postgresql",
        opts={"as_sql": True, "output_buffer": buf, "literal_binds": True},
    )
    ops = Operations(ctx)
    ops.add_space("products", "ext2", "external", dimensions=8)
    ops.drop_space("products", "ext2", mmr_alembic.LATEST)
    out = buf.getvalue()
    assert "SELECT mmr.add_space('products', 'ext2', 'external', NULL, 8" in out
    assert "SELECT mmr.drop_space('products', 'ext2', (SELECT max(version)" in out


def test_create_collection_from_a_declaration(db_url: str) -> None:
    from tests.alembic_app.models import Product

    eng = sa.create_engine(install._sa_url(db_url), poolclass=sa.pool.NullPool)
    try:
        with eng.begin() as connection:
            Base.metadata.create_all(connection, tables=[Product.__table__])
            mmr_alembic_ops = Operations(MigrationContext.configure(connection))
            mmr_alembic_ops.drop_collection("products")
            mmr_alembic_ops.create_collection(**Product.mmr.op_kwargs())
            rows = connection.exec_driver_sql(
                "SELECT space, dimensions FROM mmr.spaces WHERE collection = 'products' ORDER BY 1"
            ).all()
            assert [tuple(r) for r in rows] == [("ext", 8), ("txt", 32)]
    finally:
        eng.dispose()


def test_create_all_without_the_mmr_schema_says_what_to_do(server_url: str) -> None:
    from pg_mmretrieval.errors import NotFoundError
    from tests.conftest import _with_database

    name = "e_no_mmr_schema"
    with psycopg.connect(server_url, autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}"')
        c.execute(f'CREATE DATABASE "{name}"')
    eng = sa.create_engine(
        install._sa_url(_with_database(server_url, name)), poolclass=sa.pool.NullPool
    )
    try:
        with pytest.raises(NotFoundError, match="mmr db upgrade"):
            Base.metadata.create_all(eng)
    finally:
        eng.dispose()
        with psycopg.connect(server_url, autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
