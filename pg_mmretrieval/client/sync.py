"""The synchronous client: collections, ingestion, search and status over one connection.

>>> import pg_mmretrieval as mmr
>>> with mmr.Client() as client:                        # doctest: +SKIP
...     products = client.collection("products")
...     hits = products.search("clip_text", text="a red circle", k=5)
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg.rows import dict_row

from .. import collections as _c
from .. import db, retrieval
from ..collections import sql_errors
from ..errors import InputError, NotFoundError
from ..retrieval import RerankArg
from ..search import Hit, search, search_batch
from ..spec import SpaceSpec
from . import _sql
from ._query import ImageInput, QueryVector, encode_query
from ._query import query_item as query_item_of
from ._types import CollectionInfo, RowHit, SpaceInfo, SpaceStatus

__all__ = ["Client", "Collection"]

_MAX_PARAMS = 65535


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

    def __init__(self, url: str | None = None, *, conn: psycopg.Connection[Any] | None = None):
        self._owned = conn is None
        self.conn: psycopg.Connection[Any] = (
            conn if conn is not None else db.connect(url, autocommit=True)
        )

    # -- lifecycle -------------------------------------------------------------------------
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

    # -- collections -----------------------------------------------------------------------
    @property
    def collections(self) -> list[CollectionInfo]:
        """Every registered collection."""
        return self._collections(None)

    def _collections(self, name: str | None) -> list[CollectionInfo]:
        with sql_errors():
            rows = self.conn.execute(_sql.COLLECTIONS, {"name": name}).fetchall()
        return [_sql.collection_info(r) for r in rows]

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
        """Register table ``source`` as a collection, with optional spaces; see
        :func:`pg_mmretrieval.create_collection` for the arguments."""
        with self.conn.transaction():
            _c.create_collection(
                self.conn,
                name,
                source,
                image_column=image_column,
                text_columns=text_columns,
                image_kind=image_kind,
                view_name=view_name,
                create_view=create_view,
            )
            for spec in spaces:
                _c.add_space(self.conn, **spec.add_space_args(name))
        return self.collection(name)

    def drop_collection(self, name: str) -> None:
        """Drop a collection's queue, embeddings, triggers and view (never the table)."""
        _c.drop_collection(self.conn, name)

    def status(self, collection: str | None = None) -> list[SpaceStatus]:
        """Per space version: rows embedded and items queued (all collections, or one)."""
        out: list[SpaceStatus] = []
        for info in self._collections(collection):
            out.extend(Collection(self, info).status())
        if collection is not None and not out and not self._collections(collection):
            raise NotFoundError(f"collection {collection!r} does not exist")
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
        return f"<Collection {self.name!r} on {self.info.source}>"

    @property
    def spaces(self) -> list[SpaceInfo]:
        """Every version of every space of the collection."""
        with sql_errors():
            rows = self.client.conn.execute(_sql.SPACES, {"collection": self.name}).fetchall()
        return [_sql.space_info(r) for r in rows]

    def space(self, name: str, version: int | None = None) -> SpaceInfo:
        """The active version of space ``name`` (or the given version).

        Raises:
            NotFoundError: no such space or version.
        """
        for s in self.spaces:
            if s.name == name and (s.version == version if version is not None else s.active):
                return s
        known = sorted({s.name for s in self.spaces})
        raise NotFoundError(
            f"space {name!r} (version {version if version is not None else 'active'}) does "
            f"not exist in collection {self.name!r}; its spaces: {known or 'none'}"
        )

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
        _c.add_space(self.client.conn, **spec.add_space_args(self.name, new_version=new_version))
        return self.space(spec.name, max(s.version for s in self.spaces if s.name == spec.name))

    def switch_space(self, space: str, version: int | None = None, *, force: bool = False) -> None:
        """Make a shadow version active (the newest one unless ``version`` is given)."""
        _c.switch_space(self.client.conn, self.name, space, version, force=force)

    def drop_space(self, space: str, version: int | None = None) -> None:
        """Drop one version of a space, or every version (``version=None``)."""
        _c.drop_space(self.client.conn, self.name, space, version)

    def drop(self) -> None:
        """Drop the collection (see :meth:`Client.drop_collection`)."""
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
            with sql_errors():
                result = self.client.conn.execute(_sql.COLUMN_TYPES, {"rel": self.info.source})
                self._column_types = {r[0]: r[1] for r in result.fetchall()}
        stmt, params = _sql.insert_statement(self.info, self._column_types, rows)
        with sql_errors():
            out = self.client.conn.execute(stmt, params).fetchall()
        return [self.info.key_of(r) for r in out]

    def put_embeddings(
        self, space: str, keys: Sequence[Any], embeddings: Sequence[QueryVector]
    ) -> int:
        """Store vectors your application computed in an external space."""
        return _c.put_embeddings(
            self.client.conn, self.name, space, keys, list(map(list, embeddings))
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
        conn = self.client.conn
        with sql_errors():
            row = conn.execute(_sql.HAS_FAILED_TABLE).fetchone()
            with_failures = bool(row and row[0])
            pending, failed, error = 0, 0, None
            for s in self._wait_spaces(spaces):
                stmt, params = _sql.pending_statement(
                    self.info, s, keys, with_failures=with_failures
                )
                got = conn.execute(stmt, params).fetchone()
                assert got is not None
                pending += int(got[0])
                failed += int(got[1])
                error = error or got[2]
        return pending, failed, error

    def _wait_spaces(self, spaces: Sequence[str] | None) -> list[SpaceInfo]:
        if spaces is None:
            return [s for s in self.spaces if s.active]
        return [self.space(n) for n in spaces]

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
                _raise_failed(self.name, failed, error)
                return
            if time.monotonic() >= deadline:
                raise TimeoutError(_timeout_message(self.name, left, failed, timeout))
            time.sleep(min(interval, max(0.0, deadline - time.monotonic())))
            interval = min(interval * 2, 1.0)

    # -- search ----------------------------------------------------------------------------
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
        q = encode_query(self.space(space), vector, text, image)
        if rerank is None:
            return search(
                self.client.conn,
                self.name,
                space,
                q,
                k,
                filter=filter,
                ef_search=ef_search,
                max_scan_tuples=max_scan_tuples,
            )
        return retrieval.search(
            self.client.conn,
            self.name,
            space,
            q,
            k,
            filter=filter,
            ef_search=ef_search,
            max_scan_tuples=max_scan_tuples,
            rerank=rerank,
            rerank_depth=rerank_depth,
            rerank_params=rerank_params,
            query_item=query_item_of(query_item, text, image),
        )

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
        :func:`pg_mmretrieval.retrieval.composed_search` (``method``, ``params``, rerankers as
        in :meth:`search`).
        """
        ref, mod = _composed_vectors(
            self.space(space), reference, reference_image, modifier, modifier_text
        )
        return retrieval.composed_search(
            self.client.conn,
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
            rerank=rerank,
            rerank_depth=rerank_depth,
            rerank_params=rerank_params,
            query_item=query_item,
        )

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
        :func:`pg_mmretrieval.retrieval.hybrid_search` (``fusion``, ``weights``, ``params``;
        rerankers as in :meth:`search`, a content reranker scoring ``query_text``)."""
        encoded = [(space, _leg_vector(self.space(space), q)) for space, q in legs]
        return retrieval.hybrid_search(
            self.client.conn,
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
            rerank=rerank,
            rerank_depth=rerank_depth,
            rerank_params=rerank_params,
        )

    def fetch(self, keys: Sequence[Any]) -> list[dict[str, Any] | None]:
        """The table's rows with ``keys``, in the order of ``keys`` (None where none is)."""
        if not keys:
            return []
        stmt, params = _sql.fetch_statement(self.info, keys)
        with sql_errors(), self.client.conn.cursor(row_factory=dict_row) as cur:
            found = {_sql.key_of_row(self.info, r): r for r in cur.execute(stmt, params)}
        return [found.get(_sql.hashable_key(self.info, k)) for k in keys]

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
        return search_batch(
            self.client.conn, self.name, space, list(vectors), k, ef_search=ef_search
        )

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
            with sql_errors():
                row = self.client.conn.execute(stmt, params).fetchone()
            assert row is not None
            out.append(
                SpaceStatus(self.name, s.name, s.version, s.active, s.encoder, row[0], row[1])
            )
        return out


def _composed_vectors(
    info: SpaceInfo,
    reference: QueryVector | None,
    reference_image: ImageInput | None,
    modifier: QueryVector | None,
    modifier_text: str | None,
) -> tuple[npt.NDArray[np.float32] | None, npt.NDArray[np.float32] | None]:
    """A composed query's reference and modifier vectors (None where not given)."""
    ref = None
    if reference is not None or reference_image is not None:
        ref = encode_query(info, reference, None, reference_image)
    mod = None
    if modifier is not None or modifier_text is not None:
        mod = encode_query(info, modifier, modifier_text, None)
    return ref, mod


def _leg_vector(info: SpaceInfo, query: QueryVector | str) -> npt.NDArray[np.float32]:
    """A hybrid leg's query: a vector, or a text encoded with the space's encoder."""
    if isinstance(query, str):
        return encode_query(info, None, query, None)
    return encode_query(info, query, None, None)


def _raise_failed(collection: str, failed: int, error: str | None) -> None:
    if failed:
        raise InputError(
            f"collection {collection!r}: {failed} (row, space) pair(s) failed to embed and were "
            f"dead-lettered, e.g.: {error}. Fix the content (an UPDATE queues it again) or run "
            f"SELECT mmr.retry_failed({collection!r})."
        )


def _timeout_message(collection: str, left: int, failed: int, timeout: float) -> str:
    also = f" ({failed} more failed)" if failed else ""
    return (
        f"collection {collection!r}: {left} (row, space) pair(s) still not searchable{also} "
        f"after {timeout:g} s. Is a worker running (`mmr worker`)? External spaces are filled "
        "by put_embeddings. See client.status()."
    )
