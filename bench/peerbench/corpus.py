"""The corpus: sentences of real English text present on any Debian machine, embedded by the
project's own MiniLM encoder (``onnx_models/minilm``, built by ``make models``) and cached.

Sources, read in a fixed order: the docstrings of the Python standard library (read with
:mod:`ast`, nothing is imported), then ``/usr/share/doc/*/{copyright,changelog*,NEWS*,README*}``.
Paragraphs are split into sentences; a sentence is kept when it has 6+ words, 40-400
characters, mostly letters, and was not seen before (case-insensitive).  The list is shuffled
with a fixed seed; the last ``queries`` sentences are the held-out queries.  The set of
sentences depends on the machine's packages, so the cache key and the JSON result carry a hash
of the texts actually used.
"""

from __future__ import annotations

import ast
import gzip
import hashlib
import json
import re
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_PARA = re.compile(r"\n\s*\n")
DOC_ROOT = Path("/usr/share/doc")
MAX_FILE_BYTES = 2_000_000  # a changelog's first 2 MB


@dataclass
class Corpus:
    """Unit vectors of the documents and of the held-out queries, and where they came from."""

    docs: np.ndarray[Any, Any]  # (n, d) float32, L2-normalised
    queries: np.ndarray[Any, Any]  # (q, d)
    encoder: str
    texts_sha256: str
    embed_seconds: float  # 0 when read from the cache
    cached: bool
    sources: dict[str, int]


class _Collector:
    def __init__(self) -> None:
        self.out: list[str] = []
        self.seen: set[str] = set()

    def add(self, text: str) -> None:
        for para in _PARA.split(text):
            para = re.sub(r"\s+", " ", para).strip()
            for s in _SPLIT.split(para):
                s = s.strip()
                if not 40 <= len(s) <= 400 or len(s.split()) < 6:
                    continue
                if sum(c.isalpha() or c == " " for c in s) < 0.8 * len(s):
                    continue
                key = s.lower()
                if key not in self.seen:
                    self.seen.add(key)
                    self.out.append(s)


def _docstrings(root: Path) -> list[str]:
    skip = {"site-packages", "dist-packages", "test", "tests", "idlelib"}
    out: list[str] = []
    for path in sorted(root.rglob("*.py")):
        if skip & set(path.relative_to(root).parts):
            continue
        try:
            tree = ast.parse(path.read_bytes())
        except (SyntaxError, ValueError, OSError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                doc = ast.get_docstring(node)
                if doc:
                    out.append(doc)
    return out


def _debian_docs(root: Path) -> list[str]:
    out: list[str] = []
    for path in sorted(root.glob("*/*")):
        name = path.name
        if not (name == "copyright" or name.startswith(("changelog", "NEWS", "README"))):
            continue
        try:
            raw = path.read_bytes()
            if name.endswith(".gz"):
                raw = gzip.decompress(raw)
        except (OSError, EOFError, gzip.BadGzipFile):
            continue
        out.append(raw[:MAX_FILE_BYTES].decode("utf-8", "replace"))
    return out


def _fingerprint() -> str:
    """Cheap identity of the sources: Python's stdlib path and version, the doc directories."""
    import sys

    names = sorted(p.name for p in DOC_ROOT.iterdir()) if DOC_ROOT.is_dir() else []
    text = "|".join([sysconfig.get_paths()["stdlib"], sys.version, *names])
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def all_sentences(cache_dir: Path | None = None) -> tuple[list[str], int]:
    """Every usable sentence in source order, and how many came from Python docstrings (read
    once per machine, ~30 s, then from ``cache_dir``)."""
    cache = cache_dir / f"peers-texts-{_fingerprint()}.json" if cache_dir else None
    if cache is not None and cache.is_file():
        data = json.loads(cache.read_text())
        return list(data["texts"]), int(data["python"])
    col = _Collector()
    for doc in _docstrings(Path(sysconfig.get_paths()["stdlib"])):
        col.add(doc)
    n_py = len(col.out)
    for doc in _debian_docs(DOC_ROOT):
        col.add(doc)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps({"texts": col.out, "python": n_py}))
    return col.out, n_py


def sentences(
    total: int, seed: int = 17, cache_dir: Path | None = None
) -> tuple[list[str], dict[str, int]]:
    """``total`` distinct sentences (fewer if the machine has fewer), shuffled with ``seed``."""
    texts, n_py = all_sentences(cache_dir)
    order = np.random.default_rng(seed).permutation(len(texts))
    picked = [texts[i] for i in order[:total]]
    return picked, {
        "python docstrings": n_py,
        "debian docs": len(texts) - n_py,
        "used": len(picked),
    }


def embed(texts: list[str], encoder_name: str = "minilm") -> np.ndarray[Any, Any]:
    """The texts embedded by the project's encoder (the worker's code path: ``get_encoder``)."""
    from pg_mmretrieval.encoders import get_encoder

    enc = get_encoder(encoder_name)
    out = np.empty((len(texts), enc.dimension), dtype=np.float32)
    for i, v in enumerate(enc.embed_batch(texts)):
        out[i] = v
    return out


def load(
    n: int, queries: int, cache_dir: Path, encoder_name: str = "minilm", log: Any = print
) -> Corpus:
    """``n`` documents and ``queries`` held-out queries, embedded once and cached."""
    texts, sources = sentences(n + queries, cache_dir=cache_dir)
    if len(texts) < n + queries:
        raise SystemExit(
            f"this machine has {len(texts)} usable sentences, fewer than {n} + {queries}: "
            "pass a smaller --n"
        )
    digest = hashlib.sha256("\n".join(texts).encode()).hexdigest()
    cache = cache_dir / f"peers-{encoder_name}-{n}-{queries}-{digest[:12]}.npz"
    if cache.is_file():
        with np.load(cache) as z:
            vecs = z["vectors"]
        cached, seconds = True, 0.0
        log(f"corpus: {cache} (cached)")
    else:
        log(f"corpus: embedding {len(texts)} sentences with {encoder_name} (cached afterwards)")
        t0 = time.perf_counter()
        vecs = embed(texts, encoder_name)
        seconds = time.perf_counter() - t0
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp.npz")
        np.savez(tmp, vectors=vecs)
        tmp.rename(cache)
        (cache.with_suffix(".json")).write_text(json.dumps({"sources": sources, "n": n}))
        cached = False
    return Corpus(
        docs=vecs[:n],
        queries=vecs[n:],
        encoder=encoder_name,
        texts_sha256=digest,
        embed_seconds=seconds,
        cached=cached,
        sources=sources,
    )
