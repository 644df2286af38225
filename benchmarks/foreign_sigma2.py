"""Which K-density σ² for a model the package did not train? The paper's value against the held-out choice.

The paper's bandwidths (1/0.26 for CE, 0.1/0.26 for RCE; protocol §4.3) were tuned to its ResNets' 64-d final
features. A user's network has another width and scale of features, so the question is measured here: two foreign
CE networks (a small CNN with 128-d ReLU features and an MLP with 512-d ones, plain PyTorch, wrapped with
``rcedetect.wrap``) are trained on the embedded mnist5k digits; K-density is fitted on every training image with
σ² = the paper's CE value, ``"auto"`` (maximum held-out likelihood, :func:`rcedetect.detectors.bandwidth.select_sigma2`)
and a grid from 1e-3 to 1e3; FGSM and BIM at ``--eps`` attack the first ``--n`` test images; the AUC is taken over
the pairs (clean correct, adversarial misclassified; protocol §4.6) and the TPR at a threshold that rejects 5 % of
the last 500 test images, which no attack touches. The features' scale (median squared distance from a test
feature to its nearest kernel point of the same class) is printed beside, as a hint to where σ² should lie::

    python benchmarks/foreign_sigma2.py            # about 3 minutes on one core
    python benchmarks/foreign_sigma2.py --out sigma2.json
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch
from torch import nn

import rcedetect
from rcedetect import attacks, data
from rcedetect.stats import metrics


def cnn128() -> nn.Module:
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(1, 16, 3, stride=2), nn.ReLU(), nn.Conv2d(16, 32, 3, stride=2),
                                      nn.ReLU(), nn.Flatten(), nn.Linear(32 * 6 * 6, 128), nn.ReLU())
            self.fc = nn.Linear(128, 10)

        def forward(self, x):
            return self.fc(self.body(x))

    return Net()


def mlp512() -> nn.Module:
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Flatten(), nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU())
            self.fc = nn.Linear(512, 10)

        def forward(self, x):
            return self.fc(self.body(x))

    return Net()


def train(net: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, seed: int) -> nn.Module:
    """Plain CE training with Adam, batch 64: how a user's model might have been trained."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (64,), generator=g)
        loss = nn.functional.cross_entropy(net(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


def feature_scale(clf, x_train, y_train, x_test, y_test) -> float:
    """Median squared distance from a test feature to its nearest training feature of the same class."""
    with torch.no_grad():
        zt, zq = clf.features(x_train), clf.features(x_test)
    d = [torch.cdist(zq[y_test == c], zt[y_train == c]).min(dim=1).values ** 2 for c in range(10)]
    return float(torch.cat(d).median())


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--eps", type=float, default=0.1)
    ap.add_argument("--n", type=int, default=400, help="attacked test images (the first n)")
    ap.add_argument("--steps", type=int, default=1500, help="training steps of each foreign network")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help="write the records as JSON")
    args = ap.parse_args(argv)
    torch.manual_seed(args.seed)
    ds = data.load("mnist5k")
    x_train, y_train = ds.train_images(), ds.y_train
    x_test, y_test = ds.test_images(), ds.y_test
    x, y, x_cal = x_test[: args.n], y_test[: args.n], x_test[-500:]
    grid = [1e-3, 1e-2, 0.1, 1.0, 1 / 0.26, 10.0, 100.0, 1e3]
    records = []
    for name, make in (("cnn128", cnn128), ("mlp512", mlp512)):
        t0 = time.perf_counter()
        clf = rcedetect.wrap(train(make(), x_train, y_train, args.steps, args.seed), head="fc", input_shape=(1, 28, 28))
        acc = float((clf.predict_batched(x_test) == y_test).float().mean())
        scale = feature_scale(clf, x_train, y_train, x_test, y_test)
        clean_pred = clf.predict_batched(x)
        advs = {a: attacks.create(a, eps=args.eps)(clf, x, y).x_adv for a in ("fgsm", "bim")}
        masks = {a: metrics.pair_mask(y.numpy(), clean_pred.numpy(), clf.predict_batched(v).numpy())
                 for a, v in advs.items()}
        for sigma2 in ["auto", *grid]:
            det = rcedetect.Detector(clf, "kd", per_class="all", sigma2=sigma2).fit(x_train, y_train)
            det.calibrate(x_cal, fpr=0.05)
            chosen = float(det.scorer.density.sigma2)
            s_clean = det.score(x).numpy()
            rec = {"model": name, "test_accuracy": round(acc, 4), "feature_scale": round(scale, 3),
                   "sigma2": sigma2 if sigma2 == "auto" else round(sigma2, 4), "sigma2_used": round(chosen, 4)}
            for a, v in advs.items():
                s_adv, m = det.score(v).numpy(), masks[a]
                rec[f"{a}_auc"] = round(100 * metrics.auc(s_clean[m], s_adv[m]), 1) if m.any() else math.nan
                rec[f"{a}_tpr"] = round(100 * float((s_adv[m] > det.threshold).mean()), 1) if m.any() else math.nan
                rec[f"{a}_pairs"] = int(m.sum())
            records.append(rec)
            print(json.dumps(rec), flush=True)
        print(f"# {name}: {time.perf_counter() - t0:.0f} s", flush=True)
    print("\n| model | accuracy | feature scale | σ² | used | FGSM AUC | FGSM TPR@5% | BIM AUC | BIM TPR@5% | pairs |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in records:
        print(f"| {r['model']} | {100 * r['test_accuracy']:.1f} | {r['feature_scale']} | {r['sigma2']} | "
              f"{r['sigma2_used']} | {r['fgsm_auc']} | {r['fgsm_tpr']} | {r['bim_auc']} | {r['bim_tpr']} | "
              f"{r['fgsm_pairs']} / {r['bim_pairs']} |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"eps": args.eps, "n": args.n, "steps": args.steps, "seed": args.seed, "records": records},
                      f, indent=1)


if __name__ == "__main__":
    main()
