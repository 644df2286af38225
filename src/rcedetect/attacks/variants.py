"""The variants of one attack on the same images (λ values, restarts, start points) run as one batch.

An attack that searches over several runs per image (PGD with restarts, Madry et al. 2018; a λ schedule of the
combined loss, Carlini & Wagner 2017) would run them one after the other on the same N images. Here all V runs
are rows of one batch of V·N images, variant-major (row v·N + n is image n in variant v), cut into chunks of at
most ``max_batch`` rows; each chunk runs every step at once. A chunk keeps its own best iterate per row
(:class:`~.pgd_detector.Best`), and :func:`merge` offers those to the images' best in the variants' order, so the
image chosen is the one the sequential runs chose (the first minimal one, in the order variant-major, step-minor):
only the float rounding of the larger batches can differ. ``max_batch`` = N gives one variant per pass, as the
sequential runs had.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

from ..core.errors import ConfigError

#: images per pass by default: bounded memory on a GPU (a few GiB for CIFAR-sized ResNets) and on a CPU
MAX_BATCH = 4096


def check_max_batch(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"max_batch must be an integer >= 1 (images per forward/backward pass), got {value!r}")
    return value


@dataclass(frozen=True)
class Rows:
    """Rows ``lo``..``hi`` (exclusive) of the V·N rows of ``variants`` runs on ``n`` images."""

    n: int
    lo: int
    hi: int

    def __len__(self) -> int:
        return self.hi - self.lo

    def segments(self) -> Iterator[tuple[int, slice, slice]]:
        """(variant, its rows in this chunk, the images they are) for each variant the chunk holds, in order."""
        r = self.lo
        while r < self.hi:
            v, first = divmod(r, self.n)
            stop = min(self.hi, (v + 1) * self.n)
            yield v, slice(r - self.lo, stop - self.lo), slice(first, first + stop - r)
            r = stop

    def images(self, t: torch.Tensor) -> torch.Tensor:
        """The rows of per-image tensor ``t`` (N, ...) that this chunk's rows are."""
        return torch.cat([t[img] for _, _, img in self.segments()]) if len(self) else t[:0]

    def gather(self, per_variant: Callable[[int], torch.Tensor]) -> torch.Tensor:
        """This chunk's rows of the variants' (N, ...) tensors ``per_variant(v)``."""
        return torch.cat([per_variant(v)[img] for v, _, img in self.segments()])

    def values(self, per_variant: Sequence[float], like: torch.Tensor) -> torch.Tensor:
        """(rows,) float32: ``per_variant[v]`` on each row of variant v (a λ per example)."""
        return torch.cat([torch.full((img.stop - img.start,), float(per_variant[v]), device=like.device)
                          for v, _, img in self.segments()])


def chunks(n: int, variants: int, max_batch: int) -> list[Rows]:
    """The V·N rows in chunks of at most ``max_batch`` (at least one row each); none for an empty batch."""
    total = n * variants
    return [Rows(n, lo, min(lo + max_batch, total)) for lo in range(0, total, max_batch)]


def merge(best, part, rows: Rows) -> None:
    """Offer a chunk's best rows ``part`` (a Best over the chunk) to the images' ``best``, variant by variant in
    order, with their tags."""
    for _, r, img in rows.segments():
        best.offer(part.x[r], part.ok[r], part.dist[r], part.gap[r], rows=img,
                   **{k: t[r] for k, t in part.tags.items()})
