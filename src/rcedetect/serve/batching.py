"""Micro-batching: requests that arrive within a short window share one model pass.

Each request puts its images on a queue and awaits a future. One task takes whole requests, up to ``max_batch``
images, once the first is ``window_s`` old, a batch is full or no other request is on its way (``arriving()``:
being read or decoded), and runs the model once in a worker thread, so the event loop keeps accepting requests.
Under load batches grow, and throughput with them; a lone request does not wait for company that is not coming.
A request whose caller has gone (timed out, disconnected) is skipped; past ``max_queue`` images waiting, 429.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
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

    ``x`` holds at most ``max_batch`` images (the app's parsing refuses more); ``run(x) -> out`` runs in the
    worker thread; ``take(out, start, stop)`` slices its output for one request; ``on_batch(n_images, seconds)``
    is told of every model pass; ``queued_images``: the images waiting.
    """

    def __init__(self, run: Callable[[torch.Tensor], Any], take: Callable[[Any, int, int], Any], *, max_batch: int,
                 window_s: float, max_queue: int, on_batch: Callable[[int, float], None] | None = None,
                 arriving: Callable[[], int] | None = None):
        self.run, self.take = run, take
        self.arriving = arriving or (lambda: 1)  # unknown: always wait for the window
        self.max_batch, self.window_s, self.max_queue = max_batch, window_s, max_queue
        self.on_batch = on_batch or (lambda n, s: None)
        self._items: deque[_Item] = deque()
        self.queued_images = 0
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None

    async def start(self) -> None:
        self._wake = asyncio.Event()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="rce-model")
        self._task = asyncio.create_task(self._loop(), name="rce-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
        for item in self._items:
            if not item.future.done():
                item.future.set_exception(HttpError(429, "the server is shutting down"))
        self._items.clear()
        self.queued_images = 0
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    async def submit(self, x: torch.Tensor) -> Any:
        if self._wake is None:
            raise RuntimeError("the batcher is not started")
        if self.queued_images + len(x) > self.max_queue:
            raise HttpError(429, f"{self.queued_images} images are already waiting for the model; retry shortly",
                            headers={"Retry-After": "1"})
        item = _Item(x, asyncio.get_running_loop().create_future())
        self._items.append(item)
        self.queued_images += len(x)
        self._wake.set()
        try:
            return await item.future
        finally:
            if not item.future.done():  # the caller gave up: the loop skips it
                item.future.cancel()

    def _pop_batch(self) -> list[_Item]:
        """Whole requests from the head of the queue, up to ``max_batch`` images; those whose caller gave up are
        dropped."""
        batch, n = [], 0
        while self._items and not (batch and n + len(self._items[0].x) > self.max_batch):
            item = self._items.popleft()
            self.queued_images -= len(item.x)
            if not item.future.done():
                batch.append(item)
                n += len(item.x)
        return batch

    async def _loop(self) -> None:
        assert self._wake is not None
        loop = asyncio.get_running_loop()
        while True:
            while self._items and self._items[0].future.done():  # its caller gave up
                self.queued_images -= len(self._items.popleft().x)
            # wait (woken by each new request) while the queue is empty, or while the first request's window is
            # open, no batch is full yet and more requests are on their way
            wait = self._items[0].t + self.window_s - time.perf_counter() if self._items else None
            if wait is None or wait > 0 and self.queued_images < self.max_batch and self.arriving() > 0:
                self._wake.clear()
                with suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait)
                continue
            await self._run_batch(loop, self._pop_batch())  # not empty: its first request is waiting

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
