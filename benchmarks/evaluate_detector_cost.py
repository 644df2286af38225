"""What ``rcedetect.evaluate_detector`` costs beyond its attacks: network passes and seconds per image, per attack.

The standard version runs every attack that applies (PGD on the detector with a λ sweep, selective and orthogonal
PGD, PGD on the defended K+1 model, the gradient-free random search and Square), then judges their images, runs the
sanity checks (Carlini et al. 2019) and writes the card. This script runs it once on a small model (a ResNet-8 on
the 12x12 synthetic set, freshly initialised, or the run given by ``--run``) and then each of its attacks ALONE,
with the same settings, images, batches and detector term; it counts the images that go through the network
(a forward pre-hook on its first layer: every forward pass, the gradient's included, is counted once per image) and
the seconds, and prints per attack ``passes / image`` and ``s / image``, then

    evaluate_detector vs its attacks alone: N× the passes, M× the seconds   (goal: at most 1.2× the passes)

Timing follows ``_timing.py`` for the whole evaluation (one warm-up, median of ``--repeat``); each attack alone is
timed once after the warm-up. Nothing here asserts a number.

    python benchmarks/evaluate_detector_cost.py [--run RUN_DIR] [--n 64] [--steps 20] [--detector confidence]
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch
from _timing import median_time
from torch import nn

import rcedetect
from rcedetect import Classifier, data, models
from rcedetect.detectors.base import ScoreTerm
from rcedetect.evaluation import detector_runs
from rcedetect.evaluation.card import SanityWarning


class PassCounter:
    """Images through the network's first layer (forward passes, counted per image)."""

    def __init__(self, net: nn.Module):
        first = next(m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
        self.images = 0
        first.register_forward_pre_hook(self._count)

    def _count(self, module, inputs):
        self.images += int(inputs[0].shape[0])

    def take(self) -> int:
        n, self.images = self.images, 0
        return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default=None, help="a trained run folder; default: a fresh ResNet-8 on synthetic")
    ap.add_argument("--n", type=int, default=64, help="images attacked")
    ap.add_argument("--steps", type=int, default=20, help="every attack's steps (the standard version: 100)")
    ap.add_argument("--eps", type=float, default=0.1)
    ap.add_argument("--detector", default="confidence", help="a registered metric that needs no fit")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    ds = data.load("synthetic")
    if args.run:
        clf = rcedetect.load(args.run)
    else:
        torch.manual_seed(0)
        clf = Classifier(models.create("resnet8", in_channels=1, num_classes=ds.num_classes), "ce",
                         input_shape=(1, 12, 12)).eval()
    x, y, held = ds.test_images()[: args.n], ds.y_test[: args.n], ds.test_images()[-100:]
    counter = PassCounter(clf.net)
    kw = {"x_heldout": held, "eps": args.eps, "steps": args.steps, "batch_size": args.batch_size, "version": "standard"}

    def evaluate():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SanityWarning)
            return rcedetect.evaluate_detector(clf, args.detector, x, y, **kw)

    evaluate()  # warm-up
    counter.take()
    seconds, card = median_time(evaluate, repeat=args.repeat, warmup=0)
    passes = counter.take() / args.repeat
    det = rcedetect.Detector(clf, args.detector).fit(None)
    term = ScoreTerm(det.scorer, card.threshold)
    alone_passes = alone_seconds = 0.0
    print(f"{card!r}\n{'attack':<26} {'passes / image':>15} {'s / image':>10}")
    for name in card.attacks:
        factory = detector_runs.build(name, card.settings["attacks"][name], args.eps, 0, term)
        counter.take()
        t = time.perf_counter()
        for b, i in enumerate(range(0, len(x), args.batch_size)):
            factory(b)(clf, x[i : i + args.batch_size], y[i : i + args.batch_size])
        s, p = time.perf_counter() - t, counter.take()
        alone_passes += p
        alone_seconds += s
        print(f"{name:<26} {p / len(x):>15.1f} {s / len(x):>10.4f}")
    print(f"{'evaluate_detector':<26} {passes / len(x):>15.1f} {seconds / len(x):>10.4f}")
    print(f"evaluate_detector vs its attacks alone: {passes / alone_passes:.3g}× the passes, "
          f"{seconds / alone_seconds:.3g}× the seconds  (goal: at most 1.2× the passes)")


if __name__ == "__main__":
    main()
