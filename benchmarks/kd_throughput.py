"""K-density throughput: rcedetect's batched log-domain KernelDensity against scikit-learn's, side by side.

Feinman et al.'s detector code fits one ``sklearn.neighbors.KernelDensity(kernel="gaussian", bandwidth=h)`` per
class and scores each input with the KDE of its predicted class, one point per ``score_samples`` call (spread over
a process pool). This script times both that per-point use (one process) and the faster batched use (one
``score_samples`` call per class) next to ``rcedetect.detectors.kd.KernelDensity.log_kd`` on the same data:

- 10,000 queries, 64-d, drawn from 10 Gaussian clusters (as penultimate-layer features are), each scored
  against the kernel of its own class;
- kernel = 10 × 1,000 points (the paper's detector) and the full 50,000 training features (``per_class="all"``).

Both sides are timed the same way (``_timing.median_time``: one warm-up, then the median of ``--repeat`` runs)
and the ratio is printed as ``K-density vs sklearn ...: N×`` (N = sklearn time / ours).

Bandwidths match: exp(−d²/σ²) = exp(−d²/(2h²)), so h = sqrt(σ²/2); scikit-learn's log-density includes the
Gaussian normalising constant −(D/2)·log(π σ²) (with h² = σ²/2), which is removed before comparing. scikit-learn
is slow on the 50,000-point kernel, so it is measured on a subset of the queries (``--sk-queries``, the same
number per class) and its time scaled linearly to all queries; the per-point variant always runs on
``--point-queries`` queries and is scaled the same way. The output says when a time is scaled.

Run: ``python benchmarks/kd_throughput.py [--threads 1] [--device cpu|cuda]``.
"""

from __future__ import annotations

import argparse
import math
import platform

import numpy as np
import torch
from _timing import median_time, ratio_line
from sklearn.neighbors import KernelDensity as SkKernelDensity

from rcedetect.detectors import KernelDensity, default_sigma2


def clustered(n: int, dim: int, classes: int, g: torch.Generator, centers: torch.Tensor):
    y = torch.arange(n) % classes
    return (centers[y] + 0.6 * torch.randn(n, dim, generator=g)).clamp_min(-0.1), y


def ours(kd: KernelDensity, z: torch.Tensor, c: torch.Tensor, repeat: int) -> tuple[float, np.ndarray]:
    def run():
        with torch.no_grad():
            return kd.log_kd(z, c)

    t, out = median_time(run, repeat)
    return t, out.double().cpu().numpy()


def sklearn_per_class(kd: KernelDensity, z: np.ndarray, c: np.ndarray, per_class_queries: int | None,
                      repeat: int):
    """Feinman-style per-class sklearn KDE, one batched ``score_samples`` call per class. Returns (seconds for
    all queries, scaled if subsampled; log KD of the scored queries without sklearn's normalising constant;
    indices of the scored queries). Fitting the trees is not timed (nor is ours)."""
    h = math.sqrt(kd.sigma2 / 2)
    const = 0.5 * kd.dim * math.log(math.pi * kd.sigma2)
    calls, idx_all = [], []
    for k in range(kd.num_classes):
        idx = np.flatnonzero(c == k)
        if len(idx) == 0:
            continue
        sub = idx if per_class_queries is None else idx[:per_class_queries]
        points = kd.kernels[k, : int(kd.counts[k])].double().cpu().numpy()
        sk = SkKernelDensity(kernel="gaussian", bandwidth=h).fit(points)
        calls.append((sk, z[sub], len(idx) / len(sub)))
        idx_all.append(sub)

    def run():
        return [sk.score_samples(q) for sk, q, _ in calls]

    t, scores = median_time(run, repeat)
    # scale each class's share of the time by its subsampling factor (equal here: the same count per class)
    scale = sum(f * len(q) for _, q, f in calls) / sum(len(q) for _, q, _ in calls)
    return t * scale, np.concatenate(scores) + const, np.concatenate(idx_all)


def sklearn_per_point(kd: KernelDensity, z: np.ndarray, c: np.ndarray, per_class_queries: int) -> float:
    """Feinman et al.'s ``score_point``: one ``score_samples`` call per input (in one process). Seconds for all
    queries, scaled from ``per_class_queries`` per class."""
    h = math.sqrt(kd.sigma2 / 2)
    total = 0.0
    for k in range(kd.num_classes):
        idx = np.flatnonzero(c == k)
        sub = idx[:per_class_queries]
        if len(sub) == 0:
            continue
        sk = SkKernelDensity(kernel="gaussian", bandwidth=h).fit(kd.kernels[k, : int(kd.counts[k])].double().numpy())
        t, _ = median_time(lambda sk=sk, sub=sub: [sk.score_samples(z[i].reshape(1, -1)) for i in sub], repeat=1)
        total += t * len(idx) / len(sub)
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--queries", type=int, default=10_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--train", type=int, default=50_000)
    ap.add_argument("--per-class", type=int, default=1000)
    ap.add_argument("--sk-queries", type=int, default=1000,
                    help="queries scored by sklearn against the full training set (scaled to all)")
    ap.add_argument("--point-queries", type=int, default=200,
                    help="queries scored one at a time, Feinman-style (scaled to all)")
    ap.add_argument("--objective", default="ce", choices=("ce", "rce"))
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (sklearn's KDE is single-threaded)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    g = torch.Generator().manual_seed(0)
    centers = 2.0 * torch.rand(args.classes, args.dim, generator=g)
    train, y_train = clustered(args.train, args.dim, args.classes, g, centers)
    z, c = clustered(args.queries, args.dim, args.classes, g, centers)
    sigma2 = default_sigma2(args.objective)
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{args.threads} torch thread(s), device {device}")
    print(f"{args.queries} queries, {args.dim}-d, {args.classes} classes, sigma2={sigma2:.4g} "
          f"(sklearn bandwidth h={math.sqrt(sigma2 / 2):.4g})\n")

    rows = []
    for label, per_class, sk_sub in ((f"{args.classes} x {args.per_class} kernel", args.per_class, None),
                                     (f"all {args.train} training features", "all",
                                      max(1, args.sk_queries // args.classes))):
        kd = KernelDensity.fit(train, y_train, args.classes, per_class=per_class, sigma2=sigma2, seed=0)
        t_ours, lk = ours(kd.to(device), z.to(device), c.to(device), args.repeat)
        t_sk, lk_sk, idx = sklearn_per_class(kd, z.double().numpy(), c.numpy(), sk_sub, args.repeat)
        t_pt = sklearn_per_point(kd, z.double().numpy(), c.numpy(), max(1, args.point_queries // args.classes))
        # agreement in float64 (our float32 run is checked against it separately)
        lk64 = kd.to(dtype=torch.float64).log_kd(z.double()[idx], c[idx]).numpy()
        rel_sk = np.max(np.abs(np.expm1(lk64 - lk_sk)))
        rel_32 = np.max(np.abs(np.expm1(lk[idx] - lk64)))
        rows.append((label, t_ours, t_sk, t_pt, rel_sk, rel_32, len(idx)))

    print(f"{'kernel':<32}{'rcedetect':>11}{'sklearn batched':>17}{'sklearn per point':>19}")
    for label, t_ours, t_sk, t_pt, rel_sk, rel_32, n_sk in rows:
        print(f"{label:<32}{t_ours:>10.4f}s{t_sk:>9.2f}s ({t_sk / t_ours:>4.0f}x){t_pt:>10.1f}s ({t_pt / t_ours:>5.0f}x)")
    print()
    for label, t_ours, t_sk, t_pt, rel_sk, rel_32, n_sk in rows:
        scaled = "" if n_sk == args.queries else f"; sklearn batched timed on {n_sk} queries and scaled"
        print(f"{label}: max relative difference of KD, float64 vs sklearn {rel_sk:.1e}, our float32 vs float64 "
              f"{rel_32:.1e}{scaled}")
    print()
    for label, t_ours, t_sk, t_pt, *_ in rows:
        print(ratio_line(f"K-density ({label})", "sklearn score_samples per class", t_sk, t_ours))
        print(ratio_line(f"K-density ({label})", "sklearn score_samples per point", t_pt, t_ours))
    print(f"sklearn per point timed on {args.point_queries} queries and scaled to {args.queries} "
          "(Feinman et al. spread these calls over a process pool: divide by the number of cores).")


if __name__ == "__main__":
    main()
