# generated from aio.py by scripts/async_to_sync.py; do not edit
"""The synchronous client: collections, ingestion, search and status over one connection.

>>> import pg_mmretrieval as mmr
>>> with mmr.Client() as client:                        # doctest: +SKIP
...     products = client.collection("products")
...     hits = products.search("clip_text", text="a red circle", k=5)

Over ~400 lines: generated from ``aio.py`` (one client, see there).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from types import TracebackType
from typing import Any

import psycopg
from psycopg.rows import dict_row

from .. import calls, db
from ..bases import QueryInfo, Reranker
from ..collections import put_embeddings_args, stored_vectors
from ..errors import InputError, NotFoundError
from ..search import SEARCH_BATCH_SQL, Hit, batch_hits, batch_params, statements
from ..search import rerank as rr
from ..search.composed import composed_statement
from ..search.hybrid import hybrid_statement
from ..search.rerank import RerankArg
from ..spec import SpaceSpec
from . import _sql
from ._common import (
    composed_vectors,
    guarded,
    leg_vector,
    raise_failed,
    timeout_message,
)
from ._query import ImageInput, QueryVector, encode_query
from ._query import query_item as query_item_of
from ._types import CollectionInfo, RowHit, SpaceInfo, SpaceStatus

__all__ = ["Client", "Collection"]

_MAX_PARAMS = 65535


@contextmanager
def _sql_errors() -> Iterator[None]:
    try:
        yield
    except psycopg.Error as e:
        raise db.translate_error(e) from e


class Client:
    """A connection to a database with the mmr schema, and the operations on it.

    Args:
        url: connection URL; defaults to ``MMR_DATABASE_URL`` or the embedded server.
        conn: use this psycopg connection instead of opening one (the client does not close
            it). It should be in autocommit mode: each operation commits on its own.

    Example::

        with Client() as client:
            photos = client.create_collection("photos", "photos", image_column="jpeg")
            photos.add_space("clip", encoder="mmr-test", source_column="jpeg")
            photos.insert([{"id": 1, "jpeg": data}], wait=True)
            photos.search("clip", text="a red circle", k=5)
    """

    conn: psycopg.Connection[Any]
    #: (collection, space) -> (its active version, mmr._space.id), as searches resolved them
    _space_cache: dict[tuple[str, str], tuple[SpaceInfo, int]]

    def __init__(self, url: str | None = None, *, conn: psycopg.Connection[Any] | None = None):
        self._owned = conn is None
        self.conn = conn if conn is not None else db.connect(url, autocommit=True)
        self._space_cache = {}

    def close(self) -> None:
        """Close the connection (when the client opened it)."""
        if self._owned:
            self.conn.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _fetchall(self, query: Any, params: Any = None) -> list[Any]:
        with _sql_errors():
            cur = self.conn.execute(query, params)
            return cur.fetchall()

    def _scalar(self, query: Any, params: Any = None) -> Any:
        rows = self._fetchall(query, params)
        return rows[0][0] if rows else None

    def _call(self, call: calls.Call, args: Mapping[str, Any]) -> Any:
        """A catalog change: run it, and forget the spaces the searches resolved."""
        self._space_cache.clear()
        return self._scalar(call.psycopg(), dict(args))

    # -- searches (statements of pg_mmretrieval.search) ---------------------------------
    def _run_search(
        self,
        stmt: statements.SearchStatement,
        rerank: RerankArg,
        guard: tuple[str, Mapping[str, int]] | None = None,
    ) -> list[Hit]:
        """Run a search statement; a SQL reranker runs in it, a Python one after the fetch (in
        a worker thread in the async client), a plugin's on the contents fetched here.

        ``guard`` (collection, space name -> id): the statement returns nothing unless those
        spaces' active versions are still the ones the query was encoded for."""
        registered = False
        if isinstance(rerank, str):
            registered = bool(self._fetchall(rr.RERANKER_EXISTS_SQL, (rerank,)))
        sql_name, reranker = rr.resolve_rerank(rerank, registered)
        query, params = stmt.query(sql_name, reranker is not None)
        if guard is not None:
            query, params = guarded(query, params, guard[0], guard[1])
        hits = stmt.hits(self._fetchall(query, params))
        if reranker is None:
            return hits
        if reranker.scores_content:
            return stmt.top(self._score_contents(reranker, stmt.info, hits))
        return stmt.top(reranker.rerank(stmt.info, hits))

    def _score_contents(self, reranker: Reranker, query: QueryInfo, hits: list[Hit]) -> list[Hit]:
        """:func:`pg_mmretrieval.search.rerank.plugin_reranker` on this connection."""
        item = rr.content_query(reranker, query)
        if not hits:
            return []
        found = self._fetchall(rr.CONTENT_COLUMN_SQL, (query.space, query.collection))
        col, kind = rr.content_column_of(
            found[0] if found else None, query.collection, query.params.get("content_column")
        )
        rows = self._fetchall(rr.ROW_CONTENTS_SQL, rr.row_contents_args(query, hits, col))
        return rr.score_contents(reranker, item, hits, rows, kind)

    # -- collections -----------------------------------------------------------------------
    @property
    def collections(self) -> list[CollectionInfo]:
        """Every registered collection."""
        return self._collections(None)

    def _collections(self, name: str | None) -> list[CollectionInfo]:
        return [_sql.collection_info(r) for r in self._fetchall(_sql.COLLECTIONS, {"name": name})]

    def collection(self, name: str) -> Collection:
        """The collection called ``name``.

        Raises:
            NotFoundError: there is none.
        """
        found = self._collections(name)
        if not found:
            raise NotFoundError(
                f"collection {name!r} does not exist; create it with "
                "client.create_collection(name, table, ...)"
            )
        return Collection(self, found[0])

    def create_collection(
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
    ) -> Collection:
        """Register table ``source`` as a collection, with optional spaces, in one
        transaction; see :func:`pg_mmretrieval.create_collection` for the arguments."""
        with _sql_errors(), self.conn.transaction():
            self._call(
                calls.CREATE_COLLECTION,
                {
                    "name": name,
                    "source": source,
                    "image_column": image_column,
                    "text_columns": list(text_columns) if text_columns else None,
                    "image_kind": image_kind,
                    "view_name": view_name,
                    "create_view": create_view,
                },
            )
            for spec in spaces:
                self._call(calls.ADD_SPACE, spec.add_space_args(name))
        return self.collection(name)

    def drop_collection(self, name: str) -> None:
        """Drop a collection's queue, embeddings, triggers and view (never the table)."""
        self._call(calls.DROP_COLLECTION, {"name": name})

    def status(self, collection: str | None = None) -> list[SpaceStatus]:
        """Per space version: rows embedded and items queued (all collections, or one)."""
        out: list[SpaceStatus] = []
        infos = self._collections(collection)
        if collection is not None and not infos:
            raise NotFoundError(f"collection {collection!r} does not exist")
        for info in infos:
            out.extend(Collection(self, info).status())
        return out


class Collection:
    """One collection of a :class:`Client`: spaces, ingestion, search."""

    def __init__(self, client: Client, info: CollectionInfo):
        self.client = client
        self.info = info
        self._column_types: dict[str, str] | None = None

    @property
    def name(self) -> str:
        return self.info.name

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} on {self.info.source}>"

    @property
    def spaces(self) -> list[SpaceInfo]:
        """Every version of every space of the collection."""
        rows = self.client._fetchall(_sql.SPACES, {"collection": self.name})
        return [_sql.space_info(r) for r in rows]

    def space(self, name: str, version: int | None = None) -> SpaceInfo:
        """The active version of space ``name`` (or the given version).

        Raises:
            NotFoundError: no such space or version.
        """
        spaces = self.spaces
        for s in spaces:
            if s.name == name and (s.version == version if version is not None else s.active):
                return s
        raise NotFoundError(
            f"space {name!r} (version {version if version is not None else 'active'}) does "
            f"not exist in collection {self.name!r}; its spaces: "
            f"{sorted({s.name for s in spaces}) or 'none'}"
        )

    def _search_space(self, name: str, fresh: bool = False) -> SpaceInfo:
        """The active version of space ``name`` as searches use it: resolved once per client
        (the cache entry is checked by the search it serves; see :meth:`_stale`)."""
        key = (self.name, name)
        cache = self.client._space_cache
        if fresh or key not in cache:
            cache.pop(key, None)
            rows = self.client._fetchall(
                _sql.ACTIVE_SPACE, {"collection": self.name, "space": name}
            )
            if not rows:
                self.space(name)  # raises NotFoundError naming the spaces there are
                raise NotFoundError(f"space {name!r} does not exist in collection {self.name!r}")
            cache[key] = (_sql.space_info(rows[0][:-1]), int(rows[0][-1]))
        return cache[key][0]

    def _run_cached(
        self, stmt: statements.SearchStatement, rerank: RerankArg, names: list[str], retry: bool
    ) -> list[Hit] | None:
        """Run a search whose query was encoded with the cached spaces ``names`` (none: the
        query is the caller's vectors, nothing to guard); None when no row came back because
        one of them changed: encode the query again and retry (once: ``retry`` is the retry).
        """
        cache = self.client._space_cache
        guard = (self.name, {n: cache[(self.name, n)][1] for n in names}) if names else None
        hits = self.client._run_search(stmt, rerank, guard)
        if hits or not names or retry or not self._stale(names):
            return hits
        return None

    def _stale(self, names: Iterable[str]) -> bool:
        """Whether a space a guarded search used has another active version than the cached
        one (the cache is refreshed); raises NotFoundError when one no longer exists."""
        changed = False
        for n in set(names):
            before = self.client._space_cache.get((self.name, n))
            self._search_space(n, fresh=True)
            after = self.client._space_cache[(self.name, n)]
            changed = changed or before is None or before[1] != after[1]
        return changed

    # -- spaces ----------------------------------------------------------------------------
    def add_space(
        self,
        space: str | SpaceSpec,
        encoder: str | None = None,
        source_column: str | None = None,
        dimensions: int | None = None,
        *,
        new_version: bool = False,
        **options: Any,
    ) -> SpaceInfo:
        """Add a space (or a shadow version of one with ``new_version=True``).

        ``space`` is a name (then ``encoder`` is required) or a :class:`SpaceSpec`.
        ``dimensions`` defaults to the registered encoder's. Other options (``distance``,
        ``storage``, ``model_id``, ``backfill``, ``hnsw_m``, ``hnsw_ef_construction``) are
        those of ``mmr.add_space``.
        """
        if isinstance(space, SpaceSpec):
            spec = space
        else:
            if encoder is None:
                raise InputError(f"add_space({space!r}): encoder is required")
            spec = SpaceSpec(space, encoder, source_column, dimensions, **options)
        self.client._call(calls.ADD_SPACE, spec.add_space_args(self.name, new_version=new_version))
        versions = [s.version for s in self.spaces if s.name == spec.name]
        return self.space(spec.name, max(versions))

    def switch_space(self, space: str, version: int | None = None, *, force: bool = False) -> None:
        """Make a shadow version active (the newest one unless ``version`` is given)."""
        self.client._call(
            calls.SWITCH_SPACE,
            {"collection": self.name, "space": space, "version": version, "force": force},
        )

    def drop_space(self, space: str, version: int | None = None) -> None:
        """Drop one version of a space, or every version (``version=None``)."""
        self.client._call(
            calls.DROP_SPACE, {"collection": self.name, "space": space, "version": version}
        )

    def drop(self) -> None:
        """Drop the collection (see :meth:`drop_collection` of the client)."""
        self.client.drop_collection(self.name)

    # -- ingestion -------------------------------------------------------------------------
    def insert(
        self,
        rows: Iterable[Mapping[str, Any]],
        *,
        wait: bool = False,
        timeout: float = 60.0,
        spaces: Sequence[str] | None = None,
        batch_size: int = 1000,
    ) -> list[Any]:
        """Insert rows into the collection's table; return their keys.

        Each batch is one ``INSERT`` statement, so the collection's trigger queues it at once.
        With ``wait=True``, return only when every inserted row is searchable in the active
        spaces (or ``spaces``): see :meth:`wait_until_searchable`.

        Raises:
            InputError: rows of different shapes, unknown columns, or a constraint violation.
            TimeoutError: ``wait`` and the rows were not all searchable within ``timeout``.
        """
        batch: list[Mapping[str, Any]] = []
        keys: list[Any] = []
        for row in rows:
            batch.append(row)
            if len(batch) >= batch_size or (len(batch) + 1) * len(row) > _MAX_PARAMS:
                keys.extend(self._insert_batch(batch))
                batch = []
        if batch:
            keys.extend(self._insert_batch(batch))
        if wait and keys:
            self.wait_until_searchable(keys, spaces=spaces, timeout=timeout)
        return keys

    def _insert_batch(self, rows: Sequence[Mapping[str, Any]]) -> list[Any]:
        if self._column_types is None:
            found = self.client._fetchall(_sql.COLUMN_TYPES, {"rel": self.info.source})
            self._column_types = {r[0]: r[1] for r in found}
        stmt, params = _sql.insert_statement(self.info, self._column_types, rows)
        return [self.info.key_of(r) for r in self.client._fetchall(stmt, params)]

    def put_embeddings(
        self, space: str, keys: Sequence[Any], embeddings: Sequence[QueryVector]
    ) -> int:
        """Store vectors your application computed in an external space."""
        vectors = stored_vectors(keys, embeddings)
        return int(
            self.client._scalar(
                calls.PUT_EMBEDDINGS.psycopg(),
                put_embeddings_args(self.name, space, keys, vectors),
            )
        )

    def pending(
        self, keys: Sequence[Any] | None = None, spaces: Sequence[str] | None = None
    ) -> int:
        """How many (row, space) pairs are not searchable yet (rows ``keys``, or all rows);
        dead-lettered rows (see ``mmr.status``) are not counted."""
        return self._progress(keys, spaces)[0]

    def _progress(
        self, keys: Sequence[Any] | None, spaces: Sequence[str] | None
    ) -> tuple[int, int, str | None]:
        if spaces is None:
            targets = [s for s in self.spaces if s.active]
        else:
            targets = [self.space(n) for n in spaces]
        with_failures = bool(self.client._scalar(_sql.HAS_FAILED_TABLE))
        pending, failed, error = 0, 0, None
        for s in targets:
            stmt, params = _sql.pending_statement(self.info, s, keys, with_failures=with_failures)
            got = self.client._fetchall(stmt, params)[0]
            pending += int(got[0])
            failed += int(got[1])
            error = error or got[2]
        return pending, failed, error

    def wait_until_searchable(
        self,
        keys: Sequence[Any] | None = None,
        *,
        spaces: Sequence[str] | None = None,
        timeout: float = 60.0,
        poll_interval: float = 0.05,
    ) -> None:
        """Return when rows ``keys`` (or all rows) have current embeddings in the spaces.

        Polls the embedding and queue tables until the deadline; a worker (``mmr worker``)
        fills encoder spaces, the application fills external spaces (``put_embeddings``).

        Raises:
            TimeoutError: still pending at the deadline; the message says how many.
            InputError: the worker gave up on some of the rows (dead letters): the message
                shows one error; ``mmr.retry_failed(collection)`` queues them again.
        """
        deadline = time.monotonic() + timeout
        interval = poll_interval
        while True:
            left, failed, error = self._progress(keys, spaces)
            if left == 0:
                raise_failed(self.name, failed, error)
                return
            if time.monotonic() >= deadline:
                raise TimeoutError(timeout_message(self.name, left, failed, timeout))
            time.sleep(min(interval, max(0.0, deadline - time.monotonic())))
            interval = min(interval * 2, 1.0)

    # -- search ----------------------------------------------------------------------------
    # A search resolves its space from the client's cache; when the query was encoded with the
    # cached space's encoder, the statement carries a guard (no row unless that version is
    # still active) and an empty result re-resolves the space and runs once more if it changed.
    def search(
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
        """The ``k`` rows nearest to a query vector, text or image, best first.

        Args:
            space: the space to search (its active version).
            vector: a query vector of the space's dimension; or
            text: a text, encoded with the space's encoder; or
            image: an image (bytes of the file, or its path), encoded likewise.
            filter: conditions on the table's columns, e.g. ``{"price": {"<": 50}}``.
            rerank: a reranker: a SQL one's name (``mmr.rerankers``, applied in the database),
                a Python one's name or a plugin's, or a callable ``(QueryInfo, hits) -> hits``
                (applied here to ``rerank_depth`` candidates, default ``max(k, 100)``).
            rerank_params: the reranker's parameters.
            query_item: the query's text or image bytes for rerankers that score content;
                defaults to ``text`` or ``image``.

        Raises:
            InputError: bad query or arguments.  NotFoundError: no such space.
        """
        item = None
        if rerank is not None:
            item = query_item_of(query_item, text, image)
        encoded = vector is None
        for retry in (False, True):
            info = self._search_space(space)
            q = encode_query(info, vector, text, image)
            stmt = statements.search_statement(
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
            hits = self._run_cached(stmt, rerank, [space] if encoded else [], retry)
            if hits is not None:
                return hits
        raise AssertionError("unreachable")

    def search_batch(
        self,
        space: str,
        vectors: Sequence[QueryVector],
        *,
        k: int = 10,
        ef_search: int | None = None,
    ) -> list[list[Hit]]:
        """The ``k`` nearest rows of each query vector, all in one round trip
        (``mmr.search_batch``, at most 1000 vectors): one list of hits per vector, in order.

        Example: ``coll.search_batch("image", [v1, v2], k=5)[1]`` are the hits of ``v2``.

        Raises:
            InputError: bad vectors or arguments.  NotFoundError: no such space.
        """
        qs = list(vectors)
        rows = self.client._fetchall(
            SEARCH_BATCH_SQL, batch_params(self.name, space, qs, k, ef_search)
        )
        return batch_hits(len(qs), rows)

    def composed_search(
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
        """Composed-query search (``mmr.composed_search``): a reference image modified by a
        text ("this dress, but red").

        The reference is a vector, an image (encoded with the space's encoder) or a stored row
        (``reference_key``, excluded from the results unless
        ``params={"exclude_reference": False}``); the modifier a vector or a text (encoded
        likewise).  The other arguments are those of
        :func:`pg_mmretrieval.search.composed_search` (``method``, ``params``, rerankers as
        in :meth:`search`).
        """
        encoded = reference_image is not None or modifier_text is not None
        for retry in (False, True):
            info = self._search_space(space)
            ref, mod = composed_vectors(info, reference, reference_image, modifier, modifier_text)
            stmt = composed_statement(
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
            hits = self._run_cached(stmt, rerank, [space] if encoded else [], retry)
            if hits is not None:
                return hits
        raise AssertionError("unreachable")

    def hybrid_search(
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
        """Lexical + vector search fused (``mmr.hybrid_search``); a leg's query may be a
        vector or a text (encoded with that space's encoder).  The other arguments are those of
        :func:`pg_mmretrieval.search.hybrid_search` (``fusion``, ``weights``, ``params``;
        rerankers as in :meth:`search`, a content reranker scoring ``query_text``)."""
        texts = [space for space, q in legs if isinstance(q, str)]
        for retry in (False, True):
            encoded = []
            for space, q in legs:
                info = self._search_space(space)
                encoded.append((space, leg_vector(info, q)))
            stmt = hybrid_statement(
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
            hits = self._run_cached(stmt, rerank, texts, retry)
            if hits is not None:
                return hits
        raise AssertionError("unreachable")

    def fetch(self, keys: Sequence[Any]) -> list[dict[str, Any] | None]:
        """The table's rows with ``keys``, in the order of ``keys`` (None where none is)."""
        if not keys:
            return []
        stmt, params = _sql.fetch_statement(self.info, keys)
        with _sql_errors(), self.client.conn.cursor(row_factory=dict_row) as cur:
            cur.execute(stmt, params)
            found = {_sql.key_of_row(self.info, r): r for r in cur.fetchall()}
        return [found.get(_sql.hashable_key(self.info, k)) for k in keys]

    def search_rows(self, space: str, vector: QueryVector | None = None, **kw: Any) -> list[RowHit]:
        """:meth:`search`, with each hit's row of the table (``RowHit(key, score, row)``)."""
        hits = self.search(space, vector, **kw)
        rows = self.fetch([h.key for h in hits])
        # a row deleted between the two statements is left out
        return [RowHit(h.key, h.score, r) for h, r in zip(hits, rows, strict=True) if r]

    # -- status ----------------------------------------------------------------------------
    def status(self) -> list[SpaceStatus]:
        """Per space version: rows embedded and items queued."""
        out = []
        for s in self.spaces:
            stmt, params = _sql.status_statement(self.info, s)
            row = self.client._fetchall(stmt, params)[0]
            out.append(
                SpaceStatus(self.name, s.name, s.version, s.active, s.encoder, row[0], row[1])
            )
        return out
