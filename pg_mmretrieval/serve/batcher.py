"""Dynamic batching: concurrent requests for one encoder and modality share one encoder run.

Each (encoder, modality) has a lane: an asyncio queue drained by one task.  The task takes the
first waiting item, gathers more until ``max_batch`` items or ``max_wait_s`` after the first,
and encodes them together in a worker thread with the worker's own
:func:`~pg_mmretrieval.worker.encode.encode_isolating` (one bad item fails alone).  While a batch
runs, new requests queue up and form the next one, so a busy lane batches by itself.

Bounded: at most ``max_queue`` items are admitted and not yet encoded; beyond that a request
fails at once with HTTP 503.  Cancellation-safe: a request whose client went away has its
future cancelled; its items are skipped if not yet encoded, and results are never set on a
cancelled future, so the other requests of the batch are not affected.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from ..encoders import Encoder, Item
from ..errors import ServiceError
from ..worker.encode import encode_isolating

__all__ = ["BatchStats", "Batcher"]

Vector = npt.NDArray[np.float32]
log = logging.getLogger(__name__)


@dataclass(eq=False)
class _Slot:
    """One item waiting in a lane (the shape :func:`encode_isolating` expects)."""

    extra: dict[str, Any]
    future: asyncio.Future[Vector]
    vector: Vector | None = None
    error: BaseException | None = None


@dataclass
class BatchStats:
    """Counters of the encoder runs (``GET /v1/stats``)."""

    batches: int = 0
    items: int = 0
    largest_batch: int = 0
    rejected: int = 0  # items refused with 503 (queue full)
    cancelled: int = 0  # items skipped because their client went away
    lanes: dict[str, dict[str, int]] = field(default_factory=dict)

    def count(self, lane: str, n: int) -> None:
        self.batches += 1
        self.items += n
        self.largest_batch = max(self.largest_batch, n)
        per = self.lanes.setdefault(lane, {"batches": 0, "items": 0})
        per["batches"] += 1
        per["items"] += n


class _Lane:
    def __init__(self, name: str, encoder: Encoder) -> None:
        self.name = name
        self.encoder = encoder
        self.queue: asyncio.Queue[_Slot] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None


class Batcher:
    """Gathers items per (encoder, modality) into batches run on ``threads`` threads."""

    def __init__(self, max_batch: int, max_wait_s: float, threads: int, max_queue: int) -> None:
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self.stats = BatchStats()
        self.pending = 0
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="mmr-serve-encode")
        self._lanes: dict[tuple[str, str], _Lane] = {}

    async def embed(self, encoder: Encoder, modality: str, inputs: list[Item]) -> list[Vector]:
        """The vectors of ``inputs`` (loaded items of one modality), in order.

        Raises:
            ServiceError: 503 when the queue is full.
            MMRError: what the encoder raised for an item (the first failing one).
        """
        if self.pending + len(inputs) > self.max_queue:
            self.stats.rejected += len(inputs)
            raise ServiceError(
                503,
                f"the encoder service is overloaded: {self.pending} items are waiting "
                f"(at most {self.max_queue})",
                "retry after a short pause, or start mmr serve with a larger --max-queue or "
                "more --threads",
            )
        lane = self._lane(encoder, modality)
        loop = asyncio.get_running_loop()
        slots = [_Slot({"input": item}, loop.create_future()) for item in inputs]
        self.pending += len(slots)
        for slot in slots:
            lane.queue.put_nowait(slot)
        try:
            return list(await asyncio.gather(*(s.future for s in slots)))
        finally:
            for slot in slots:  # a failed or cancelled request: its other items need not run
                slot.future.cancel()

    def _lane(self, encoder: Encoder, modality: str) -> _Lane:
        key = (encoder.name, modality)
        lane = self._lanes.get(key)
        if lane is None or lane.encoder is not encoder:
            if lane is not None and lane.task is not None:
                lane.task.cancel()  # the plugin registry was reloaded: a new encoder object
            lane = _Lane(f"{encoder.name}/{modality}", encoder)
            lane.task = asyncio.get_running_loop().create_task(self._run(lane))
            self._lanes[key] = lane
        return lane

    async def _gather(self, lane: _Lane) -> list[_Slot]:
        loop = asyncio.get_running_loop()
        batch = [await lane.queue.get()]
        deadline = loop.time() + self.max_wait_s
        while len(batch) < self.max_batch:
            try:
                batch.append(lane.queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            left = deadline - loop.time()
            if left <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(lane.queue.get(), left))
            except TimeoutError:
                break
        return batch

    async def _run(self, lane: _Lane) -> None:
        while True:
            batch = await self._gather(lane)
            try:
                await self._encode(lane, batch)
            except Exception as e:  # never let the lane die: its requests would wait forever
                log.exception("lane %s: batch failed", lane.name)
                for s in batch:
                    if not s.future.done():
                        s.future.set_exception(e)
            finally:
                self.pending -= len(batch)

    async def _encode(self, lane: _Lane, batch: list[_Slot]) -> None:
        live = [s for s in batch if not s.future.done()]
        self.stats.cancelled += len(batch) - len(live)
        if not live:
            return
        loop = asyncio.get_running_loop()
        # encode_isolating sets an error per failing item itself (splitting the batch)
        await loop.run_in_executor(self._executor, encode_isolating, lane.encoder, live)
        self.stats.count(lane.name, len(live))
        for s in live:
            if s.future.done():  # its client went away while the batch ran
                continue
            if s.error is not None:
                s.future.set_exception(s.error)
            elif s.vector is not None:
                s.future.set_result(s.vector)
            else:
                s.future.set_exception(RuntimeError("the encoder produced no vector"))

    def providers(self) -> dict[str, str]:
        """The execution provider of each encoder that has run (``CPUExecutionProvider``...)."""
        return {lane.encoder.name: lane.encoder.provider for lane in list(self._lanes.values())}

    async def close(self) -> None:
        """Stop the lanes (waiting requests are cancelled) and the encoder threads."""
        tasks = [lane.task for lane in self._lanes.values() if lane.task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for lane in self._lanes.values():
            while not lane.queue.empty():
                lane.queue.get_nowait().future.cancel()
        self._lanes.clear()
        self._executor.shutdown(wait=False, cancel_futures=True)
