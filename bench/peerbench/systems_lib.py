"""The peers users would pick instead, each optional (``pip install -e '.[bench]'``); a missing
package makes the system skip with the reason.  Every graph index uses m 16 and
ef_construction 64 (pgvector's defaults) where the library lets one set them, cosine distance,
and answers one query per call, as the SQL systems do.
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np

from .base import EF_CONSTRUCTION, Array, M, Skip, System, dir_bytes


def _need(module: str, package: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise Skip(f"{package} is not installed (pip install -e '.[bench]'): {e}") from e


class Faiss(System):
    name = "faiss IndexHNSWFlat"
    kind = "in-process"

    @classmethod
    def check(cls) -> None:
        _need("faiss", "faiss-cpu")

    def build(self, vectors: Array, cats: Array) -> None:
        faiss = _need("faiss", "faiss-cpu")
        self.faiss = faiss
        self.index = faiss.IndexHNSWFlat(vectors.shape[1], M, faiss.METRIC_INNER_PRODUCT)
        self.index.hnsw.efConstruction = EF_CONSTRUCTION
        self.index.add(np.ascontiguousarray(vectors, dtype=np.float32))
        self.settings = {"m": M, "ef_construction": EF_CONSTRUCTION, "metric": "inner product"}
        # one selector per category, kept alive with its bitmap (faiss holds a raw pointer)
        self._bitmaps: dict[int, Any] = {}
        self.cats = cats

    def _selector(self, cat: int) -> Any:
        if cat not in self._bitmaps:
            bits = np.packbits(self.cats == cat, bitorder="little")
            self._bitmaps[cat] = (
                bits,
                self.faiss.IDSelectorBitmap(len(self.cats), self.faiss.swig_ptr(bits)),
            )
        return self._bitmaps[cat][1]

    def _search(self, q: Array, k: int, params: Any) -> list[int]:
        _, ids = self.index.search(q[None, :], k, params=params)
        return [int(i) for i in ids[0] if i >= 0]

    def search(self, q: Array, k: int, knob: int | None) -> list[int]:
        return self._search(q, k, self.faiss.SearchParametersHNSW(efSearch=int(knob or 16)))

    def search_filtered(self, q: Array, k: int, knob: int | None, cat: int) -> list[int]:
        params = self.faiss.SearchParametersHNSW(efSearch=int(knob or 16), sel=self._selector(cat))
        return self._search(q, k, params)

    def index_bytes(self) -> int | None:
        return int(self.faiss.serialize_index(self.index).size)


class Hnswlib(System):
    name = "hnswlib"
    kind = "in-process"

    @classmethod
    def check(cls) -> None:
        _need("hnswlib", "hnswlib")

    def build(self, vectors: Array, cats: Array) -> None:
        hnswlib = _need("hnswlib", "hnswlib")
        n, dim = vectors.shape
        self.index = hnswlib.Index(space="cosine", dim=dim)
        self.index.init_index(max_elements=n, M=M, ef_construction=EF_CONSTRUCTION, random_seed=100)
        self.index.add_items(vectors, np.arange(n))
        self.settings = {"m": M, "ef_construction": EF_CONSTRUCTION, "filter": "Python callback"}
        self.cats = cats
        self._ef: int | None = None

    def _set(self, knob: int | None) -> None:
        if knob != self._ef:
            self.index.set_ef(int(knob or 10))
            self._ef = knob

    def search(self, q: Array, k: int, knob: int | None) -> list[int]:
        self._set(knob)
        labels, _ = self.index.knn_query(q, k=k, num_threads=1)
        return [int(i) for i in labels[0]]

    def search_filtered(self, q: Array, k: int, knob: int | None, cat: int) -> list[int]:
        self._set(knob)
        cats = self.cats
        try:
            labels, _ = self.index.knn_query(
                q, k=k, num_threads=1, filter=lambda label: bool(cats[label] == cat)
            )
        except RuntimeError:  # fewer than k rows reachable under the filter
            return []
        return [int(i) for i in labels[0]]

    def index_bytes(self) -> int | None:
        path = self.workdir / "hnswlib.bin"
        self.index.save_index(str(path))
        size = path.stat().st_size
        path.unlink()
        return size


class Chroma(System):
    name = "Chroma (embedded)"
    kind = "in-process"

    @classmethod
    def check(cls) -> None:
        _need("chromadb", "chromadb")

    def build(self, vectors: Array, cats: Array) -> None:
        chromadb = _need("chromadb", "chromadb")
        self.path = self.workdir / "chroma"
        self.client = chromadb.PersistentClient(path=str(self.path))
        self.col = self.client.create_collection(
            "docs",
            configuration={
                "hnsw": {"space": "cosine", "max_neighbors": M, "ef_construction": EF_CONSTRUCTION}
            },
        )
        step = min(5000, self.client.get_max_batch_size())
        for lo in range(0, len(vectors), step):
            hi = min(len(vectors), lo + step)
            self.col.add(
                ids=[str(i) for i in range(lo, hi)],
                embeddings=vectors[lo:hi],
                metadatas=[{"cat": int(c)} for c in cats[lo:hi]],
            )
        # ef_search is set with collection.modify(); Chroma may answer at full recall at every
        # value (its recall hardly changes with it on small collections)
        self.settings = {"m": M, "ef_construction": EF_CONSTRUCTION, "store": "PersistentClient"}
        self._ef: int | None = None

    def _set(self, knob: int | None) -> None:
        if knob != self._ef:
            self.col.modify(configuration={"hnsw": {"ef_search": int(knob or 100)}})
            self._ef = knob

    def _query(self, q: Array, k: int, where: dict[str, Any] | None) -> list[int]:
        res = self.col.query(query_embeddings=[q], n_results=k, where=where, include=[])
        return [int(i) for i in res["ids"][0]]

    def search(self, q: Array, k: int, knob: int | None) -> list[int]:
        self._set(knob)
        return self._query(q, k, None)

    def search_filtered(self, q: Array, k: int, knob: int | None, cat: int) -> list[int]:
        self._set(knob)
        return self._query(q, k, {"cat": cat})

    def index_bytes(self) -> int | None:
        return dir_bytes(self.path)


class Lance(System):
    name = "LanceDB IVF_HNSW_SQ"
    kind = "in-process"

    @classmethod
    def check(cls) -> None:
        _need("lancedb", "lancedb")

    def build(self, vectors: Array, cats: Array) -> None:
        lancedb = _need("lancedb", "lancedb")
        pa = _need("pyarrow", "pyarrow")
        n, dim = vectors.shape
        self.path = self.workdir / "lance"
        self.db = lancedb.connect(str(self.path))
        flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1))
        data = pa.table(
            {
                "id": pa.array(np.arange(n, dtype=np.int64)),
                "cat": pa.array(cats.astype(np.int64)),
                "vector": pa.FixedSizeListArray.from_arrays(flat, dim),
            }
        )
        self.tbl = self.db.create_table("docs", data=data)
        # LanceDB's guidance: about sqrt(n) partitions
        partitions = max(1, int(np.sqrt(n)) // 4)
        self.tbl.create_index(
            metric="cosine",
            index_type="IVF_HNSW_SQ",
            num_partitions=partitions,
            m=M,
            ef_construction=EF_CONSTRUCTION,
        )
        self.tbl.create_scalar_index("cat")
        self.settings = {"m": M, "ef_construction": EF_CONSTRUCTION, "partitions": partitions}

    def _query(self, q: Array, k: int, knob: int | None) -> Any:
        return (
            self.tbl.search(q)
            .metric("cosine")
            .limit(k)
            .ef(int(knob or 10))
            .select(["id", "_distance"])
        )

    def search(self, q: Array, k: int, knob: int | None) -> list[int]:
        return [int(i) for i in self._query(q, k, knob).to_arrow()["id"].to_pylist()]

    def search_filtered(self, q: Array, k: int, knob: int | None, cat: int) -> list[int]:
        query = self._query(q, k, knob).where(f"cat = {int(cat)}", prefilter=True)
        return [int(i) for i in query.to_arrow()["id"].to_pylist()]

    def index_bytes(self) -> int | None:
        return dir_bytes(self.path)


class Qdrant(System):
    name = "Qdrant local mode"
    kind = "in-process"
    knob = None  # local mode scans every point (exact) by design

    @classmethod
    def check(cls) -> None:
        _need("qdrant_client", "qdrant-client")

    def build(self, vectors: Array, cats: Array) -> None:
        qc = _need("qdrant_client", "qdrant-client")
        models = qc.models
        self.models = models
        self.path = self.workdir / "qdrant"
        self.client = qc.QdrantClient(path=str(self.path))
        self.client.create_collection(
            "docs",
            vectors_config=models.VectorParams(
                size=vectors.shape[1], distance=models.Distance.COSINE
            ),
        )
        step = 2000
        for lo in range(0, len(vectors), step):
            hi = min(len(vectors), lo + step)
            self.client.upload_collection(
                "docs",
                vectors=vectors[lo:hi],
                payload=[{"cat": int(c)} for c in cats[lo:hi]],
                ids=list(range(lo, hi)),
            )
        self.settings = {"index": "none (local mode is exact)"}

    def _query(self, q: Array, k: int, flt: Any) -> list[int]:
        res = self.client.query_points("docs", query=q.tolist(), limit=k, query_filter=flt)
        return [int(p.id) for p in res.points]

    def search(self, q: Array, k: int, knob: int | None) -> list[int]:
        return self._query(q, k, None)

    def search_filtered(self, q: Array, k: int, knob: int | None, cat: int) -> list[int]:
        m = self.models
        flt = m.Filter(must=[m.FieldCondition(key="cat", match=m.MatchValue(value=int(cat)))])
        return self._query(q, k, flt)

    def index_bytes(self) -> int | None:
        return dir_bytes(self.path)

    def close(self) -> None:
        self.client.close()


PEERS: dict[str, type[System]] = {
    "faiss": Faiss,
    "hnswlib": Hnswlib,
    "chroma": Chroma,
    "lancedb": Lance,
    "qdrant": Qdrant,
}
