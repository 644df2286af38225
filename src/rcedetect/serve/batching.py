"""Micro-batching: requests that arrive within a short window share one model pass.

Each request puts its images on an asyncio queue and awaits a future. One task collects the queue: when the
first waiting request is ``window_s`` old, or ``max_batch`` images are waiting, or no other request is on its
way (``arriving()``: requests admitted but still being read or decoded), it concatenates up to ``max_batch``
images (whole requests only) and runs the model once, in one worker thread, so the event loop keeps accepting
requests meanwhile; the batch that waits while the model runs is taken as soon as it is done. Under load,
batches grow and throughput with them; a lone request does not wait for company that is not coming.

A request whose caller has gone (timed out, disconnected) is skipped; more than ``max_queue`` images waiting
is refused with 429.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import torch

from .limits import HttpError


@dataclass
class _Item:
    x: torch.Tensor
    future: asyncio.Future
    t: float = field(default_factory=time.perf_counter)


class MicroBatcher:
    """``await batcher.submit(x)`` returns ``split(run(cat(xs)))``'s share of ``x``.

    ``run(x) -> out`` runs in the worker thread; ``take(out, start, stop)`` slices its output for one request;
    ``on_batch(n_images, seconds)`` is told of every model pass.
    """

    def __init__(self, run: Callable[[torch.Tensor], Any], take: Callable[[Any, int, int], Any], *, max_batch: int,
                 window_s: float, max_queue: int, on_batch: Callable[[int, float], None] | None = None,
                 arriving: Callable[[], int] | None = None):
        self.run, self.take = run, take
        self.arriving = arriving or (lambda: 1)  # unknown: always wait for the window
        self.max_batch, self.window_s, self.max_queue = max_batch, window_s, max_queue
        self.on_batch = on_batch or (lambda n, s: None)
        self._items: deque[_Item] = deque()
        self._queued = 0
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None

    @property
    def queued_images(self) -> int:
        return self._queued

    async def start(self) -> None:
        self._wake = asyncio.Event()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="rce-model")
        self._task = asyncio.create_task(self._loop(), name="rce-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        for item in self._items:
            if not item.future.done():
                item.future.set_exception(HttpError(429, "the server is shutting down"))
        self._items.clear()
        self._queued = 0
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    async def submit(self, x: torch.Tensor) -> Any:
        if self._wake is None:
            raise RuntimeError("the batcher is not started")
        if len(x) > self.max_batch:
            raise HttpError(413, f"{len(x)} images in one request; at most {self.max_batch}")
        if self._queued + len(x) > self.max_queue:
            raise HttpError(429, f"{self._queued} images are already waiting for the model; retry shortly",
                            headers={"Retry-After": "1"})
        item = _Item(x, asyncio.get_running_loop().create_future())
        self._items.append(item)
        self._queued += len(x)
        self._wake.set()
        try:
            return await item.future
        finally:
            if not item.future.done():  # the caller gave up: the loop skips it
                item.future.cancel()

    def _pop_batch(self) -> list[_Item]:
        batch, n = [], 0
        while self._items:
            item = self._items[0]
            if item.future.done():  # cancelled while waiting
                self._items.popleft()
                self._queued -= len(item.x)
                continue
            if batch and n + len(item.x) > self.max_batch:
                break
            self._items.popleft()
            self._queued -= len(item.x)
            batch.append(item)
            n += len(item.x)
        return batch

    async def _loop(self) -> None:
        assert self._wake is not None
        loop = asyncio.get_running_loop()
        while True:
            while self._items and self._items[0].future.done():
                self._queued -= len(self._items.popleft().x)
            if not self._items:
                self._wake.clear()
                await self._wake.wait()
                continue
            wait = self._items[0].t + self.window_s - time.perf_counter()
            if wait > 0 and self._queued < self.max_batch and self.arriving() > 0:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), wait)
                except asyncio.TimeoutError:
                    pass
                if (self._queued < self.max_batch and self.arriving() > 0
                        and self._items[0].t + self.window_s > time.perf_counter()):
                    continue  # woken by a request that does not fill a batch, more on their way: keep waiting
            batch = self._pop_batch()
            if batch:
                await self._run_batch(loop, batch)

    async def _run_batch(self, loop, batch: list[_Item]) -> None:
        x = torch.cat([item.x for item in batch]) if len(batch) > 1 else batch[0].x
        t0 = time.perf_counter()
        done = loop.run_in_executor(self._executor, self.run, x)
        await asyncio.wait([done])
        error = done.exception()
        if error is not None:  # the model's failure is every waiting request's failure, never the loop's
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(error)
            return
        out = done.result()
        self.on_batch(len(x), time.perf_counter() - t0)
        start = 0
        for item in batch:
            stop = start + len(item.x)
            if not item.future.done():
                item.future.set_result(self.take(out, start, stop))
            start = stop
