"""What an attack iteration costs beyond the network: time per iteration ÷ one forward+backward pass.

A gradient attack cannot take a step for less than one forward+backward pass of the model on its batch (BIM, PGD:
Madry et al. 2018; C&W: one Adam step, Carlini & Wagner 2017). This script times, on the demo's model (ResNet-8 on
mnist5k-shaped images; the trained run given by ``--run``, else a freshly initialised one) and the demo's batch of
each attack, the time of one iteration (the difference between a run of 2k and of k iterations, over k, so fixed
costs such as the clean prediction and the final verdict drop out) and the time of one forward+backward pass of the
input gradient on the same batch; it prints ``<attack>: N× a forward+backward`` (goal: at most 1.15×).

``pgd_detector`` runs against a K-density term (the detector fitted on mnist5k's training images, its threshold at
5 % FPR on 500 test images): once with one run (λ = 10, one random start: the cost of the combined loss and of
judging each iterate) and once with the demo's six runs (λ ∈ {0, 10, 100} × a random and a guided start, one batch
of 6 × 48 images), whose iteration is compared with one pass over those 288 images (below 1× where runs of one
start share their steps while the detector accepts their iterate).

Timing follows ``_timing.py`` (one warm-up, median of ``--repeat``; the k-iteration run, the 2k-iteration run and k
passes alternate).
Nothing here asserts a time.

    python benchmarks/attack_overhead.py [--run RUN_DIR] [--iterations 10] [--repeat 3] [--device auto]
"""

from __future__ import annotations

import argparse
import statistics

import torch
from _timing import median_time

from rcedetect import Classifier, attacks, data, models
from rcedetect.core.device import resolve
from rcedetect.detectors import Detector, ScoreTerm
from rcedetect.models import checkpoint

#: the demo's images per batch: BIM 100, the adaptive attacks 48, C&W 24 (src/rcedetect/configs/demo.toml)
BATCH = {"bim": 100, "pgd": 48, "pgd_detector": 48, "pgd_detector (6 runs)": 48, "cw": 24}


def forward_backward(clf, x: torch.Tensor):
    """One ∇ₓ of the summed logits: one forward and one backward pass."""
    xa = x.detach().requires_grad_(True)
    with torch.enable_grad():
        (g,) = torch.autograd.grad(clf.logits(xa).sum(), xa)
    return g


def per_iteration(make, clf, x: torch.Tensor, x_pass: torch.Tensor, k: int) -> tuple[float, float]:
    """(seconds per attack iteration, seconds per forward+backward pass over ``x_pass``): the iteration is
    (t(2k iterations) − t(k iterations)) / k; the k-run, the 2k-run and k passes alternate ``repeat`` times (so a
    change in the machine's load hits all three), medians."""
    short, long = make(k), make(2 * k)

    def passes():
        for _ in range(k):
            forward_backward(clf, x_pass)

    times: dict[str, list[float]] = {"short": [], "long": [], "pass": []}
    for _ in range(ARGS.repeat):
        for name, fn in (("short", lambda: short(clf, x)), ("long", lambda: long(clf, x)), ("pass", passes)):
            times[name].append(median_time(fn, repeat=1, warmup=0 if times[name] else 1)[0])
    med = {n: statistics.median(v) for n, v in times.items()}
    return max(med["long"] - med["short"], 1e-9) / k, med["pass"] / k


def kd_term(clf, ds) -> ScoreTerm:
    det = Detector(clf, "kd", per_class="all").fit(data.to_float(ds.x_train), ds.y_train)
    det.calibrate(data.to_float(ds.x_test[-500:]), 0.05)
    return ScoreTerm(det.scorer, det.threshold)


def main() -> None:
    global ARGS
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default=None, help="a trained run folder (rce train ...); default: a fresh ResNet-8")
    ap.add_argument("--iterations", type=int, default=10, help="k: runs of k and 2k iterations are compared")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ARGS = ap.parse_args()
    if ARGS.threads:
        torch.set_num_threads(ARGS.threads)
    device = resolve(ARGS.device)
    if ARGS.run:
        clf = checkpoint.load(ARGS.run, device=device).classifier
        what = f"the model of {ARGS.run}"
    else:
        torch.manual_seed(0)
        clf = Classifier(models.create("resnet8", in_channels=1, num_classes=10), "rce").to(device).eval()
        what = "a freshly initialised ResNet-8 (RCE)"
    ds = data.load("mnist5k")
    term = kd_term(clf, ds)
    k = ARGS.iterations
    print(f"{what} on {device}, {torch.get_num_threads()} thread(s); per iteration: (t(2k) − t(k)) / k, k = {k}")
    makers = {
        "bim": lambda n: attacks.create("bim", eps=0.1, steps=n),
        "pgd": lambda n: attacks.create("pgd", eps=0.1, steps=n, step_size=0.01),
        "pgd_detector": lambda n: attacks.create("pgd_detector", eps=0.1, detector=term, steps=n, step_size=0.01,
                                                 lambdas=(10.0,)),
        "pgd_detector (6 runs)": lambda n: attacks.create("pgd_detector", eps=0.1, detector=term, steps=n,
                                                          step_size=0.01, lambdas=(0.0, 10.0, 100.0),
                                                          guided_starts=1),
        "cw": lambda n: attacks.create("cw", binary_search_steps=1, max_iterations=n, learning_rate=0.05,
                                       abort_early=False),
    }
    for name, make in makers.items():
        x = data.to_float(ds.x_test[: BATCH[name]]).to(device)
        runs = 6 if name.endswith("(6 runs)") else 1
        it, fb = per_iteration(make, clf, x, x.repeat(runs, 1, 1, 1), k)
        print(f"{name}: {it / fb:.2f}× a forward+backward  ({1e3 * it:.1f} ms per iteration, "
              f"{1e3 * fb:.1f} ms per pass of {runs * len(x)} images)", flush=True)


if __name__ == "__main__":
    main()
