"""Scoring an attack run: the record behind paper Table 2 (Table 3 for C&W-wb, Table 4 for transferred images).

One function for every caller (``rce attack``, ``rce reproduce``, the black-box transfer of :mod:`.transfer`):
the features of the adversarial images, the pair mask of :func:`rcedetect.stats.metrics.pair_mask` (clean correct AND
adversarial misclassified, protocol §4.6), each detector's AUCs and TPR over those pairs, accuracy and distortion.
"""

from __future__ import annotations

import math

import torch

from ..attacks.base import AttackResult, l2_distortion
from ..core.errors import InputError
from ..detectors.base import Metric, score_any
from ..detectors.kd import KDensity
from ..models import features
from ..models.classifier import FINAL
from ..stats import metrics
from ..stats.operating_point import operating_points


def rounded(v: float | None, digits: int = 6) -> float | None:
    """A number as results files store it: rounded, NaN as None."""
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else round(float(v), digits)


def roc_points(s_clean, s_adv, mask, most: int = 60) -> dict | None:
    """The ROC curve over the pairs (:func:`rcedetect.stats.metrics.roc_curve`), thinned to at most ``most`` points."""
    import numpy as np

    m = torch.as_tensor(mask, dtype=torch.bool)
    if not m.any():
        return None
    fpr, tpr, _ = metrics.roc_curve(s_clean[m], s_adv[m])
    keep = np.unique(np.linspace(0, len(fpr) - 1, min(most, len(fpr))).round().astype(int))
    return {"fpr": [round(float(v), 4) for v in fpr[keep]], "tpr": [round(float(v), 4) for v in tpr[keep]]}


def pair_scores(s_clean, s_adv, mask) -> dict:
    """{"clean": [...], "adv": [...]}: the scores of the pairs (clean correct AND adversarial misclassified), in
    image order, exact to float32 (9 significant digits): what an AUC across seeds resamples
    (:mod:`rcedetect.stats.replication`)."""
    m = torch.as_tensor(mask, dtype=torch.bool)
    return {side: [float(f"{float(v):.9g}") for v in torch.as_tensor(s)[m]] for side, s in (("clean", s_clean),
                                                                                           ("adv", s_adv))}


def layers_of(detectors: dict[str, Metric]) -> list[str]:
    """The intermediate layers any of ``detectors`` reads (what an adversarial bank must hold)."""
    return [n for n in dict.fromkeys(n for m in detectors.values() for n in m.layers) if n != FINAL]


def detection(classifier, clean: features.FeatureBank, adv: features.FeatureBank, y: torch.Tensor,
              detectors: dict[str, Metric], heldout: dict[str, torch.Tensor] | None = None, n_boot: int = 1000,
              seed: int = 0, roc: bool = False, x_clean: torch.Tensor | None = None,
              x_adv: torch.Tensor | None = None) -> tuple[dict, dict[str, torch.Tensor]]:
    """({metric: record}, {metric: adversarial scores}): per detector the Table-2 numbers over the pairs (AUC
    strict and ½, TPR at 5 % FPR of the pairs' own clean scores, n_pairs) and, given the scores of clean held-out
    images (``heldout``), its operating points at 5 % and 1 % FPR with bootstrap intervals
    (:func:`rcedetect.stats.operating_point.operating_points`: thresholds from the held-out images alone); ``roc`` adds
    the ROC curve over the pairs and the pairs' own scores (:func:`pair_scores`). Detectors that must see images
    (input pre-processing) score ``x_clean`` and
    ``x_adv``; the others score the banks."""
    mask = metrics.pair_mask(y, clean.predictions, adv.predictions)
    out, adv_scores = {}, {}
    for name, metric in detectors.items():
        s_clean = score_any(metric, classifier, clean, x_clean)
        s_adv = score_any(metric, classifier, adv, x_adv)
        rec = metrics.detection_record(s_clean, s_adv, mask)
        summary = {side: {k: rounded(v) for k, v in stats.items()} for side, stats in rec.pop("score_summary").items()}
        out[name] = {**{k: (rounded(v) if k != "n_pairs" else v) for k, v in rec.items()}, "score_summary": summary}
        if heldout is not None:
            out[name]["operating_points"] = operating_points(heldout[name], s_clean, s_adv, y, clean.predictions,
                                                             adv.predictions, n_boot=n_boot, seed=seed)
        if roc:
            out[name]["roc"] = roc_points(s_clean, s_adv, mask)
            out[name]["pair_scores"] = pair_scores(s_clean, s_adv, mask)
        adv_scores[name] = s_adv
    return out, adv_scores


def score_attack(classifier, res: AttackResult, y: torch.Tensor, clean: features.FeatureBank,
                 detectors: dict[str, Metric], *, keep_kd_values: bool = False, all_kd_values: bool = False,
                 heldout: dict[str, torch.Tensor] | None = None, n_boot: int = 1000, roc: bool = False) -> dict:
    """The Table-2 record of one attack run on ``classifier`` (``clean`` = the bank of the attacked clean images).

    ``keep_kd_values`` adds ``log_kd_adv`` (log K-density of the adversarial images of the pairs, or of all images
    with ``all_kd_values``) for the K-density histograms of Appendix B.3; ``_efficient_l2`` = (mean L2 over the
    images that succeeded and were correct when clean, their count) feeds Figure 2b. ``heldout`` adds each
    detector's operating points (:func:`detection`).
    """
    adv = features.extract(classifier, res.x_adv, layers=layers_of(detectors))
    y = y.cpu()
    pred_clean, pred_adv = clean.predictions.cpu(), adv.predictions.cpu()
    mask = metrics.pair_mask(y, pred_clean, pred_adv)
    det, adv_scores = detection(classifier, clean, adv, y, detectors, heldout, n_boot, roc=roc, x_clean=res.x,
                                x_adv=res.x_adv)
    l2 = l2_distortion(res.x.cpu(), res.x_adv.cpu())
    correct = pred_clean == y
    efficient = res.success.cpu() & correct
    record = {
        "n_images": len(y), "n_pairs": int(mask.sum()),
        "accuracy": rounded(float((pred_adv == y).float().mean())),
        "clean_accuracy": rounded(float(correct.float().mean())),
        "success_rate": rounded(float(res.success.float().mean())),
        "mean_l2": rounded(float(l2[torch.from_numpy(mask)].mean())) if mask.any() else None,
        "detection": det,
    }
    if res.target is not None and "target_reached" in res.extra:
        record["target_rate"] = rounded(float(res.extra["target_reached"].float().mean()))
    if keep_kd_values and "kd" in adv_scores:
        sel = torch.ones(len(y), dtype=torch.bool) if all_kd_values else torch.from_numpy(mask)
        record["log_kd_adv"] = [round(float(v), 4) for v in KDensity.log_kd(adv_scores["kd"][sel])]
    record["_efficient_l2"] = (rounded(float(l2[efficient].mean())) if efficient.any() else None,
                               int(efficient.sum()))
    return record


def transfer_record(target, res: AttackResult, y: torch.Tensor, clean_target: features.FeatureBank,
                    detectors: dict[str, Metric], heldout: dict[str, torch.Tensor] | None = None,
                    n_boot: int = 1000) -> dict:
    """Black-box transfer (paper §4.5, protocol §8): images crafted on a substitute, scored on ``target``.

    Pairs are formed with the *target*'s predictions; ``transfer_rate`` = among images the substitute fooled and
    the target classifies correctly when clean, the share the target misclassifies (None when there are none).
    """
    adv = features.extract(target, res.x_adv, layers=layers_of(detectors))
    y = y.cpu()
    mask = metrics.pair_mask(y, clean_target.predictions, adv.predictions)
    det, _ = detection(target, clean_target, adv, y, detectors, heldout, n_boot, x_clean=res.x, x_adv=res.x_adv)
    ok = res.success.cpu() & (clean_target.predictions == y)
    rate = float((adv.predictions[ok] != y[ok]).float().mean()) if ok.any() else None
    return {"n_images": len(y), "n_pairs": int(mask.sum()), "n_substitute_success": int(ok.sum()),
            "transfer_rate": rounded(rate), "detection": det}


def table3_stats(result: AttackResult, y_true: torch.Tensor, pred_clean: torch.Tensor) -> dict[str, float]:
    """Paper Table 3 from a C&W-wb result (protocol §7), with the definitions stated explicitly:

    - ``ratio_f2_positive``: among examples whose clean image is correctly classified AND whose returned x*
      reaches the target, the fraction with f2 = −log KD_t(x*) − η_t > 0 (the detector was not fooled);
    - ``mean_distortion``: ‖x − x*‖₂/√d on [0, 255], averaged over "efficient" examples (success, i.e.
      target reached and f2 ≤ 0, AND clean image correct), as ``test_adv.py`` prints it; ``distortion_interval``
      its percentile-bootstrap 95 % interval (:func:`rcedetect.stats.metrics.mean_interval`).
    """
    if "f2" not in result.extra or "target_reached" not in result.extra:
        raise InputError("table3_stats needs a C&W-wb result (extra['f2'] and extra['target_reached'])")
    dev = result.success.device
    y_true, pred_clean = y_true.to(dev), pred_clean.to(dev)
    correct = pred_clean == y_true
    reached = result.extra["target_reached"] & correct
    efficient = result.success & correct
    f2_pos = (result.extra["f2"] > 0) & reached
    l2 = l2_distortion(result.x, result.x_adv)
    n_reached = int(reached.sum())
    n_eff = int(efficient.sum())
    return {
        "n": len(result),
        "n_correct": int(correct.sum()),
        "n_target_reached": n_reached,
        "ratio_f2_positive": float(f2_pos.sum()) / n_reached if n_reached else math.nan,
        "n_efficient": n_eff,
        "success_rate": float(efficient.sum()) / max(1, int(correct.sum())),
        "mean_distortion": float(l2[efficient].mean()) if n_eff else math.nan,
        "distortion_interval": metrics.mean_interval(l2[efficient].cpu().numpy()),
    }
