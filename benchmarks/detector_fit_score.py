"""Fit and score time of every detector on one trained model, beside K-density and beside plain references.

For a model folder (``rce train`` output, or ``runs/demo/models/ce-<hash>`` of ``rce reproduce``) and its dataset:

- **fit**: ``Detector(clf, name).fit(train images, labels)`` — feature extraction included; for LID, Mahalanobis and
  KD+BU also the FGSM fitting split and the logistic regression (protocol §15);
- **score, images**: ``Detector.score(test images)`` — one forward pass included (Mahalanobis with input
  pre-processing: its extra passes);
- **score, cached features**: ``score_features`` on a bank that already holds the layers (what ``rce reproduce``
  does for every attack record), where the detector can score features;
- **references**, on the same cached activations and fitted statistics: LID as Ma et al.'s code computes it
  (``scipy.spatial.distance.cdist``, a full sort, numpy), Mahalanobis as Lee et al.'s (``sklearn.covariance.
  EmpiricalCovariance`` on class-centred features, numpy distances per class), K-density as Feinman et al.'s
  (``sklearn.neighbors.KernelDensity`` per class, batched ``score_samples``). Each prints our time, the
  reference's, their ratio and the largest score difference (agreement).

Medians of ``--repeat`` runs (3) for scores; fits run once (they are minutes on full MNIST). Run alone: two torch
jobs on the same cores slow each other several-fold.

Run: ``python benchmarks/detector_fit_score.py RUN_DIR [--data-dir DIR] [--n-score 2000] [--threads 1]``.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch
from _timing import median_time

from rcedetect import data
from rcedetect.detectors import Detector, score_features
from rcedetect.detectors.lid import lid_mle
from rcedetect.detectors.mahalanobis import squared_distances, tied_gaussian
from rcedetect.models import checkpoint
from rcedetect.models.features import extract


def lid_reference(acts: np.ndarray, ref: np.ndarray, k: int) -> np.ndarray:
    """Ma et al.'s mle_batch: cdist, sort, the k nearest, −1 / mean log(r_i / r_k)."""
    from scipy.spatial.distance import cdist

    d = np.sort(cdist(acts, ref), axis=1)[:, :k]
    return -1.0 / np.mean(np.log(d / d[:, -1:] + 1e-12), axis=1)


def mahalanobis_reference(f_train: np.ndarray, y: np.ndarray, f: np.ndarray, classes: int) -> np.ndarray:
    """Lee et al.'s sample_estimator + confidence: EmpiricalCovariance of class-centred features, then
    max_c −(f − μ_c)ᵀ P (f − μ_c) computed class by class."""
    from sklearn.covariance import EmpiricalCovariance

    means = np.stack([f_train[y == c].mean(0) for c in range(classes)])
    cov = EmpiricalCovariance(assume_centered=False).fit(f_train - means[y])
    p = cov.precision_
    scores = [-np.einsum("nd,de,ne->n", f - means[c], p, f - means[c]) for c in range(classes)]
    return np.max(np.stack(scores, 1), axis=1)


def kd_reference(kernels: list[np.ndarray], sigma2: float, z: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Feinman et al.'s per-class sklearn KDE, batched per class; normalising constant removed."""
    from sklearn.neighbors import KernelDensity as SkKDE

    h, out = float(np.sqrt(sigma2 / 2)), np.empty(len(z))
    for c, pts in enumerate(kernels):
        sel = pred == c
        if sel.any():
            kde = SkKDE(kernel="gaussian", bandwidth=h).fit(pts)
            out[sel] = kde.score_samples(z[sel]) + 0.5 * z.shape[1] * np.log(np.pi * sigma2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir")
    ap.add_argument("--data-dir")
    ap.add_argument("--n-score", type=int, default=2000)
    ap.add_argument("--fit-images", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ckpt = checkpoint.load(args.run_dir)
    clf, cfg = ckpt.classifier, ckpt.config
    ds = data.load(cfg["dataset"], data_dir=args.data_dir or cfg.get("data_dir") or None)
    x_train, y_train = ds.train_images(), ds.y_train
    x = ds.test_images()[: args.n_score]
    print(f"{platform.machine()}, torch {torch.__version__}, {args.threads} thread(s); model {cfg['arch']} "
          f"{cfg['objective']} on {ds.name}: {len(x_train)} training images, {len(x)} scored")
    fit_kw = {"fit_images": args.fit_images, "fit_eps": 0.16}
    detectors = {"confidence": {}, "non_me": {}, "kd": {"per_class": 1000},
                 "kd_bu": {**fit_kw, "per_class": 1000}, "lid": fit_kw,
                 "mahalanobis": {**fit_kw, "noise": 0.0}, "mahalanobis+pre": fit_kw}
    print(f"\n{'detector':18s} {'fit s':>8s} {'score img/s':>12s} {'score feat/s':>13s}")
    fitted = {}
    for label, kw in detectors.items():
        name = label.split("+")[0]
        det = Detector(clf, name, **kw)
        t0 = time.perf_counter()
        det.fit(x_train if det.scorer.needs_fit else None, y_train if det.scorer.needs_fit else None)
        fit_s = time.perf_counter() - t0
        t_img, _ = median_time(lambda det=det: det.score(x), args.repeat)
        feat = "–"
        if not det.scorer.needs_images:
            bank = extract(clf, x, layers=det.scorer.layers)
            t_feat, _ = median_time(lambda det=det, bank=bank: score_features(det.scorer, clf, bank), args.repeat)
            feat = f"{len(x) / t_feat:13,.0f}"
        extra = f"   (pre-processing ε {det.scorer.noise:g})" if label == "mahalanobis+pre" else ""
        print(f"{label:18s} {fit_s:8.1f} {len(x) / t_img:12,.0f} {feat:>13s}{extra}")
        fitted[label] = det

    print("\nagainst plain references on the same cached activations (median of "
          f"{args.repeat}; ratio = reference / ours)")
    lid = fitted["lid"].scorer
    bank = extract(clf, x, layers=lid.layers)
    for layer in lid.layers:
        a, ref = bank.layer(layer), lid.reference[layer].cpu()
        t_ours, ours = median_time(lambda a=a, ref=ref: lid_mle(a, ref, lid.k), args.repeat)
        t_ref, want = median_time(lambda a=a, ref=ref: lid_reference(a.double().numpy(), ref.double().numpy(), lid.k),
                                  args.repeat)
        print(f"LID {layer:12s} ours {t_ours * 1e3:8.1f} ms  scipy {t_ref * 1e3:8.1f} ms  ×{t_ref / t_ours:5.1f}  "
              f"max |Δ| {np.max(np.abs(ours.numpy() - want)):.2e}")
    maha = fitted["mahalanobis"].scorer
    train_bank = extract(clf, x_train[: len(x_train) - maha.fit_split_size(len(x_train))],
                         y_train[: len(x_train) - maha.fit_split_size(len(x_train))], layers=maha.layers)
    for layer in maha.layers:
        f_tr, f = train_bank.layer(layer), bank.layer(layer)
        lab = train_bank.labels

        def ours_fn(f_tr=f_tr, f=f, lab=lab):
            mu, p = tied_gaussian(f_tr, lab, clf.num_classes, shrinkage=0.0)
            return -squared_distances(f, mu, p).amin(1)

        t_ours, ours = median_time(ours_fn, args.repeat)
        t_ref, want = median_time(lambda f_tr=f_tr, f=f, lab=lab: mahalanobis_reference(
            f_tr.double().numpy(), lab.numpy(), f.double().numpy(), clf.num_classes), args.repeat)
        rel = np.max(np.abs(ours.numpy() - want) / (np.abs(want) + 1.0))
        print(f"Mahalanobis {layer:6s} fit+score ours {t_ours * 1e3:8.1f} ms  sklearn {t_ref * 1e3:8.1f} ms  "
              f"×{t_ref / t_ours:5.1f}  max rel. |Δ| {rel:.2e}")
    kd = fitted["kd"].scorer.density
    zb = extract(clf, x)
    pred = zb.predictions
    kernels = [kd.kernels[c, : int(kd.counts[c])].double().numpy() for c in range(kd.num_classes)]
    t_ours, ours = median_time(lambda: kd.log_kd(zb.features, pred), args.repeat)
    t_ref, want = median_time(lambda: kd_reference(kernels, kd.sigma2, zb.features.double().numpy(), pred.numpy()),
                              args.repeat)
    print(f"K-density         ours {t_ours * 1e3:8.1f} ms  sklearn {t_ref * 1e3:8.1f} ms  ×{t_ref / t_ours:5.1f}  "
          f"max |Δ| {np.max(np.abs(ours.double().numpy() - want)):.2e}")


if __name__ == "__main__":
    main()
