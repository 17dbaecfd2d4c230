"""Micro-batching: concurrent requests share one model call.

Inputs wait in a bounded asyncio queue; one consumer task takes up to `max_batch` of them, waiting at most
`max_wait_ms` after the first for more to arrive, and runs the batch in a dedicated thread so the event loop
stays free. With `dispatch_when_idle`, it waits only while more inputs are on their way: requests mark
themselves with `expecting()` while they upload and decode, and a lone input with nobody else on the way runs
at once instead of paying `max_wait_ms` of latency. A full queue is an immediate `Overloaded` (HTTP 429 with
Retry-After), never a hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from service import metrics

log = logging.getLogger("fnac.batcher")

# (images, audio) -> (heatmaps, scores) or (heatmaps, scores, objectness maps or None)
RunBatch = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, ...]]


class Overloaded(Exception):
    """The inference queue is full (or shutting down); the client should retry after `retry_after` s."""

    def __init__(self, message: str = "the inference queue is full, retry shortly", retry_after: int = 1):
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


@dataclass(frozen=True)
class Prediction:
    heatmap: np.ndarray  # float32 [h, w], raw (cosine / tau)
    score: float  # raw cosine
    queue_ms: float  # waiting for a batch slot
    inference_ms: float  # the batch's model call
    batch_size: int
    batch_id: int
    objectness: np.ndarray | None = None  # float32 [h, w], raw; models with an OGL branch


_STOP = object()  # queued by stop() behind everything already waiting


@dataclass
class _Item:
    image: np.ndarray
    audio: np.ndarray
    future: asyncio.Future
    enqueued: float


class MicroBatcher:
    """Collects single inputs into batches for `run_batch(images, audio) -> (heatmaps, scores[, objectness])`
    (objectness: None, or the OGL maps of a model with an object branch)."""

    def __init__(
        self,
        run_batch: RunBatch,
        *,
        max_batch: int = 8,
        max_wait_ms: float = 5.0,
        queue_size: int = 64,
        dispatch_when_idle: bool = False,
        lanes: int = 1,
    ):
        if lanes < 1:
            raise ValueError(f"lanes must be >= 1, got {lanes}")
        self.run_batch = run_batch
        self.lanes = lanes
        self.dispatch_when_idle = dispatch_when_idle
        self._incoming = 0  # requests between expecting() and their enqueue (decoding)
        self._reserved = 0  # queue room admitted requests hold for inputs not queued yet
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self.queue_size = queue_size
        self._queue: asyncio.Queue | None = None
        self._executor = ThreadPoolExecutor(max_workers=lanes, thread_name_prefix="fnac-inference")
        self._free_lanes: asyncio.Semaphore | None = None
        self._running: set[asyncio.Task] = set()
        self._task: asyncio.Task | None = None
        self._closing = False
        self._batch_ids = itertools.count()

    @property
    def depth(self) -> int:
        return self._queue.qsize() if self._queue else 0

    @contextlib.contextmanager
    def expecting(self):
        """Mark a request that will queue inputs soon (hold it while the request decodes), so that the batcher
        waits for it instead of dispatching what it has. Leave the block right before `predict_many`, with no
        await in between."""
        self._incoming += 1
        try:
            yield
        finally:
            self._incoming -= 1

    async def start(self) -> None:
        self._queue = asyncio.Queue()  # bounded by admission (`_admit`), which counts reserved room too
        self._free_lanes = asyncio.Semaphore(self.lanes)
        self._task = asyncio.create_task(self._consume(), name="fnac-batcher")

    async def stop(self) -> None:
        """Finish everything already queued, then stop."""
        self._closing = True
        if self._task is not None and self._queue is not None:
            await self._queue.put(_STOP)
            await self._task
        if self._running:
            await asyncio.gather(*self._running)
        self._executor.shutdown(wait=True)

    async def predict(self, image: np.ndarray, audio: np.ndarray) -> Prediction:
        """One input: image uint8 [S, S, 3], audio float32 [N]."""
        return (await self.predict_many([image], [audio]))[0]

    async def predict_many(self, images: list[np.ndarray], audio: list[np.ndarray]) -> list[Prediction]:
        """Several inputs of one request (a sweep): admitted whole or refused whole with `Overloaded`.

        Admission reserves queue room for every input at once; the inputs then go into the queue `max_batch`
        at a time (so other requests' inputs can share the batches in between) and need no further room. A
        request larger than the whole queue is admitted only when the queue is empty."""
        inputs = list(zip(images, audio, strict=True))
        self._admit(len(inputs))
        self._reserved += len(inputs)
        queued = 0
        results: list[Prediction] = []
        try:
            for start in range(0, len(inputs), self.max_batch):
                chunk = inputs[start : start + self.max_batch]
                self._reserved -= len(chunk)
                queued += len(chunk)
                results += await asyncio.gather(*self._enqueue(chunk))
        finally:
            self._reserved -= len(inputs) - queued  # room a failed or cancelled request did not use
        return results

    def _admit(self, n: int) -> None:
        if self._queue is None or self._closing:
            raise Overloaded("the server is shutting down", retry_after=5)
        waiting = self._queue.qsize() + self._reserved
        if waiting + n > self.queue_size and not (waiting == 0 and n > self.queue_size):
            raise Overloaded()

    def _enqueue(self, inputs: list[tuple[np.ndarray, np.ndarray]]) -> list[asyncio.Future]:
        """Queue admitted inputs (room was reserved for them) and return their futures."""
        if self._queue is None or self._closing:  # nothing queued after stop() would ever run
            raise Overloaded("the server is shutting down", retry_after=5)
        loop = asyncio.get_running_loop()
        futures = []
        for image, audio in inputs:
            future = loop.create_future()
            self._queue.put_nowait(_Item(image, audio, future, time.perf_counter()))
            futures.append(future)
        metrics.QUEUE_DEPTH.set(self._queue.qsize())
        return futures

    async def _consume(self) -> None:
        assert self._queue is not None and self._free_lanes is not None
        stopping = False
        while not stopping:
            await self._free_lanes.acquire()  # a batch forms only when a lane can run it
            first = await self._queue.get()
            if first is _STOP:
                break
            batch = [first]
            deadline = time.perf_counter() + self.max_wait
            while len(batch) < self.max_batch:
                if self.dispatch_when_idle and self._incoming == 0 and self._queue.empty():
                    break  # nothing else is on its way: waiting would only add latency
                item = await self._next(deadline)
                if item is None:  # waited long enough
                    break
                if item is _STOP:
                    stopping = True
                    break
                batch.append(item)
            metrics.QUEUE_DEPTH.set(self._queue.qsize())
            task = asyncio.create_task(self._run([item for item in batch if not item.future.cancelled()]))
            self._running.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task) -> None:
        self._running.discard(task)
        assert self._free_lanes is not None
        self._free_lanes.release()

    async def _next(self, deadline: float):
        """The next queued item (or `_STOP`), or None when the deadline passes first."""
        assert self._queue is not None
        if not self._queue.empty():
            return self._queue.get_nowait()
        remaining = deadline - time.perf_counter()
        if remaining <= 0:
            return None
        getter = asyncio.ensure_future(self._queue.get())
        done, _ = await asyncio.wait({getter}, timeout=remaining)
        if not done:
            getter.cancel()
            try:
                return await getter  # it may have completed just before the cancel
            except asyncio.CancelledError:
                return None
        return getter.result()

    async def _run(self, batch: list[_Item]) -> None:
        if not batch:
            return
        started = time.perf_counter()
        try:
            images = np.stack([item.image for item in batch])
            audio = np.stack([item.audio for item in batch])
            heatmaps, scores, *extra = await asyncio.get_running_loop().run_in_executor(
                self._executor, self.run_batch, images, audio
            )
            objectness = extra[0] if extra and extra[0] is not None else [None] * len(batch)
        except Exception as exc:
            log.exception("inference failed for a batch of %d", len(batch))
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(exc)
            return
        elapsed = time.perf_counter() - started
        batch_id = next(self._batch_ids)
        metrics.BATCH_SIZE.observe(len(batch))
        metrics.INFERENCE_SECONDS.observe(elapsed)
        for item, heatmap, score, objects in zip(batch, heatmaps, scores, objectness, strict=True):
            if not item.future.done():
                item.future.set_result(
                    Prediction(
                        heatmap=heatmap,
                        score=float(score),
                        queue_ms=(started - item.enqueued) * 1000.0,
                        inference_ms=elapsed * 1000.0,
                        batch_size=len(batch),
                        batch_id=batch_id,
                        objectness=objects,
                    )
                )
