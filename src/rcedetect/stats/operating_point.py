"""Operating points of a detector at a fixed false-positive rate, with percentile-bootstrap intervals.

Pang, Du, Dong, Zhu (NeurIPS 2018) report threshold-free ROC-AUCs; a deployed detector, however, runs at
one threshold T, and what matters then is what an attacker still gets through. This module fixes T on
CLEAN HELD-OUT scores only (:func:`rcedetect.stats.metrics.threshold_for_fpr`, so T never depends on the attack
being evaluated) and reports, over the attacked images:

* the clean rejection rate and the true-positive rates (all attacked images, and the paper's pairs of
  :func:`rcedetect.stats.metrics.pair_mask`: clean correct AND adversarial misclassified);
* the attack success rate at N (SR@N) of Bryniarski, Hingun, Pachuca, Wang, Carlini, "Evading adversarial
  example detection defenses with orthogonal projected gradient descent" (ICLR 2022): among images whose
  clean version is classified correctly, the share where the attack succeeds AND the detector accepts;
* the accuracies with rejection of Tramèr, "Detecting adversarial examples is (nearly) as hard as
  classifying them" (ICML 2022): an attacked input counts correct when it is classified right OR rejected,
  a clean input when it is classified right AND accepted.

:func:`bootstrap_intervals` adds percentile-bootstrap intervals (Efron and Tibshirani, "An Introduction to
the Bootstrap", 1993, ch. 13) that resample both the attacked images and the held-out clean set, and
:func:`operating_points` rounds everything for ``results.json``.

Conventions (as :mod:`rcedetect.stats.metrics`): every score is "higher = more likely adversarial", an input is
REJECTED (answered NOT SURE) when ``score > T`` and accepted when ``score <= T``. Plain numpy; torch tensors
are accepted and moved to the CPU.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ..core.errors import InputError
from .metrics import as_array, as_scores, auc, pair_mask, threshold_for_fpr

MIN_PAIRS = 30
"""A result cell with fewer pairs than this is shown as "too few pairs (n)" and never counted as a
disagreement with the paper: with < 30 pairs one pair moves a rate by more than 3 points."""

MAX_UNDEFINED_SHARE = 0.05
"""A bootstrap interval is NaN when its statistic is undefined (an empty denominator) in more than this
share of the resamples; below it, the percentiles are taken over the resamples where it is defined."""

_CHUNK_ELEMENTS = 1 << 21  # resampled entries held at once by the vectorised bootstrap (bounds memory)


def adaptive_success(pred, y, accepted, success=None):
    """THE success rule of an attack on a classifier with a detector (SR@N of Bryniarski et al., ICLR 2022;
    protocol §14.1): the answer is neither the true label nor a rejection, i.e. the prediction is not in
    {y, reject}. ``pred``: predicted labels, ``y``: true labels, ``accepted``: the detector accepts (score <= T;
    for the K+1-class defended model of Carlini & Wagner 2017, ``pred != reject_class``); ``success``: where
    given, the attack's own goal in place of ``pred != y`` (e.g. "target reached"). Element-wise on numpy arrays
    or torch tensors alike (broadcasting, e.g. one row of ``accepted`` per bootstrap resample)."""
    won = (pred != y) if success is None else success
    return won & accepted


def too_few_pairs(n_pairs: int) -> bool:
    """True when a cell has fewer than :data:`MIN_PAIRS` pairs: the report then shows "too few pairs (n)"
    instead of the rates and never counts the cell as a disagreement with Pang et al. (NeurIPS 2018)."""
    return int(n_pairs) < MIN_PAIRS


def _check_fpr(fpr) -> float:
    if isinstance(fpr, bool) or not isinstance(fpr, (int, float, np.integer, np.floating)):
        raise InputError(f"fpr must be a number in [0, 1), got {fpr!r}")
    if not 0.0 <= float(fpr) < 1.0:
        raise InputError(f"fpr must be in [0, 1), got {fpr}")
    return float(fpr)


def _inputs(heldout_clean, clean, adv, y, pred_clean, pred_adv, success) -> dict:
    """Validated numpy copies of the common arguments, plus the masks every statistic needs."""
    h = as_scores(heldout_clean, "heldout_clean")
    if len(h) == 0:
        raise InputError("heldout_clean is empty: the threshold needs at least one clean held-out score")
    c, a = as_scores(clean, "clean"), as_scores(adv, "adv")
    y, pc, pa = as_array(y, "y"), as_array(pred_clean, "pred_clean"), as_array(pred_adv, "pred_adv")
    lengths = {"clean": len(c), "adv": len(a), "y": len(y), "pred_clean": len(pc), "pred_adv": len(pa)}
    s = None if success is None else as_array(success, "success")
    if s is not None:
        lengths["success"] = len(s)
    if len(set(lengths.values())) != 1:
        got = ", ".join(f"{k}={v}" for k, v in lengths.items())
        raise InputError(f"clean, adv, y, pred_clean, pred_adv (and success) must have one entry per attacked "
                         f"image, got lengths {got}")
    if s is None:
        won = None
    elif s.dtype == bool:
        won = s
    elif s.dtype.kind in "iuf" and np.isin(s, (0, 1)).all():
        won = s.astype(bool)
    else:
        raise InputError("success must be a boolean array (or 0/1), one flag per attacked image")
    return {"h": h, "c": c, "a": a, "y": y, "pc": pc, "pa": pa,
            "pair": pair_mask(y, pc, pa), "cc": pc == y, "won": won}


def _share(flags: np.ndarray, among: np.ndarray | None = None) -> float:
    """Mean of boolean ``flags`` (restricted to ``among``); NaN when nothing is counted."""
    if among is not None:
        flags = flags[among]
    return float(np.mean(flags)) if len(flags) else math.nan


def operating_point(heldout_clean, clean, adv, y, pred_clean, pred_adv, success=None,
                    fpr: float = 0.05) -> dict:
    """Detector behaviour at the threshold that rejects the share ``fpr`` of CLEAN HELD-OUT inputs.

    ``heldout_clean``: detector scores of clean held-out inputs, used ONLY to choose
    T = :func:`rcedetect.stats.metrics.threshold_for_fpr` (``heldout_clean``, ``fpr``), never the attacked images.
    Over the n attacked images: ``clean`` / ``adv`` are the scores of the clean and attacked version of each
    image, ``y`` the true labels, ``pred_clean`` / ``pred_adv`` the classifier's predictions, and ``success``
    the attack's own success flag (e.g. "target reached" for a targeted attack; None: ``pred_adv != y``).

    Returns a dict with:

    * ``threshold`` (T), ``fpr`` (requested), ``n_heldout``, ``n_images``;
    * ``clean_rejection_rate``: share of ``clean`` scores > T (the realised false-positive rate on the
      evaluated clean images, which may differ from ``fpr``);
    * ``tpr_all``: share of all attacked images rejected (``adv`` > T);
    * ``tpr_success``: share rejected among the pairs of Pang et al. (NeurIPS 2018), clean correct AND
      adversarial misclassified (:func:`rcedetect.stats.metrics.pair_mask`), NaN without pairs; ``n_pairs``;
    * ``auc``: strict ROC-AUC over the same pairs (:func:`rcedetect.stats.metrics.auc`, independent of T);
    * ``attack_success_rate``: SR@N of Bryniarski et al. (ICLR 2022), among the ``n_clean_correct`` images
      whose clean version is classified correctly, the share where the attack succeeded (``success``) AND
      ``adv`` <= T (accepted); NaN when no clean image is classified correctly;
    * ``robust_accuracy_with_rejection`` (Tramèr, ICML 2022): share of attacked inputs classified right
      (``pred_adv == y``) OR rejected;
    * ``clean_accuracy_with_rejection`` (Tramèr, ICML 2022): share of clean inputs classified right AND
      accepted (``clean`` <= T).

    Rates over zero images are NaN. Raises :class:`rcedetect.core.errors.InputError` on mismatched lengths,
    non-1-D arrays, NaN scores, an empty held-out set or ``fpr`` outside [0, 1).
    """
    fpr = _check_fpr(fpr)
    d = _inputs(heldout_clean, clean, adv, y, pred_clean, pred_adv, success)
    t = threshold_for_fpr(d["h"], fpr)
    c, a, pair, cc = d["c"], d["a"], d["pair"], d["cc"]
    rejected_adv, accepted_clean = a > t, c <= t
    return {
        "threshold": t,
        "fpr": fpr,
        "n_heldout": len(d["h"]),
        "n_images": len(c),
        "clean_rejection_rate": _share(~accepted_clean),
        "tpr_all": _share(rejected_adv),
        "tpr_success": _share(rejected_adv, pair),
        "n_pairs": int(pair.sum()),
        "auc": auc(c[pair], a[pair], "strict"),
        "attack_success_rate": _share(adaptive_success(d["pa"], d["y"], ~rejected_adv, d["won"]), cc),
        "n_clean_correct": int(cc.sum()),
        "robust_accuracy_with_rejection": _share((d["pa"] == d["y"]) | rejected_adv),
        "clean_accuracy_with_rejection": _share(cc & accepted_clean),
    }


def _counts(idx: np.ndarray, n: int) -> np.ndarray:
    """(B, n) multiplicities of each of the n entries in the B rows of resampled indices ``idx``."""
    b = idx.shape[0]
    flat = (idx + (np.arange(b, dtype=np.int64) * n)[:, None]).ravel()
    return np.bincount(flat, minlength=b * n).reshape(b, n)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.full(num.shape, math.nan)
    ok = den > 0
    out[ok] = num[ok] / den[ok]
    return out


def _resample_statistics(d: dict, fpr: float, heldout_idx: np.ndarray, image_idx: np.ndarray) -> dict:
    """AUC, ``tpr_success`` and SR@N on B resamples at once, exactly as :func:`operating_point` would give
    them on ``heldout_clean[heldout_idx[b]]`` and the attacked images ``image_idx[b]`` (b = 0..B-1).

    Threshold: the (m-1-⌊fpr·m⌋)-th smallest resampled held-out score (:func:`threshold_for_fpr`); since
    the sorted held-out scores are monotone in their rank, it is ``sorted_h[r-th smallest resampled rank]``
    (an integer partition instead of a sort of the scores).
    AUC: with w the multiplicity of each pair in the resample, sum_j w_j · (weight of pairs whose clean
    score is strictly below adv_j) / (sum w)², the weighted strict rank sum of :func:`rcedetect.stats.metrics.auc`.
    """
    order_h = np.argsort(d["h"], kind="stable")
    m = len(order_h)
    rank = np.empty(m, dtype=np.int64)
    rank[order_h] = np.arange(m)  # position of each held-out score in sorted order
    # rank of the order statistic threshold_for_fpr picks among m scores (0, ..., m-1 are their own values)
    r = int(threshold_for_fpr(np.arange(m, dtype=np.float64), fpr))
    t = d["h"][order_h][np.partition(rank[heldout_idx], r, axis=1)[:, r]][:, None]  # (B, 1)

    w = _counts(image_idx, len(d["c"]))
    pair, cc = d["pair"], d["cc"]
    c_p, a_p, w_p = d["c"][pair], d["a"][pair], w[:, pair]
    order = np.argsort(c_p, kind="stable")
    below = np.searchsorted(c_p[order], a_p, side="left")  # pairs with a clean score strictly below adv_j
    cum = np.zeros((w_p.shape[0], len(c_p) + 1), dtype=np.int64)
    np.cumsum(w_p[:, order], axis=1, out=cum[:, 1:])
    n_p = w_p.sum(axis=1)
    auc_b = _ratio((w_p * cum[:, below]).sum(axis=1).astype(np.float64), n_p.astype(np.float64) ** 2)
    tpr_b = _ratio((w_p * (a_p > t)).sum(axis=1), n_p)

    w_c, a_c = w[:, cc], d["a"][cc]
    won_c = None if d["won"] is None else d["won"][cc]
    sr_b = _ratio((w_c * adaptive_success(d["pa"][cc], d["y"][cc], a_c <= t, won_c)).sum(axis=1), w_c.sum(axis=1))
    return {"auc": auc_b, "tpr_success": tpr_b, "attack_success_rate": sr_b}


def _percentile_interval(values: np.ndarray, level: float) -> tuple[float, float]:
    defined = values[~np.isnan(values)]
    # the share of undefined resamples as one correctly rounded division: exactly 5 % (50 of 1000) equals
    # MAX_UNDEFINED_SHARE, whereas 1 − 950/1000 = 0.05000000000000004 would count it as exceeding it
    if len(defined) == 0 or (len(values) - len(defined)) / len(values) > MAX_UNDEFINED_SHARE:
        return (math.nan, math.nan)
    alpha = 1.0 - level
    lo, hi = np.quantile(defined, [alpha / 2.0, 1.0 - alpha / 2.0])
    return (float(lo), float(hi))


def bootstrap_intervals(heldout_clean, clean, adv, y, pred_clean, pred_adv, success=None, fpr: float = 0.05,
                        n_boot: int = 1000, seed: int = 0, level: float = 0.95,
                        resample_heldout: bool = True) -> dict:
    """Percentile-bootstrap intervals (Efron and Tibshirani, "An Introduction to the Bootstrap", 1993,
    ch. 13) for three statistics of :func:`operating_point`: the strict ``auc`` over the pairs
    (:func:`rcedetect.stats.metrics.auc`), ``tpr_success`` (TPR over the pairs at the held-out threshold) and
    ``attack_success_rate`` (SR@N of Bryniarski et al., ICLR 2022).

    Each of the ``n_boot`` resamples draws, with replacement, n attacked images (the clean and adversarial
    scores, labels, predictions and success flag of one image move together, so pairs stay pairs) AND,
    independently, the held-out clean set, on which the threshold is re-chosen
    (:func:`rcedetect.stats.metrics.threshold_for_fpr`): the intervals cover the uncertainty of T as well.
    The resamples are vectorised (n_boot = 1000 on 1,000 images takes a fraction of a second).
    ``resample_heldout=False`` keeps T fixed: the right interval for an ADAPTIVE attack, which optimised its images
    to sit just below that very T (a re-chosen T would reject them, but the attacker would have aimed at it).

    Returns ``{"auc": (lo, hi), "tpr_success": (lo, hi), "attack_success_rate": (lo, hi), "n_boot": n_boot,
    "level": level}``, the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of each statistic. A
    statistic is undefined in a resample holding no pair (AUC, TPR) or no clean-correct image (SR@N); such
    resamples are dropped, and the bounds are NaN when they exceed :data:`MAX_UNDEFINED_SHARE` (5 %) of the
    resamples (e.g. no or very few pairs). Seeded with ``numpy.random.default_rng(seed)``: the same inputs
    and seed give the same intervals.
    """
    fpr = _check_fpr(fpr)
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise InputError(f"n_boot must be a positive integer, got {n_boot!r}")
    if not 0.0 < float(level) < 1.0:
        raise InputError(f"level must be in (0, 1), got {level}")
    d = _inputs(heldout_clean, clean, adv, y, pred_clean, pred_adv, success)
    n, m = len(d["c"]), len(d["h"])
    keys = ("auc", "tpr_success", "attack_success_rate")
    out: dict = {}
    if n == 0:
        out = {k: (math.nan, math.nan) for k in keys}
    else:
        rng = np.random.default_rng(seed)
        chunk = max(1, _CHUNK_ELEMENTS // max(n, m))
        parts: dict[str, list[np.ndarray]] = {k: [] for k in keys}
        for start in range(0, int(n_boot), chunk):
            b = min(chunk, int(n_boot) - start)
            image_idx = rng.integers(0, n, size=(b, n))
            heldout_idx = (rng.integers(0, m, size=(b, m)) if resample_heldout
                           else np.broadcast_to(np.arange(m), (b, m)))
            for k, v in _resample_statistics(d, fpr, heldout_idx, image_idx).items():
                parts[k].append(v)
        out = {k: _percentile_interval(np.concatenate(parts[k]), float(level)) for k in keys}
    out.update(n_boot=int(n_boot), level=float(level))
    return out


def _rounded(v, digits: int = 6):
    """JSON-ready copy: floats rounded to ``digits``, NaN → None, tuples → lists, recursively."""
    if isinstance(v, dict):
        return {k: _rounded(x, digits) for k, x in v.items()}
    if isinstance(v, (tuple, list)):
        return [_rounded(x, digits) for x in v]
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return None if math.isnan(v) else round(float(v), digits)
    return v


def fpr_key(fpr: float) -> str:
    """Key of one operating point in ``results.json``: ``fpr_5`` for 0.05, ``fpr_1`` for 0.01."""
    return f"fpr_{fpr * 100:g}"


def operating_points(heldout_clean, clean, adv, y, pred_clean, pred_adv, success=None,
                     fprs: Sequence[float] = (0.05, 0.01), n_boot: int = 1000, seed: int = 0,
                     level: float = 0.95, resample_heldout: bool = True) -> dict:
    """:func:`operating_point` at each of ``fprs``, keyed by :func:`fpr_key` (``"fpr_5"``, ``"fpr_1"``), ready
    for ``results.json``: floats rounded to 6 digits, NaN → None, intervals as ``[lo, hi]`` lists.

    Each entry also carries ``too_few_pairs`` (:func:`too_few_pairs` of ``n_pairs``) and, when ``n_boot`` > 0,
    ``"bootstrap"``: the :func:`bootstrap_intervals` dict (same ``seed`` at every FPR, so the resamples are
    shared and the AUC interval is identical across FPRs). ``n_boot`` = 0 skips the bootstrap.
    """
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 0:
        raise InputError(f"n_boot must be a non-negative integer, got {n_boot!r}")
    fprs = [_check_fpr(f) for f in fprs]
    keys = [fpr_key(f) for f in fprs]
    if len(set(keys)) != len(keys):
        raise InputError(f"fprs give duplicate keys {keys}")
    out = {}
    for key, fpr in zip(keys, fprs):
        entry = operating_point(heldout_clean, clean, adv, y, pred_clean, pred_adv, success, fpr)
        entry["too_few_pairs"] = too_few_pairs(entry["n_pairs"])
        if n_boot > 0:
            entry["bootstrap"] = bootstrap_intervals(heldout_clean, clean, adv, y, pred_clean, pred_adv,
                                                     success, fpr, n_boot=n_boot, seed=seed, level=level,
                                                     resample_heldout=resample_heldout)
        out[key] = _rounded(entry)
    return out
