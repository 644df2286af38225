"""Detection metrics of paper Table 2 (protocol §4.6): pair mask, ROC-AUC (strict and ½ tie rules), TPR at FPR.

Plain numpy code on score arrays (torch tensors are accepted and moved to the CPU). Scores follow the
package convention, higher = more likely adversarial. The AUC takes clean inputs as positives, as the
original ``auc_of_roc_RCE.m``: it is the probability that a clean input looks more normal (scores lower)
than an adversarial one, so a perfect detector gives 1.0 and nothing is symmetrised (AUC < 0.5 is possible).
"""

from __future__ import annotations

import math

import numpy as np

from ..core.errors import InputError

TIES = ("strict", "half")


def as_array(a, name: str, dtype=None) -> np.ndarray:
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    a = np.asarray(a, dtype=dtype)
    if a.ndim != 1:
        raise InputError(f"{name} must be 1-D, got shape {a.shape}")
    return a


def as_scores(a, name: str) -> np.ndarray:
    a = as_array(a, name, np.float64)
    if np.isnan(a).any():
        raise InputError(f"{name} contains NaN scores")
    return a


def pair_mask(y_true, pred_clean, pred_adv) -> np.ndarray:
    """Pairs kept for detection metrics: the clean input is classified correctly AND its adversarial
    counterpart is misclassified (``auc_of_roc_RCE.m`` line 48, protocol §4.6). Not "target reached"."""
    y, pc, pa = as_array(y_true, "y_true"), as_array(pred_clean, "pred_clean"), as_array(pred_adv, "pred_adv")
    if not (len(y) == len(pc) == len(pa)):
        raise InputError(f"y_true, pred_clean and pred_adv must have one entry per pair, got lengths "
                         f"{len(y)}, {len(pc)}, {len(pa)}")
    return (pc == y) & (pa != y)


def auc(scores_clean, scores_adv, ties: str = "strict") -> float:
    """ROC-AUC with clean inputs as positives (higher score = more likely adversarial).

    ``ties="strict"`` reproduces the original ``AUC.m`` (a stable rank sum with clean entries first, so a tie
    counts 0): P(s_clean < s_adv). ``ties="half"`` is the Mann-Whitney ½ rule of ``sklearn.metrics.roc_auc_score``:
    P(s_clean < s_adv) + ½ P(s_clean = s_adv). O(n log n) by sorting. NaN when either set is empty.
    """
    if ties not in TIES:
        raise InputError(f"ties must be one of {', '.join(TIES)}, got {ties!r}")
    c, a = as_scores(scores_clean, "scores_clean"), as_scores(scores_adv, "scores_adv")
    if len(c) == 0 or len(a) == 0:
        return math.nan
    c = np.sort(c)
    below = np.searchsorted(c, a, side="left").sum(dtype=np.float64)  # clean strictly lower than each adv
    if ties == "half":
        below_or_equal = np.searchsorted(c, a, side="right").sum(dtype=np.float64)
        below = 0.5 * (below + below_or_equal)
    return float(below / (len(c) * len(a)))


def threshold_for_fpr(scores_clean, fpr: float = 0.05) -> float:
    """Threshold T rejecting (score > T) the share ``fpr`` of ``scores_clean``: the largest T for which at most
    ⌊fpr·n⌋ clean scores exceed it, i.e. the (n − ⌊fpr·n⌋)-th smallest clean score. ``fpr`` = 0 gives the
    maximum (nothing rejected); ties can only lower the rejected share."""
    if not 0.0 <= fpr < 1.0:
        raise InputError(f"fpr must be in [0, 1), got {fpr}")
    c = np.sort(as_scores(scores_clean, "scores_clean"))
    if len(c) == 0:
        raise InputError("cannot choose a threshold from zero clean scores")
    k = math.floor(fpr * len(c) + 1e-9)
    return float(c[len(c) - 1 - k])


def tpr_at_fpr(scores_clean, scores_adv, fpr: float = 0.05) -> float:
    """Share of adversarial inputs detected (score > T) when T rejects the share ``fpr`` of clean inputs
    (:func:`threshold_for_fpr`). NaN when either set is empty."""
    c, a = as_scores(scores_clean, "scores_clean"), as_scores(scores_adv, "scores_adv")
    if len(c) == 0 or len(a) == 0:
        return math.nan
    return float(np.mean(a > threshold_for_fpr(c, fpr)))


def roc_curve(scores_clean, scores_adv) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC points (fpr, tpr, thresholds) of the rule "reject when score >= threshold": fpr = share of clean
    inputs rejected, tpr = share of adversarial inputs detected, one point per distinct score plus (0, 0).
    The trapezoidal area under it equals :func:`auc` with ``ties="half"``."""
    c, a = as_scores(scores_clean, "scores_clean"), as_scores(scores_adv, "scores_adv")
    if len(c) == 0 or len(a) == 0:
        raise InputError("a ROC curve needs at least one clean and one adversarial score")
    thresholds = np.unique(np.concatenate([c, a]))[::-1]
    c, a = np.sort(c), np.sort(a)
    fpr = (len(c) - np.searchsorted(c, thresholds, side="left")) / len(c)
    tpr = (len(a) - np.searchsorted(a, thresholds, side="left")) / len(a)
    return (np.concatenate([[0.0], fpr]), np.concatenate([[0.0], tpr]),
            np.concatenate([[np.inf], thresholds]))


def detection_record(scores_clean, scores_adv, mask=None, fpr: float = 0.05) -> dict:
    """Table-2 metrics over the pairs selected by ``mask`` (see :func:`pair_mask`; None keeps all pairs):
    ``auc_strict``, ``auc_half``, ``tpr_at_5fpr`` (at ``fpr``), ``n_pairs`` and ``score_summary`` (mean and
    median score of the clean and of the adversarial side). No pairs gives NaN metrics."""
    c, a = as_scores(scores_clean, "scores_clean"), as_scores(scores_adv, "scores_adv")
    if len(c) != len(a):
        raise InputError(f"clean and adversarial scores must be paired, got {len(c)} and {len(a)}")
    if mask is not None:
        m = as_array(mask, "mask").astype(bool)
        if len(m) != len(c):
            raise InputError(f"mask has {len(m)} entries for {len(c)} pairs")
        c, a = c[m], a[m]
    key = "tpr_at_5fpr" if fpr == 0.05 else f"tpr_at_{fpr:g}fpr"
    return {"auc_strict": auc(c, a, "strict"), "auc_half": auc(c, a, "half"), key: tpr_at_fpr(c, a, fpr),
            "n_pairs": len(c), "score_summary": {"clean": _summary(c), "adversarial": _summary(a)}}


def _summary(s: np.ndarray) -> dict:
    """Mean and median score (None without scores): what an AUC below 50 is read against."""
    return {"mean": float(np.mean(s)) if len(s) else None, "median": float(np.median(s)) if len(s) else None}


def wilson_interval(k: int, n: int, level: float = 0.95) -> tuple[float, float] | tuple[None, None]:
    """Wilson score interval of a share k/n (Wilson 1927): for counts whose resampling is not meaningful to
    redo (the worst case over attacks, given the threshold). (None, None) for n = 0.

    The bounds are (p + z²/2n ∓ z √(p(1 − p)/n + z²/4n²)) / (1 + z²/n) with p = k/n and z the (1 + level)/2 normal
    quantile; they are exactly 0 for k = 0 and exactly 1 for k = n (where the formula leaves rounding errors of
    either sign, e.g. 0.9999999999999999 for 3 of 3 at 50 %, an interval missing its own k/n)."""
    from statistics import NormalDist

    if n <= 0:
        return None, None
    if not 0 <= k <= n:
        raise InputError(f"a share k/n needs 0 <= k <= n, got k={k}, n={n}")
    zq = NormalDist().inv_cdf(0.5 + level / 2)
    p = k / n
    centre = (p + zq * zq / (2 * n)) / (1 + zq * zq / n)
    half = zq * math.sqrt(p * (1 - p) / n + zq * zq / (4 * n * n)) / (1 + zq * zq / n)
    return (0.0 if k == 0 else centre - half), (1.0 if k == n else centre + half)


def mean_interval(values, level: float = 0.95, n_boot: int = 1000, seed: int = 0
                  ) -> tuple[float, float] | tuple[None, None]:
    """Percentile-bootstrap interval of the mean of ``values`` (Efron and Tibshirani 1993): ``n_boot`` seeded
    resamples with replacement. (None, None) for no values; one value gives a zero-width interval."""
    v = np.asarray(values, dtype=np.float64).ravel()
    if len(v) == 0:
        return None, None
    g = np.random.default_rng(seed)
    means = v[g.integers(0, len(v), size=(n_boot, len(v)))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)
