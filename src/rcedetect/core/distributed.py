"""Several processes under ``torchrun``: PyTorch's own process group, DistributedDataParallel and collectives.

``torchrun --nproc_per_node N -m rcedetect.cli train|attack|reproduce ...`` starts N copies of the command with
``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` set; :func:`init` joins them into one process group (NCCL on CUDA,
gloo on the CPU) and each process uses ``cuda:LOCAL_RANK`` when CUDA is there. What each command does with them:

- training: DistributedDataParallel over the ranks; every rank draws the same global batch of ``batch_size``
  images (the seeded sampler), augments it as one process would, and takes its contiguous share; BatchNorm
  statistics are reduced over the whole batch (:class:`GlobalBatchNorm2d`), so N processes follow the one-process
  run up to float rounding, with the same checkpoint format (rank 0 writes it).
- attacks: the batches of attacked images are dealt out over the ranks (batch b to rank b mod N); each writes its
  own part files (one per batch, seeded by the batch index alone, so the parts are the ones a single process
  writes) and all wait for all before the parts are read. A killed run resumes from the parts that exist, with
  any number of processes.

Outside ``torchrun`` (no ``WORLD_SIZE`` or ``WORLD_SIZE=1``) everything here is a no-op.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from .errors import ConfigError


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def owns(self, batch: int) -> bool:
        """Whether this rank attacks batch ``batch`` (batch b goes to rank b mod N)."""
        return batch % self.size == self.rank


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name, "")
    try:
        return int(text) if text else default
    except ValueError as e:
        raise ConfigError(f"environment variable {name}={text!r} is not an integer (set by torchrun)") from e


def world() -> World:
    """This process's place among the ranks (from the process group, else from torchrun's variables)."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), _env_int("LOCAL_RANK", 0))
    return World(_env_int("RANK", 0), _env_int("WORLD_SIZE", 1), _env_int("LOCAL_RANK", 0))


def init(device: torch.device) -> World:
    """Join the process group when started by torchrun with more than one process; returns this rank's World."""
    w = world()
    if w.active and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(w.local_rank)
        dist.init_process_group(backend)
    return world()


def device_of(device: torch.device) -> torch.device:
    """The device of this rank: ``cuda:LOCAL_RANK`` when the command asked for CUDA under torchrun."""
    w = world()
    if w.active and device.type == "cuda" and device.index is None:
        return torch.device("cuda", w.local_rank)
    return device


def barrier() -> None:
    """Wait for every rank (no-op in one process)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def all_true(flag: torch.Tensor) -> bool:
    """Whether a boolean flag holds on every rank (a collective: call it on all ranks at the same point)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        t = flag.to(torch.int32).reshape(1).clone()
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
        return bool(t.item())
    return bool(flag)


def check_shards(n_batches: int) -> None:
    """``rce attack`` with more ranks than batches of images would leave a rank with nothing to do: refused with
    one line (``rce reproduce`` lets such ranks wait: its attacks have many sizes)."""
    w = world()
    if w.size > n_batches:
        raise ConfigError(f"{w.size} processes for {n_batches} batch(es) of images: rank {n_batches} would have "
                          f"nothing to do; start at most {n_batches} processes or use a smaller --batch-size")


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm whose training-mode statistics are the mean and variance over the images of ALL ranks, reduced
    with PyTorch's differentiable ``all_reduce`` (gloo and NCCL alike), so the gradient is that of the whole
    batch. Parameters and buffers are BatchNorm2d's, so the state dict is unchanged; in eval mode (and in one
    process) it is BatchNorm2d."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        from torch.distributed import _functional_collectives as fc

        def all_reduce(t: torch.Tensor) -> torch.Tensor:  # differentiable: the gradient is reduced as well
            return fc.all_reduce(t, "sum", dist.group.WORLD)

        count = torch.tensor([x.numel() // x.shape[1]], dtype=torch.float64, device=x.device)
        dist.all_reduce(count)
        n = float(count.item())
        mean = all_reduce(x.sum((0, 2, 3))) / n
        centred = x - mean[None, :, None, None]
        var = all_reduce(centred.pow(2).sum((0, 2, 3))) / n
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * (n / max(n - 1, 1)), alpha=m)
        y = centred * torch.rsqrt(var + self.eps)[None, :, None, None]
        return y * self.weight[None, :, None, None] + self.bias[None, :, None, None] if self.affine else y


def global_batch_norm(net: nn.Module, on: bool = True) -> nn.Module:
    """Turn every BatchNorm2d of ``net`` into :class:`GlobalBatchNorm2d` (``on``) or back, in place (the
    parameters and buffers stay the same tensors)."""
    for m in net.modules():
        if type(m) is (nn.BatchNorm2d if on else GlobalBatchNorm2d):
            m.__class__ = GlobalBatchNorm2d if on else nn.BatchNorm2d
    return net
