"""Intervals across trained models and images: seeds as the unit of replication (protocol §21).

A number measured on one trained model has two sources of chance: which images were attacked, and which model the
training seed gave. The image bootstrap of :mod:`.operating_point` covers the first only. Here the statistic of
every seed is recomputed under a **two-level bootstrap** (Davison and Hinkley, "Bootstrap Methods and their
Application", 1997, §3.8, resampling both stages of a hierarchy): each resample draws S seeds with replacement
from the S trained models, then, independently for each drawn seed, that seed's images with replacement; the
resample's value is the mean over its drawn seeds of the statistic. The interval is the percentile interval of
those values, the point estimate the plain mean over seeds.

- :func:`two_level_share` for a share k/n per seed (an error rate, SR@5): resampling n images of which k are
  successes draws Binomial(n, k/n) successes, so the image level is drawn as that binomial (the same
  distribution as resampling the 0/1 outcomes, without them). A percentile bootstrap of a share that is 0 or 1
  on every seed has zero width, so the interval is widened to contain the Wilson interval of the pooled counts
  (Σk of Σn): never narrower than what the images alone allow;
- :func:`two_level_auc` for an AUC per seed from that seed's clean and adversarial scores of its pairs (a pair,
  clean and adversarial score of one image, moves as one);
- :func:`agreement` counts the seeds on which a verdict holds.

With one seed, the image level alone remains (a plain bootstrap of that model's images); with one image per
seed, the seed level alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ..core.errors import InputError
from .metrics import auc, wilson_interval

LEVEL = 0.95


def _check(n_boot: int, level: float) -> None:
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise InputError(f"n_boot must be a positive integer, got {n_boot!r}")
    if not 0.0 < float(level) < 1.0:
        raise InputError(f"level must be in (0, 1), got {level!r}")


def percentile_interval(values: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """The (1 - level)/2 and (1 + level)/2 quantiles of the defined (non-NaN) ``values``; NaN when none is."""
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    if len(v) == 0:
        return (math.nan, math.nan)
    lo, hi = np.quantile(v, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    return (float(lo), float(hi))


def _summary(per_seed: list[float], draws: np.ndarray, level: float, n_boot: int) -> dict:
    defined = [v for v in per_seed if not math.isnan(v)]
    lo, hi = percentile_interval(draws, level)
    return {"mean": float(np.mean(defined)) if defined else math.nan, "low": lo, "high": hi,
            "per_seed": [float(v) for v in per_seed], "n_seeds": len(per_seed), "n_boot": int(n_boot),
            "level": float(level)}


def two_level_share(k: Sequence[int], n: Sequence[int], n_boot: int = 1000, seed: int = 0,
                    level: float = LEVEL) -> dict:
    """Mean over seeds of k_s/n_s with its two-level percentile-bootstrap interval.

    Returns ``{"mean", "low", "high", "per_seed", "n_seeds", "n_boot", "level"}``; (low, high) is the percentile
    interval widened to contain the Wilson interval of Σk of Σn (module docstring). A seed with n_s = 0 has no
    share (NaN in ``per_seed``) and is left out of the mean; a resample drawing only such seeds is dropped.
    Seeded with ``numpy.random.default_rng(seed)``: resample b draws its seed indices, then one binomial per drawn
    seed, in that order.
    """
    _check(n_boot, level)
    raw_k, raw_n = np.asarray(k, dtype=np.float64), np.asarray(n, dtype=np.float64)
    if not (np.isfinite(raw_k).all() and np.isfinite(raw_n).all() and (raw_k == np.round(raw_k)).all()
            and (raw_n == np.round(raw_n)).all()):
        raise InputError(f"k and n must be whole counts, got {raw_k.tolist()} and {raw_n.tolist()}")
    k, n = raw_k.astype(np.int64), raw_n.astype(np.int64)
    if k.ndim != 1 or k.shape != n.shape or len(k) == 0:
        raise InputError(f"k and n must be equal-length non-empty lists of counts, got {k.tolist()} and {n.tolist()}")
    if (n < 0).any() or (k < 0).any() or (k > n).any():
        raise InputError(f"every count must satisfy 0 <= k <= n, got k={k.tolist()}, n={n.tolist()}")
    s = len(k)
    p = np.divide(k, n, out=np.full(s, np.nan), where=n > 0)
    rng = np.random.default_rng(seed)
    draws = np.empty(int(n_boot))
    for b in range(int(n_boot)):
        pick = rng.integers(0, s, size=s)
        keep = pick[n[pick] > 0]
        if len(keep) == 0:
            draws[b] = math.nan
            continue
        draws[b] = float(np.mean(rng.binomial(n[keep], p[keep]) / n[keep]))
    out = _summary(p.tolist(), draws, level, n_boot)
    lo, hi = wilson_interval(int(k[n > 0].sum()), int(n[n > 0].sum()), level)
    if lo is not None and not math.isnan(out["low"]):  # never narrower than the pooled images' own interval
        out["low"], out["high"] = min(out["low"], lo), max(out["high"], hi)
    return out


def two_level_auc(clean: Sequence[Sequence[float]], adv: Sequence[Sequence[float]], n_boot: int = 1000,
                  seed: int = 0, level: float = LEVEL) -> dict:
    """Mean over seeds of the strict AUC (:func:`rcedetect.stats.metrics.auc`) of each seed's pairs, with its
    two-level interval: ``clean[s][i]`` and ``adv[s][i]`` are the scores of pair i of seed s (resampled together).

    Same return and seeding as :func:`two_level_share`: resample b draws its seed indices, then, for each drawn
    seed in order, its pair indices. A seed without pairs has no AUC (NaN) and is left out.
    """
    _check(n_boot, level)
    if len(clean) != len(adv) or len(clean) == 0:
        raise InputError(f"clean and adv need one list of scores per seed, got {len(clean)} and {len(adv)}")
    c = [np.asarray(v, dtype=np.float64).ravel() for v in clean]
    a = [np.asarray(v, dtype=np.float64).ravel() for v in adv]
    for i, (cs, as_) in enumerate(zip(c, a)):
        if len(cs) != len(as_):
            raise InputError(f"seed {i}: {len(cs)} clean and {len(as_)} adversarial scores; pairs need one of each")
        if not (np.isfinite(cs).all() and np.isfinite(as_).all()):
            raise InputError(f"seed {i}: scores must be finite")
    s = len(c)
    per_seed = [auc(cs, as_) if len(cs) else math.nan for cs, as_ in zip(c, a)]
    rng = np.random.default_rng(seed)
    draws = np.empty(int(n_boot))
    for b in range(int(n_boot)):
        values = []
        for j in rng.integers(0, s, size=s):
            m = len(c[j])
            if m == 0:
                continue
            idx = rng.integers(0, m, size=m)
            values.append(auc(c[j][idx], a[j][idx]))
        draws[b] = float(np.mean(values)) if values else math.nan
    return _summary(per_seed, draws, level, n_boot)


def agreement(holds: Sequence[bool | None]) -> dict:
    """How many seeds a verdict holds on: ``{"holds": h, "fails": f, "unresolved": u, "n_seeds": S, "verdict"}``
    with ``holds[s]`` True / False / None (not resolved on that seed). The verdict is "holds" only when it holds
    on every seed, "does not hold" when it fails on every seed, else "mixed" (or "not resolved" on none, and with
    no seed at all: a verdict on zero seeds is not resolved, not vacuously "holds")."""
    h = sum(v is True for v in holds)
    f = sum(v is False for v in holds)
    u = len(holds) - h - f
    verdict = ("not resolved" if u == len(holds) else "holds" if h == len(holds)
               else "does not hold" if f == len(holds) else "mixed")
    return {"holds": h, "fails": f, "unresolved": u, "n_seeds": len(holds), "verdict": verdict}
