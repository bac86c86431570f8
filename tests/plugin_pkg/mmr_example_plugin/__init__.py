"""Example plugin: a bag-of-words text encoder and one implementation of every other hook."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

import click
import numpy as np

from pg_mmretrieval.encoders import Encoder, Item
from pg_mmretrieval.errors import PermanentLoadError
from pg_mmretrieval.hookspecs import hookimpl
from pg_mmretrieval.loaders import Loader, LoadLimits
from pg_mmretrieval.rerankers import Reranker

DIM = 16


class BagOfWordsEncoder(Encoder):
    """Sum of per-word pseudo-random vectors: texts sharing words are close."""

    name = "example-bow"
    dimension = DIM
    modalities = frozenset({"text"})
    model_id = "example-bow/v1"

    def _embed(self, batch: Sequence[Item]) -> np.ndarray:
        out = np.zeros((len(batch), DIM), dtype=np.float32)
        for i, text in enumerate(batch):
            for word in str(text).lower().split():
                seed = int.from_bytes(hashlib.sha256(word.encode()).digest()[:8], "little")
                out[i] += np.random.default_rng(seed).standard_normal(DIM)
        return out


class ReversedTextLoader(Loader):
    """Cells of kind ``reversed``: text stored backwards."""

    kind = "reversed"

    def load(self, cell: object, limits: LoadLimits) -> Item:
        if not isinstance(cell, str) or not cell:
            raise PermanentLoadError("a reversed cell must be non-empty text")
        return cell[::-1]


class WordOverlapReranker(Reranker):
    """Scores candidates by the number of words shared with the query."""

    name = "example-overlap"

    def score(self, query: Item, candidates: Sequence[Item]) -> list[float]:
        words = set(str(query).lower().split())
        return [float(len(words & set(str(c).lower().split()))) for c in candidates]


@hookimpl
def register_encoders(register: Callable[[Encoder], None]) -> None:
    register(BagOfWordsEncoder())


@hookimpl
def register_loaders(register: Callable[[Loader], None]) -> None:
    register(ReversedTextLoader())


@hookimpl
def register_rerankers(register: Callable[[Reranker], None]) -> None:
    register(WordOverlapReranker())


@hookimpl
def register_commands(cli: click.Group) -> None:
    @cli.command("example-hello")
    @click.argument("who")
    def hello(who: str) -> None:
        """Say hello (example plugin command)."""
        click.echo(f"hello {who} from example")


@hookimpl
def prepare_connection(conn) -> None:  # type: ignore[no-untyped-def]
    conn.execute("SELECT set_config('mmr_example.prepared', 'yes', false)")
    if not conn.autocommit:
        conn.commit()  # leave no transaction open
