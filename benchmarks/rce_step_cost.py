"""RCE vs CE: the cost of one training step, measured side by side in one run.

The two objectives differ only in the loss on the logits (paper eq. 4 vs cross-entropy), so a step with RCE
should cost the same as a step with CE (goal: at most 2 % more). Steps alternate CE, RCE, CE, RCE, ... on
the same model shape and batch, so drifts in machine load hit both equally; we print the medians and ratio.

    python benchmarks/rce_step_cost.py [--arch resnet32] [--batch 128] [--steps 30] [--device auto]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from rcedetect import models
from rcedetect.core.device import resolve
from rcedetect.models.losses import objective_loss
from rcedetect.training import parameter_groups


def one_step(net, opt, x, y, objective, device):
    loss = objective_loss(objective, net(x), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="resnet32")
    ap.add_argument("--channels", type=int, default=1)
    ap.add_argument("--size", type=int, default=28)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=30, help="timed steps per objective")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--json", help="write the numbers to this file")
    args = ap.parse_args()

    device = resolve(args.device)
    torch.manual_seed(0)
    nets = {obj: models.create(args.arch, in_channels=args.channels).to(device) for obj in ("ce", "rce")}
    nets["rce"].load_state_dict(nets["ce"].state_dict())
    opts = {o: torch.optim.SGD(parameter_groups(n), lr=0.01, momentum=0.9, weight_decay=2e-4) for o, n in nets.items()}
    x = torch.rand(args.batch, args.channels, args.size, args.size, device=device)
    y = torch.randint(0, 10, (args.batch,), device=device)
    times = {"ce": [], "rce": []}
    for i in range(args.warmup + args.steps):
        order = ("ce", "rce") if i % 2 == 0 else ("rce", "ce")
        for obj in order:
            t0 = time.perf_counter()
            one_step(nets[obj], opts[obj], x, y, obj, device)
            if i >= args.warmup:
                times[obj].append(time.perf_counter() - t0)

    # the loss alone, which is the only code that differs
    z = torch.randn(args.batch, 10, device=device, requires_grad=True)
    loss_times = {}
    for obj in ("ce", "rce"):
        ts = []
        for _ in range(200):
            t0 = time.perf_counter()
            objective_loss(obj, z, y).backward()
            ts.append(time.perf_counter() - t0)
        loss_times[obj] = statistics.median(ts)

    med = {o: statistics.median(t) for o, t in times.items()}
    out = {
        "device": str(device), "arch": args.arch, "batch": args.batch, "threads": torch.get_num_threads(),
        "steps_per_objective": args.steps, "median_step_s": med, "rce_over_ce": med["rce"] / med["ce"],
        "loss_only_median_s": loss_times,
    }
    print(f"{args.arch} batch {args.batch} on {device} ({torch.get_num_threads()} threads), "
          f"{args.steps} alternating steps each")
    print(f"  CE  step median {med['ce'] * 1e3:8.2f} ms")
    print(f"  RCE step median {med['rce'] * 1e3:8.2f} ms")
    print(f"  RCE / CE step time ratio: {out['rce_over_ce']:.4f}  (goal <= 1.02)")
    print(f"  loss + backward alone: CE {loss_times['ce'] * 1e6:.0f} us, RCE {loss_times['rce'] * 1e6:.0f} us")
    if args.json:
        from rcedetect.core.io import write_json

        write_json(args.json, out)


if __name__ == "__main__":
    main()
