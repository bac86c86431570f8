"""Batching helpers: fixed-size batches and length-sorted batches for padded text."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

__all__ = ["length_sorted_batches", "size_batches"]

T = TypeVar("T")


def size_batches(items: Sequence[T], max_batch: int) -> Iterator[Sequence[T]]:
    """Consecutive slices of at most ``max_batch`` items."""
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, not {max_batch}")
    for start in range(0, len(items), max_batch):
        yield items[start : start + max_batch]


def length_sorted_batches(lengths: Sequence[int], max_batch: int) -> Iterator[list[int]]:
    """Index batches of items sorted by length (longest first), so padding stays small.

    The caller runs each batch and writes results back by index, which restores the input
    order.  Longest first makes the first batch the largest allocation (fail early).
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    for start in range(0, len(order), max(1, max_batch)):
        yield order[start : start + max_batch]
