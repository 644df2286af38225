"""Our FGSM / BIM against foolbox 3's LinfFastGradientAttack / LinfBasicIterativeAttack, side by side in one run,
plus the cost per example of ILCM and JSMA (paper Table 5 reports seconds per example on a P100).

Same model (a paper ResNet, random weights, eval mode), same images, the true labels, no random start. Runs
alternate ours / foolbox so load drifts hit both, after one warm-up call of each; we print the medians, the max
|difference| and, as every script here, ``<attack> vs foolbox: N×`` with N = foolbox time / our time.

    python benchmarks/attacks_gradient_vs_foolbox.py [--arch resnet32] [--shape 1,28,28] [--batch 100]
        [--eps 0.16] [--repeats 3] [--jsma-images 10] [--device auto]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from _timing import ratio_line

from rcedetect import Classifier, models
from rcedetect.attacks.gradient import BIM, FGSM, ILCM
from rcedetect.attacks.jsma import JSMA
from rcedetect.core.device import resolve


def timed(fn, device):
    t0 = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return out, time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="resnet32")
    p.add_argument("--shape", default="1,28,28")
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--eps", type=float, default=0.16)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--jsma-images", type=int, default=10)
    p.add_argument("--device", default="auto")
    a = p.parse_args()
    import foolbox as fb

    device = resolve(a.device)
    c, h, w = (int(v) for v in a.shape.split(","))
    torch.manual_seed(0)
    clf = Classifier(models.create(a.arch, in_channels=c, num_classes=10), "rce").to(device).eval()
    x = torch.rand(a.batch, c, h, w, device=device)
    y = torch.randint(0, 10, (a.batch,), device=device)
    fmodel = fb.PyTorchModel(clf, bounds=(0.0, 1.0))
    pairs = {
        "fgsm": (lambda: FGSM(a.eps, label="true")(clf, x, y).x_adv,
                 lambda: fb.attacks.LinfFastGradientAttack(random_start=False)(fmodel, x, y, epsilons=a.eps)[1]),
        "bim": (lambda: BIM(a.eps, label="true")(clf, x, y).x_adv,
                lambda: fb.attacks.LinfBasicIterativeAttack(abs_stepsize=a.eps / 10, steps=10, random_start=False)(
                    fmodel, x, y, epsilons=a.eps)[1]),
    }
    report = {"device": str(device), "arch": a.arch, "shape": [c, h, w], "batch": a.batch, "eps": a.eps}
    for name, (ours, theirs) in pairs.items():
        ours(), theirs()  # warm-up
        t_ours, t_fb, diff = [], [], 0.0
        for _ in range(a.repeats):
            xo, to = timed(ours, device)
            xf, tf = timed(theirs, device)
            t_ours.append(to)
            t_fb.append(tf)
            diff = max(diff, float((xo - xf).abs().max()))
        mo, mf = statistics.median(t_ours), statistics.median(t_fb)
        report[name] = {"ours_s_per_example": mo / a.batch, "foolbox_s_per_example": mf / a.batch,
                        "foolbox_over_ours": mf / mo, "max_abs_diff": diff}
    _, t = timed(lambda: ILCM(a.eps)(clf, x), device)
    report["ilcm"] = {"ours_s_per_example": t / a.batch}
    xj = x[: a.jsma_images]
    res, t = timed(lambda: JSMA(a.eps)(clf, xj), device)
    report["jsma"] = {"ours_s_per_example": t / len(xj), "mean_steps": float(res.iterations.float().mean())}
    print(json.dumps(report, indent=1))
    for name in pairs:
        print(ratio_line(name, "foolbox", report[name]["foolbox_s_per_example"], report[name]["ours_s_per_example"],
                         f"max |ours - foolbox| = {report[name]['max_abs_diff']:.1e}"))


if __name__ == "__main__":
    main()
