"""Training step time with each fast path of ``TrainConfig`` against the plain float32 step, side by side.

The paths (``rce train --set amp=true`` etc.): ``channels_last`` (NHWC memory order), ``amp`` (bf16 autocast of the
forward pass; the loss in float32), both, and ``compile`` (``torch.compile``; its compilation on the first steps is
reported apart, not in the step time). The same RCE step as ``rcedetect.training.fit`` on one model shape and batch;
runs alternate plain / path so drifts in machine load hit both. "N×" = plain step time / the path's step time
(> 1: the path is faster), with the median of ``--steps`` steps after ``--warmup`` untimed ones. A path that speeds
up a GPU need not speed up a CPU: measure where you train.

    python benchmarks/train_fast_paths.py [--arch resnet32] [--batch 128] [--steps 20] [--device auto] [--compile]
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import time
from contextlib import nullcontext

import torch
from _timing import ratio_line

from rcedetect import models
from rcedetect.core.device import resolve
from rcedetect.models.losses import objective_loss
from rcedetect.training import parameter_groups


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Path:
    """One way of running the training step: its own copy of the network and optimizer."""

    def __init__(self, name: str, net: torch.nn.Module, device: torch.device, channels_last=False, amp=False,
                 compiled=False):
        self.name, self.device, self.channels_last, self.amp = name, device, channels_last, amp
        self.net = copy.deepcopy(net)
        if channels_last:
            self.net.to(memory_format=torch.channels_last)
        self.opt = torch.optim.SGD(parameter_groups(self.net), lr=0.01, momentum=0.9, weight_decay=2e-4)
        self.model = torch.compile(self.net) if compiled else self.net
        self.times: list[float] = []

    def step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        t = time.perf_counter()
        with torch.autocast(self.device.type, dtype=torch.bfloat16) if self.amp else nullcontext():
            raw = self.model(x)
        loss = objective_loss("rce", raw.float(), y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        sync(self.device)
        return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="resnet32")
    ap.add_argument("--channels", type=int, default=1)
    ap.add_argument("--size", type=int, default=28)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=20, help="timed steps per path")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--compile", action="store_true", help="also time torch.compile (compiles for a while)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve(args.device)
    torch.manual_seed(0)
    net = models.create(args.arch, in_channels=args.channels).to(device).train()
    x = torch.rand(args.batch, args.channels, args.size, args.size, device=device)
    y = torch.randint(0, 10, (args.batch,), device=device)
    paths = [Path("float32", net, device), Path("channels_last", net, device, channels_last=True),
             Path("amp (bf16)", net, device, amp=True), Path("amp + channels_last", net, device, True, True)]
    if args.compile:
        paths.append(Path("compile", net, device, compiled=True))
        t = time.perf_counter()
        paths[-1].step(x, y)
        print(f"torch.compile: first step (compilation) {time.perf_counter() - t:.1f} s")
    for i in range(args.warmup + args.steps):
        for p in paths if i % 2 == 0 else paths[::-1]:
            s = p.step(x, y)
            if i >= args.warmup:
                p.times.append(s)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "CPU"
    print(f"{args.arch}, batch {args.batch} of {args.channels}x{args.size}x{args.size}, RCE, on {device} ({name}), "
          f"{torch.get_num_threads()} CPU threads; median of {args.steps} steps")
    plain = statistics.median(paths[0].times)
    for p in paths:
        med = statistics.median(p.times)
        print(f"  {p.name:22s} {med * 1e3:8.2f} ms/step")
    for p in paths[1:]:
        print(ratio_line(f"training step ({p.name})", "float32 step", plain, statistics.median(p.times)))


if __name__ == "__main__":
    main()
