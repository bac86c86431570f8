"""The asynchronous client: :class:`Client`'s API on a psycopg ``AsyncConnection``.

Encoders run in a worker thread (``asyncio.to_thread``), so encoding a query never blocks
the event loop.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any

import psycopg
from pgvector.psycopg import register_vector_async
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from .. import db, retrieval
from ..collections import stored_vectors
from ..errors import DatabaseError, InputError, NotFoundError
from ..retrieval import RerankArg
from ..search import SEARCH_BATCH_SQL, Hit, batch_hits, batch_params
from ..spec import SpaceSpec
from . import _sql
from ._query import ImageInput, QueryVector, encode_query
from ._query import query_item as query_item_of
from ._types import CollectionInfo, RowHit, SpaceInfo, SpaceStatus
from .sync import _composed_vectors, _leg_vector, _raise_failed, _timeout_message

__all__ = ["AsyncClient", "AsyncCollection", "connect_async"]

_MAX_PARAMS = 65535


@asynccontextmanager
async def _sql_errors() -> AsyncIterator[None]:
    try:
        yield
    except psycopg.Error as e:
        raise db.translate_error(e) from e


async def connect_async(
    url: str | None = None, *, autocommit: bool = True, **kwargs: Any
) -> psycopg.AsyncConnection[Any]:
    """Open a psycopg ``AsyncConnection`` with pgvector's types registered.

    Args:
        url: connection URL; defaults to ``MMR_DATABASE_URL`` or the embedded server (started
            in a thread when needed).

    Raises:
        DatabaseError: the server cannot be reached.
    """
    target = db.resolve_url(url) if url else await asyncio.to_thread(db.resolve_url)
    kwargs.setdefault("application_name", "pg_mmretrieval")
    kwargs.setdefault("connect_timeout", int(os.environ.get("MMR_CONNECT_TIMEOUT", "10")))
    try:
        conn = await psycopg.AsyncConnection.connect(target, autocommit=autocommit, **kwargs)
    except psycopg.OperationalError as e:
        raise DatabaseError(f"cannot connect to PostgreSQL: {e}".strip(), e.sqlstate) from e
    await register_vector_async(conn)
    return conn


class AsyncClient:
    """The async twin of :class:`pg_mmretrieval.Client`.

    Create it with ``await AsyncClient.connect(url)`` (or ``async with``), or wrap an open
    ``psycopg.AsyncConnection`` (in autocommit mode) with ``AsyncClient(conn)``.

    Example::

        async with await AsyncClient.connect() as client:
            photos = await client.collection("photos")
            hits = await photos.search("clip", text="a red circle", k=5)
    """

    def __init__(self, conn: psycopg.AsyncConnection[Any], *, owned: bool = False):
        self.conn = conn
        self._owned = owned

    @classmethod
    async def connect(cls, url: str | None = None) -> AsyncClient:
        """Open a connection (see :func:`connect_async`) and wrap it."""
        return cls(await connect_async(url), owned=True)

    async def close(self) -> None:
        """Close the connection (when the client opened it)."""
        if self._owned:
            await self.conn.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _fetchall(self, query: Any, params: Any = None) -> list[Any]:
        async with _sql_errors():
            cur = await self.conn.execute(query, params)
            return await cur.fetchall()

    async def _scalar(self, query: Any, params: Any = None) -> Any:
        rows = await self._fetchall(query, params)
        return rows[0][0] if rows else None

    # -- searches (statements of pg_mmretrieval.retrieval) ---------------------------------
    async def _run_search(self, stmt: retrieval.SearchStatement, rerank: RerankArg) -> list[Hit]:
        """Run a search statement; a SQL reranker runs in it, a Python one (synchronous) in a
        worker thread after the fetch, a plugin's on the contents fetched here."""
        registered = False
        if isinstance(rerank, str):
            registered = bool(await self._fetchall(retrieval._RERANKER_EXISTS_SQL, (rerank,)))
        sql_name, fn, plugin = retrieval._resolve_rerank(rerank, registered)
        client_side = fn is not None or plugin is not None
        rows = await self._fetchall(*stmt.query(sql_name, client_side))
        hits = stmt.hits(rows)
        if fn is not None:
            return stmt.top(await asyncio.to_thread(fn, stmt.info, hits))
        if plugin is not None:
            return stmt.top(await self._score_contents(plugin, stmt.info, hits))
        return hits

    async def _score_contents(
        self, plugin: retrieval.ContentScorer, query: retrieval.QueryInfo, hits: list[Hit]
    ) -> list[Hit]:
        """:func:`pg_mmretrieval.retrieval.plugin_reranker` on this connection."""
        item = retrieval._content_query(plugin, query)
        if not hits:
            return []
        found = await self._fetchall(retrieval._CONTENT_COLUMN_SQL, (query.space, query.collection))
        col, kind = retrieval._content_column_of(
            found[0] if found else None, query.collection, query.params.get("content_column")
        )
        rows = await self._fetchall(
            retrieval._ROW_CONTENTS_SQL, retrieval._row_contents_args(query, hits, col)
        )
        return await asyncio.to_thread(retrieval._score_contents, plugin, item, hits, rows, kind)

    # -- collections -----------------------------------------------------------------------
    async def collections(self) -> list[CollectionInfo]:
        """Every registered collection."""
        return await self._collections(None)

    async def _collections(self, name: str | None) -> list[CollectionInfo]:
        return [
            _sql.collection_info(r) for r in await self._fetchall(_sql.COLLECTIONS, {"name": name})
        ]

    async def collection(self, name: str) -> AsyncCollection:
        """The collection called ``name``.

        Raises:
            NotFoundError: there is none.
        """
        found = await self._collections(name)
        if not found:
            raise NotFoundError(f"collection {name!r} does not exist")
        return AsyncCollection(self, found[0])

    async def create_collection(
        self,
        name: str,
        source: str,
        *,
        image_column: str | None = None,
        text_columns: Sequence[str] | None = None,
        image_kind: str | None = None,
        view_name: str | None = None,
        create_view: bool = True,
        spaces: Iterable[SpaceSpec] = (),
    ) -> AsyncCollection:
        """Register a table as a collection (see :meth:`Client.create_collection`)."""
        async with _sql_errors(), self.conn.transaction():
            await self.conn.execute(
                "SELECT mmr.create_collection(%(name)s, %(source)s::regclass, %(image)s, "
                "%(texts)s, %(kind)s, %(view)s, %(create_view)s)",
                {
                    "name": name,
                    "source": source,
                    "image": image_column,
                    "texts": list(text_columns) if text_columns else None,
                    "kind": image_kind,
                    "view": view_name,
                    "create_view": create_view,
                },
            )
            for spec in spaces:
                await self._add_space(spec.add_space_args(name))
        return await self.collection(name)

    async def _add_space(self, args: Mapping[str, Any]) -> None:
        await self._scalar(
            "SELECT mmr.add_space(%(collection)s, %(space)s, %(encoder)s, %(source_column)s, "
            "%(dimensions)s, %(distance)s, %(storage)s, %(model_id)s, %(new_version)s, "
            "%(backfill)s, %(hnsw_m)s, %(hnsw_ef_construction)s)::text",
            dict(args),
        )

    async def drop_collection(self, name: str) -> None:
        """Drop a collection's queue, embeddings, triggers and view (never the table)."""
        await self._scalar("SELECT mmr.drop_collection(%(n)s)", {"n": name})

    async def status(self, collection: str | None = None) -> list[SpaceStatus]:
        """Per space version: rows embedded and items queued."""
        out: list[SpaceStatus] = []
        infos = await self._collections(collection)
        if collection is not None and not infos:
            raise NotFoundError(f"collection {collection!r} does not exist")
        for info in infos:
            out.extend(await AsyncCollection(self, info).status())
        return out


class AsyncCollection:
    """One collection of an :class:`AsyncClient` (see :class:`pg_mmretrieval.client.Collection`)."""

    def __init__(self, client: AsyncClient, info: CollectionInfo):
        self.client = client
        self.info = info
        self._column_types: dict[str, str] | None = None

    @property
    def name(self) -> str:
        return self.info.name

    async def spaces(self) -> list[SpaceInfo]:
        """Every version of every space of the collection."""
        rows = await self.client._fetchall(_sql.SPACES, {"collection": self.name})
        return [_sql.space_info(r) for r in rows]

    async def space(self, name: str, version: int | None = None) -> SpaceInfo:
        """The active version of space ``name`` (or the given version)."""
        spaces = await self.spaces()
        for s in spaces:
            if s.name == name and (s.version == version if version is not None else s.active):
                return s
        raise NotFoundError(
            f"space {name!r} (version {version if version is not None else 'active'}) does "
            f"not exist in collection {self.name!r}; its spaces: "
            f"{sorted({s.name for s in spaces}) or 'none'}"
        )

    async def add_space(
        self,
        space: str | SpaceSpec,
        encoder: str | None = None,
        source_column: str | None = None,
        dimensions: int | None = None,
        *,
        new_version: bool = False,
        **options: Any,
    ) -> SpaceInfo:
        """Add a space or a shadow version (see :meth:`Collection.add_space`)."""
        if isinstance(space, SpaceSpec):
            spec = space
        else:
            if encoder is None:
                raise InputError(f"add_space({space!r}): encoder is required")
            spec = SpaceSpec(space, encoder, source_column, dimensions, **options)
        await self.client._add_space(spec.add_space_args(self.name, new_version=new_version))
        versions = [s.version for s in await self.spaces() if s.name == spec.name]
        return await self.space(spec.name, max(versions))

    async def switch_space(
        self, space: str, version: int | None = None, *, force: bool = False
    ) -> None:
        """Make a shadow version active."""
        await self.client._scalar(
            "SELECT mmr.switch_space(%(c)s, %(s)s, %(v)s, %(f)s)",
            {"c": self.name, "s": space, "v": version, "f": force},
        )

    async def drop_space(self, space: str, version: int | None = None) -> None:
        """Drop one version of a space, or all of them."""
        await self.client._scalar(
            "SELECT mmr.drop_space(%(c)s, %(s)s, %(v)s)", {"c": self.name, "s": space, "v": version}
        )

    async def drop(self) -> None:
        """Drop the collection."""
        await self.client.drop_collection(self.name)

    # -- ingestion -------------------------------------------------------------------------
    async def insert(
        self,
        rows: Iterable[Mapping[str, Any]],
        *,
        wait: bool = False,
        timeout: float = 60.0,
        spaces: Sequence[str] | None = None,
        batch_size: int = 1000,
    ) -> list[Any]:
        """Insert rows; return their keys (see :meth:`Collection.insert`)."""
        batch: list[Mapping[str, Any]] = []
        keys: list[Any] = []
        for row in rows:
            batch.append(row)
            if len(batch) >= batch_size or (len(batch) + 1) * len(row) > _MAX_PARAMS:
                keys.extend(await self._insert_batch(batch))
                batch = []
        if batch:
            keys.extend(await self._insert_batch(batch))
        if wait and keys:
            await self.wait_until_searchable(keys, spaces=spaces, timeout=timeout)
        return keys

    async def _insert_batch(self, rows: Sequence[Mapping[str, Any]]) -> list[Any]:
        if self._column_types is None:
            found = await self.client._fetchall(_sql.COLUMN_TYPES, {"rel": self.info.source})
            self._column_types = {r[0]: r[1] for r in found}
        stmt, params = _sql.insert_statement(self.info, self._column_types, rows)
        return [self.info.key_of(r) for r in await self.client._fetchall(stmt, params)]

    async def put_embeddings(
        self, space: str, keys: Sequence[Any], embeddings: Sequence[QueryVector]
    ) -> int:
        """Store vectors your application computed in an external space."""
        vectors = stored_vectors(keys, embeddings)
        return int(
            await self.client._scalar(
                "SELECT mmr.put_embeddings(%(c)s, %(s)s, %(k)s::jsonb[], %(e)b::vector[])",
                {"c": self.name, "s": space, "k": [Jsonb(k) for k in keys], "e": vectors},
            )
        )

    async def pending(
        self, keys: Sequence[Any] | None = None, spaces: Sequence[str] | None = None
    ) -> int:
        """How many (row, space) pairs are not searchable yet (dead letters not counted)."""
        return (await self._progress(keys, spaces))[0]

    async def _progress(
        self, keys: Sequence[Any] | None, spaces: Sequence[str] | None
    ) -> tuple[int, int, str | None]:
        if spaces is None:
            targets = [s for s in await self.spaces() if s.active]
        else:
            targets = [await self.space(n) for n in spaces]
        with_failures = bool(await self.client._scalar(_sql.HAS_FAILED_TABLE))
        pending, failed, error = 0, 0, None
        for s in targets:
            stmt, params = _sql.pending_statement(self.info, s, keys, with_failures=with_failures)
            got = (await self.client._fetchall(stmt, params))[0]
            pending += int(got[0])
            failed += int(got[1])
            error = error or got[2]
        return pending, failed, error

    async def wait_until_searchable(
        self,
        keys: Sequence[Any] | None = None,
        *,
        spaces: Sequence[str] | None = None,
        timeout: float = 60.0,
        poll_interval: float = 0.05,
    ) -> None:
        """Return when rows ``keys`` (or all rows) are searchable (see the sync client).

        Raises:
            TimeoutError: still pending at the deadline.
        """
        deadline = time.monotonic() + timeout
        interval = poll_interval
        while True:
            left, failed, error = await self._progress(keys, spaces)
            if left == 0:
                _raise_failed(self.name, failed, error)
                return
            if time.monotonic() >= deadline:
                raise TimeoutError(_timeout_message(self.name, left, failed, timeout))
            await asyncio.sleep(min(interval, max(0.0, deadline - time.monotonic())))
            interval = min(interval * 2, 1.0)

    # -- search ----------------------------------------------------------------------------
    async def search(
        self,
        space: str,
        vector: QueryVector | None = None,
        *,
        text: str | None = None,
        image: ImageInput | None = None,
        k: int = 10,
        filter: Mapping[str, Any] | None = None,
        ef_search: int | None = None,
        max_scan_tuples: int | None = None,
        rerank: RerankArg = None,
        rerank_depth: int | None = None,
        rerank_params: Mapping[str, Any] | None = None,
        query_item: str | bytes | None = None,
    ) -> list[Hit]:
        """The ``k`` rows nearest to a vector, text or image, optionally reranked (see
        :meth:`Collection.search`)."""
        info = await self.space(space)
        q = await asyncio.to_thread(encode_query, info, vector, text, image)
        item = None
        if rerank is not None:
            item = await asyncio.to_thread(query_item_of, query_item, text, image)
        stmt = retrieval.search_statement(
            self.name,
            space,
            q,
            k,
            filter=filter,
            ef_search=ef_search,
            max_scan_tuples=max_scan_tuples,
            rerank_depth=rerank_depth,
            rerank_params=rerank_params,
            query_item=item,
        )
        return await self.client._run_search(stmt, rerank)

    async def search_batch(
        self,
        space: str,
        vectors: Sequence[QueryVector],
        *,
        k: int = 10,
        ef_search: int | None = None,
    ) -> list[list[Hit]]:
        """The ``k`` nearest rows of each query vector in one round trip
        (``mmr.search_batch``): one list of hits per vector, in order (see the sync client)."""
        qs = list(vectors)
        rows = await self.client._fetchall(
            SEARCH_BATCH_SQL, batch_params(self.name, space, qs, k, ef_search)
        )
        return batch_hits(len(qs), rows)

    async def composed_search(
        self,
        space: str,
        reference: QueryVector | None = None,
        modifier: QueryVector | None = None,
        *,
        reference_image: ImageInput | None = None,
        reference_key: Any = None,
        modifier_text: str | None = None,
        method: str = "weighted",
        k: int = 10,
        params: Mapping[str, Any] | None = None,
        filter: Mapping[str, Any] | None = None,
        ef_search: int | None = None,
        max_scan_tuples: int | None = None,
        rerank: RerankArg = None,
        rerank_depth: int | None = None,
        rerank_params: Mapping[str, Any] | None = None,
        query_item: str | bytes | None = None,
    ) -> list[Hit]:
        """Composed-query search (see :meth:`Collection.composed_search`)."""
        info = await self.space(space)
        ref, mod = await asyncio.to_thread(
            _composed_vectors, info, reference, reference_image, modifier, modifier_text
        )
        stmt = retrieval.composed_statement(
            self.name,
            space,
            ref,
            mod,
            reference_key=reference_key,
            method=method,
            k=k,
            params=params,
            filter=filter,
            ef_search=ef_search,
            max_scan_tuples=max_scan_tuples,
            rerank_depth=rerank_depth,
            rerank_params=rerank_params,
            query_item=query_item,
        )
        return await self.client._run_search(stmt, rerank)

    async def hybrid_search(
        self,
        query_text: str | None,
        legs: Sequence[tuple[str, QueryVector | str]] = (),
        *,
        k: int = 10,
        fusion: str = "rrf",
        weights: Sequence[float] | None = None,
        params: Mapping[str, Any] | None = None,
        filter: Mapping[str, Any] | None = None,
        ef_search: int | None = None,
        max_scan_tuples: int | None = None,
        rerank: RerankArg = None,
        rerank_depth: int | None = None,
        rerank_params: Mapping[str, Any] | None = None,
    ) -> list[Hit]:
        """Lexical + vector search fused (see :meth:`Collection.hybrid_search`)."""
        encoded = []
        for space, q in legs:
            info = await self.space(space)
            encoded.append((space, await asyncio.to_thread(_leg_vector, info, q)))
        stmt = retrieval.hybrid_statement(
            self.name,
            query_text,
            encoded,
            k=k,
            fusion=fusion,
            weights=weights,
            params=params,
            filter=filter,
            ef_search=ef_search,
            max_scan_tuples=max_scan_tuples,
            rerank_depth=rerank_depth,
            rerank_params=rerank_params,
        )
        return await self.client._run_search(stmt, rerank)

    async def fetch(self, keys: Sequence[Any]) -> list[dict[str, Any] | None]:
        """The table's rows with ``keys``, in the order of ``keys`` (None where none is)."""
        if not keys:
            return []
        stmt, params = _sql.fetch_statement(self.info, keys)
        async with _sql_errors(), self.client.conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(stmt, params)
            found = {_sql.key_of_row(self.info, r): r for r in await cur.fetchall()}
        return [found.get(_sql.hashable_key(self.info, k)) for k in keys]

    async def search_rows(
        self, space: str, vector: QueryVector | None = None, **kw: Any
    ) -> list[RowHit]:
        """:meth:`search`, with each hit's row of the table."""
        hits = await self.search(space, vector, **kw)
        rows = await self.fetch([h.key for h in hits])
        return [RowHit(h.key, h.score, r) for h, r in zip(hits, rows, strict=True) if r]

    async def status(self) -> list[SpaceStatus]:
        """Per space version: rows embedded and items queued."""
        out = []
        for s in await self.spaces():
            stmt, params = _sql.status_statement(self.info, s)
            row = (await self.client._fetchall(stmt, params))[0]
            out.append(
                SpaceStatus(self.name, s.name, s.version, s.active, s.encoder, row[0], row[1])
            )
        return out
