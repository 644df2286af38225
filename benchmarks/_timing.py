"""The one timing convention of every script in this folder.

- Each side runs once untimed (warm-up: allocations, lazy initialisation, CUDA kernels), then ``repeat`` times;
  the reported time is the median, with CUDA synchronised before the clock stops.
- "N× faster" = peer time / our time, both timed this way on the same inputs and budget; each comparison is
  printed on its own line as ``<what> vs <peer>: N×``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch


def _sync() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def median_time(fn: Callable[[], Any], repeat: int = 3, warmup: int = 1) -> tuple[float, Any]:
    """(median seconds of ``repeat`` timed calls after ``warmup`` untimed ones, the last call's result)."""
    out = None
    for _ in range(warmup):
        out = fn()
        _sync()
    times = []
    for _ in range(max(1, repeat)):
        t = time.perf_counter()
        out = fn()
        _sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def ratio_line(what: str, peer: str, peer_seconds: float, our_seconds: float, note: str = "") -> str:
    """``<what> vs <peer>: N×`` (N = peer time / our time), with an optional note after it."""
    line = f"{what} vs {peer}: {peer_seconds / our_seconds:.3g}×"
    return f"{line}  ({note})" if note else line
