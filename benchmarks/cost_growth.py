"""Cost growth: time and peak memory of K-density scoring, JSMA and C&W-L2 as their size grows, to plan a run.

Three computations, each on a grid of sizes (one table row per point):

- K-density scoring (``KernelDensity.log_kd`` under ``torch.no_grad()``, σ² = 1/0.26) of synthetic 64-d
  features drawn from 10 Gaussian clusters (as penultimate-layer features are): 1,000 / 10,000 / 100,000 queries
  against 10 × 1,000 kernel points, and 10 × 100 / 10 × 1,000 / all 50,000 training features at 10,000 queries;
- JSMA (ε = 1, at most 100 features changed) on 10 and 100 images of MNIST shape (1, 28, 28) and CIFAR shape
  (3, 32, 32);
- C&W-L2 (3 binary-search steps × 100 iterations, abort-early on) on the same images.

The attacks run against an RCE ``Classifier`` of ``--arch`` (default resnet8) with RANDOM weights (torch seed 0)
on uniform random images: a trained model changes when JSMA and abort-early stop, so treat attack times as the
cost per step of that model size, not as a prediction for a trained one.

Time: one warm-up call, then the median of ``--repeat`` calls (CUDA is synchronised), in seconds total and per
image or query. Peak memory: on CUDA, ``torch.cuda.max_memory_allocated()`` during the calls minus what was
allocated before them (tensors only; the CUDA context and the allocator's cache are not counted). On CPU every
point runs in a fresh child process (this script with a hidden ``--cell``) that imports torch and rcedetect and
builds its inputs and model, reads its peak RSS (``getrusage``), runs the calls and reports how much the peak
rose: the computation's own extra memory. Linux hands a parent's peak RSS down to its children, so the parent
does not import torch on CPU.

Run (``--quick`` is a smoke run: one small point each, 1,000 queries × 10 × 100 kernel points, 10 MNIST images)::

    python benchmarks/cost_growth.py [--threads 1] [--device cpu|cuda] [--arch resnet32] [--only kd,jsma,cw]
        [--repeat 3] [--quick] [--json cost_growth.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

# torch and rcedetect are imported inside functions: on CPU the parent process must stay small (module docstring)

DIM, CLASSES, TRAIN = 64, 10, 50_000
SIGMA2 = 1 / 0.26
SHAPES = {"mnist": (1, 28, 28), "cifar": (3, 32, 32)}
NAMES = {"kd": "K-density", "jsma": "JSMA", "cw": "C&W-L2"}


def grid(only: list[str], quick: bool) -> list[dict]:
    """The points to measure, as cells: ``{"what": "kd", "n": queries, "per_class": K}`` or
    ``{"what": "jsma" | "cw", "n": images, "shape": "mnist" | "cifar"}``."""
    cells = []
    if "kd" in only:
        points = [(1_000, 100)] if quick else [(1_000, 1_000), (10_000, 1_000), (100_000, 1_000),
                                                (10_000, 100), (10_000, TRAIN // CLASSES)]
        cells += [{"what": "kd", "n": n, "per_class": k} for n, k in points]
    for what in ("jsma", "cw"):
        if what in only:
            points = [("mnist", 10)] if quick else [(s, n) for s in SHAPES for n in (10, 100)]
            cells += [{"what": what, "n": n, "shape": s} for s, n in points]
    return cells


def setup_kd(cell: dict, device):
    """Kernel points from 50,000 clustered training features; ``cell["n"]`` queries from the same clusters."""
    import torch

    from rcedetect.detectors import KernelDensity

    g = torch.Generator().manual_seed(0)
    centers = 2.0 * torch.rand(CLASSES, DIM, generator=g)

    def clustered(n: int):
        y = torch.arange(n) % CLASSES
        return (centers[y] + 0.6 * torch.randn(n, DIM, generator=g)).clamp_min(-0.1), y

    train, y_train = clustered(TRAIN)
    z, classes = clustered(cell["n"])
    per_class = "all" if cell["per_class"] * CLASSES >= TRAIN else cell["per_class"]
    kd = KernelDensity.fit(train, y_train, CLASSES, per_class=per_class, sigma2=SIGMA2, seed=0).to(device)
    z, classes = z.to(device), classes.to(device)

    def call():
        with torch.no_grad():
            kd.log_kd(z, classes)

    return call


def setup_attack(cell: dict, device, arch: str):
    """An RCE classifier with random weights (seed 0) and ``cell["n"]`` uniform random images."""
    import torch

    from rcedetect import Classifier, attacks, models

    shape = SHAPES[cell["shape"]]
    torch.manual_seed(0)
    net = models.create(arch, in_channels=shape[0], num_classes=CLASSES)
    classifier = Classifier(net, "rce", input_shape=shape).to(device).eval()
    x = torch.rand(cell["n"], *shape, generator=torch.Generator().manual_seed(1)).to(device)
    if cell["what"] == "jsma":
        attack = attacks.create("jsma", eps=1.0, max_steps=100)
    else:
        attack = attacks.create("cw", binary_search_steps=3, max_iterations=100, abort_early=True)
    return lambda: attack(classifier, x)


def median_seconds(call, repeat: int, device) -> float:
    """One warm-up call, then the median wall time of ``repeat`` calls."""
    import torch

    def once() -> float:
        t = time.perf_counter()
        call()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - t

    once()
    return statistics.median(once() for _ in range(repeat))


def run_cell(cell: dict, device, repeat: int, arch: str) -> dict:
    """Time one cell in this process; memory as described in the module docstring (CUDA or this process's RSS)."""
    import torch

    call = setup_kd(cell, device) if cell["what"] == "kd" else setup_attack(cell, device, arch)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        seconds = median_seconds(call, repeat, device)
        extra = torch.cuda.max_memory_allocated(device) - before
        del call
        torch.cuda.empty_cache()
    else:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
        seconds = median_seconds(call, repeat, device)
        extra = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    return {**cell, "seconds": seconds, "seconds_per_item": seconds / cell["n"], "extra_mib": extra / 2**20,
            "baseline_mib": before / 2**20}


def run_in_child(cell: dict, args) -> dict:
    """Run ``cell`` in a fresh process of this script; its result is the last line of its output."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--cell", json.dumps(cell), "--device", "cpu",
           "--threads", str(args.threads), "--repeat", str(args.repeat), "--arch", args.arch]
    done = subprocess.run(cmd, check=False, capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        return {**cell, "error": f"child exited with {done.returncode}: {tail}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def resolve_in_child(name: str) -> str:
    """``rcedetect.core.device.resolve(name)`` run in a child process, so that the parent need not import torch."""
    code = "import sys; from rcedetect.core.device import resolve; print(resolve(sys.argv[1]))"
    done = subprocess.run([sys.executable, "-c", code, name], check=False, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit((done.stderr.strip().splitlines() or [f"cannot resolve device {name!r}"])[-1])
    return done.stdout.strip().splitlines()[-1]


def markdown(rows: list[dict]) -> str:
    header = ("| computation | input | size | kernel points | seconds (median) | seconds per item | "
              "extra peak memory (MiB) |")
    lines = [header, "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        if r["what"] == "kd":
            what, size = f"{DIM}-d features", f"{r['n']:,} queries"
            kernel = f"{CLASSES} × {r['per_class']:,}" + (" (all)" if r["per_class"] * CLASSES >= TRAIN else "")
        else:
            what, size, kernel = f"{r['shape']} {'×'.join(map(str, SHAPES[r['shape']]))}", f"{r['n']:,} images", "—"
        if "error" in r:
            numbers = f"{r['error']} | | "
        else:
            numbers = f"{r['seconds']:.4g} | {r['seconds_per_item']:.3g} | {r['extra_mib']:.1f}"
        lines.append(f"| {NAMES[r['what']]} | {what} | {size} | {kernel} | {numbers} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or auto")
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    ap.add_argument("--repeat", type=int, default=3, help="timed calls per point (after one warm-up call)")
    ap.add_argument("--arch", default="resnet8", help="the attacked model, e.g. resnet8 or resnet32")
    ap.add_argument("--only", default="kd,jsma,cw", help="comma-separated subset of kd, jsma, cw")
    ap.add_argument("--quick", action="store_true", help="a smoke run: the smallest size of every grid axis")
    ap.add_argument("--json", help="also write the numbers to this file")
    ap.add_argument("--cell", help=argparse.SUPPRESS)  # internal: measure one cell, print its result as JSON
    args = ap.parse_args()
    only = [w.strip() for w in args.only.split(",") if w.strip()]
    if unknown := sorted(set(only) - set(NAMES)):
        ap.error(f"unknown computation(s) {', '.join(unknown)}; choose from {', '.join(NAMES)}")

    if args.cell:
        import torch

        from rcedetect.core.device import resolve

        torch.set_num_threads(args.threads)
        print(json.dumps(run_cell(json.loads(args.cell), resolve(args.device), args.repeat, args.arch)))
        return

    device_name = "cpu" if args.device == "cpu" else resolve_in_child(args.device)
    on_cuda = device_name.startswith("cuda")
    if on_cuda:  # only then does the parent import torch (module docstring)
        import torch

        from rcedetect.core.device import resolve

        torch.set_num_threads(args.threads)
        device = resolve(device_name)
    memory = ("CUDA max_memory_allocated during the calls minus memory allocated before them" if on_cuda else
              "peak RSS (getrusage ru_maxrss) of a fresh child process per point, minus its peak after imports "
              "and building the inputs/model")
    print(f"machine: {platform.processor() or platform.machine()}, torch {version('torch')}, "
          f"{args.threads} torch thread(s), device {device_name}")
    print(f"memory: {memory}")
    print(f"attacks: {args.arch}, RCE, random weights (torch seed 0), uniform random images; "
          f"time = median of {args.repeat} calls after one warm-up\n")

    rows = []
    for cell in grid(only, args.quick):
        if on_cuda:
            row = run_cell(cell, device, args.repeat, args.arch)
        else:
            row = run_in_child(cell, args)
        rows.append(row)
        print(f"  measured {NAMES[cell['what']]} {cell}", file=sys.stderr, flush=True)
    print(markdown(rows))
    if args.json:
        out = {"machine": platform.processor() or platform.machine(), "torch": version("torch"),
               "threads": args.threads, "device": device_name, "memory": memory, "arch": args.arch,
               "weights": "random (torch seed 0)", "repeat": args.repeat, "rows": rows}
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
