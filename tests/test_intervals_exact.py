"""Every interval of the package pinned EXACTLY against an independent computation written here.

Each reference below re-states the published formula (Wilson 1927; the percentile bootstrap of Efron and
Tibshirani 1993, ch. 13; the two-level bootstrap of Davison and Hinkley 1997, §3.8) in plain Python loops,
drawing the SAME random numbers in the SAME order from ``numpy.random.default_rng(seed)`` as the package's
vectorised code documents, and compares with ``rtol=1e-12``: a 95 % interval that is really an 80 % one, a
resample that never draws index 0 or one resample too many all change the result.
"""

from __future__ import annotations

import math
import warnings
from fractions import Fraction

import numpy as np
import pytest
from scipy.stats import norm

from rcedetect.core.errors import InputError
from rcedetect.stats import operating_point as op
from rcedetect.stats import replication as rep
from rcedetect.stats.metrics import mean_interval, wilson_interval

KEYS = ("auc", "tpr_success", "attack_success_rate")


# ---------------------------------------------------------------------------------------------------------------
# independent references
# ---------------------------------------------------------------------------------------------------------------

def ref_quantile(values, q: float) -> float:
    """Hyndman and Fan (1996) type-7 sample quantile (numpy's default): the order statistic at position
    h = (N − 1)·q, linearly interpolated between its two neighbours."""
    s = sorted(values)
    h = (len(s) - 1) * q
    lo = math.floor(h)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (h - lo) * (s[hi] - s[lo])


def ref_percentile(values, level: float) -> tuple[float, float]:
    """Percentile interval: the (1 − level)/2 and (1 + level)/2 quantiles of the defined (non-NaN) values."""
    defined = [v for v in values if not math.isnan(v)]
    if not defined:
        return (math.nan, math.nan)
    return (ref_quantile(defined, (1 - level) / 2), ref_quantile(defined, (1 + level) / 2))


def ref_wilson(k: int, n: int, level: float) -> tuple[float, float]:
    """Wilson (1927): the p solving (k/n − p)² = z² p (1 − p) / n, i.e. the roots
    p = (2k + z² ∓ z √(z² + 4 k (n − k) / n)) / (2 (n + z²)), z the (1 + level)/2 normal quantile (scipy)."""
    z = norm.ppf((1 + level) / 2)
    root = z * math.sqrt(z * z + 4 * k * (n - k) / n)
    den = 2 * (n + z * z)
    return (max(0.0, (2 * k + z * z - root) / den), min(1.0, (2 * k + z * z + root) / den))


def brute_auc(clean, adv) -> float:
    """Strict ROC-AUC with clean inputs as positives: the share of (clean, adv) pairs with clean < adv."""
    if not clean:
        return math.nan
    return sum(c < a for c in clean for a in adv) / (len(clean) * len(adv))


def ref_threshold(heldout, fpr: float) -> float:
    """The (m − ⌊fpr·m⌋)-th smallest held-out score (⌊·⌋ of the exact decimal fpr)."""
    s = sorted(heldout)
    return s[len(s) - 1 - math.floor(Fraction(repr(fpr)) * len(s))]


def ref_statistics(case: dict, fpr: float, heldout_rows, image_rows, success=None) -> dict[str, float]:
    """AUC, TPR over the pairs and SR@N of ONE resample, from its held-out indices and image indices:
    pairs = clean correct AND adversarial misclassified; SR@N among clean-correct images = succeeded AND
    accepted (adv ≤ T); a statistic over zero images is NaN."""
    t = ref_threshold([case["heldout_clean"][j] for j in heldout_rows], fpr)
    pairs_c, pairs_a, n_cc, n_won = [], [], 0, 0
    for i in image_rows:
        y, pc, pa = case["y"][i], case["pred_clean"][i], case["pred_adv"][i]
        won = (pa != y) if success is None else bool(success[i])
        if pc == y:
            n_cc += 1
            n_won += won and case["adv"][i] <= t
            if pa != y:
                pairs_c.append(case["clean"][i])
                pairs_a.append(case["adv"][i])
    tpr = sum(a > t for a in pairs_a) / len(pairs_a) if pairs_a else math.nan
    return {"auc": brute_auc(pairs_c, pairs_a), "tpr_success": tpr,
            "attack_success_rate": n_won / n_cc if n_cc else math.nan}


def ref_op_percentile(values, level: float) -> tuple[float, float]:
    """:func:`ref_percentile`, NaN when MORE than 5 % of the resamples leave the statistic undefined."""
    undefined = sum(math.isnan(v) for v in values)
    if undefined * 20 > len(values):
        return (math.nan, math.nan)
    return ref_percentile(values, level)


def ref_bootstrap(case: dict, fpr: float, n_boot: int, seed: int, level: float, resample_heldout: bool,
                  chunk: int, success=None) -> dict:
    """The documented draw order of :func:`op.bootstrap_intervals`: resamples in chunks of ``chunk``; per chunk,
    the (b, n) image indices, then (when resampled) the (b, m) held-out indices; statistics resample by resample."""
    n, m = len(case["clean"]), len(case["heldout_clean"])
    rng = np.random.default_rng(seed)
    values = {k: [] for k in KEYS}
    done = 0
    while done < n_boot:
        b = min(chunk, n_boot - done)
        image_idx = rng.integers(0, n, size=(b, n))
        heldout_idx = rng.integers(0, m, size=(b, m)) if resample_heldout else [list(range(m))] * b
        for rows_h, rows_i in zip(heldout_idx, image_idx):
            for k, v in ref_statistics(case, fpr, rows_h, rows_i, success).items():
                values[k].append(v)
        done += b
    assert all(len(v) == n_boot for v in values.values())
    return {k: ref_op_percentile(v, level) for k, v in values.items()}


def assert_interval(got, want):
    """Both bounds equal to 1e-12 relative, or both NaN."""
    np.testing.assert_allclose(np.asarray(got, dtype=float), np.asarray(want, dtype=float), rtol=1e-12,
                               atol=1e-15, equal_nan=True)


def small_case(seed: int, n: int = 14, m: int = 11) -> dict:
    """Attacked images with ties between clean and adv scores and adv scores equal to held-out scores."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n)
    case = {"heldout_clean": rng.integers(0, 8, m).astype(float), "clean": rng.integers(0, 8, n).astype(float),
            "adv": rng.integers(2, 10, n).astype(float), "y": y,
            "pred_clean": np.where(rng.random(n) < 0.2, (y + 1) % 4, y),
            "pred_adv": np.where(rng.random(n) < 0.3, y, (y + 2) % 4)}
    return case


# ---------------------------------------------------------------------------------------------------------------
# Wilson interval
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("k, n, published", [
    # Newcombe (1998), "Two-sided confidence intervals for the single proportion", Stat. Med. 17, Table I, method 3
    (81, 263, (0.2553, 0.3662)),
    (15, 148, (0.0624, 0.1605)),
    (0, 20, (0.0, 0.1611)),
    (1, 29, (0.0061, 0.1718)),
])
def test_wilson_matches_newcombe_1998(k, n, published):
    lo, hi = wilson_interval(k, n)  # the default level is 95 %
    assert (round(lo, 4), round(hi, 4)) == published


@pytest.mark.parametrize("level", [0.5, 0.8, 0.95, 0.99])
def test_wilson_equals_the_quadratic_roots(level):
    for n in (1, 2, 3, 7, 9, 21, 40, 263):
        for k in range(n + 1):
            got = wilson_interval(k, n, level)
            assert_interval(got, ref_wilson(k, n, level))
            assert 0.0 <= got[0] <= k / n <= got[1] <= 1.0


def test_wilson_bounds_are_exact_at_0_and_n():
    # the formula leaves 1 + 2e-16 for 9/9, 1 − 1e-16 for 3/3 at 50 % and −1.4e-17 for 0/21: the bounds of a
    # share of 0 or 1 are exactly 0 and 1, so the interval always holds its own k/n
    assert wilson_interval(9, 9)[1] == 1.0 and wilson_interval(3, 3, 0.5)[1] == 1.0
    assert wilson_interval(0, 21)[0] == 0.0 and wilson_interval(0, 3, 0.5)[0] == 0.0
    assert wilson_interval(0, 21)[1] > 0.0 and wilson_interval(9, 9)[0] < 1.0
    for k, n in ((4, 3), (-1, 3)):
        with pytest.raises(InputError, match=r"^a share k/n needs 0 <= k <= n, got k=.*, n=3$"):
            wilson_interval(k, n)


def test_wilson_without_observations_and_width():
    assert wilson_interval(0, 0) == (None, None)
    assert wilson_interval(0, -3) == (None, None)
    one = wilson_interval(1, 1)
    assert one[1] == 1.0 and 0.0 < one[0] < 1.0
    # a wider level gives a wider interval
    a, b = wilson_interval(30, 100, 0.9), wilson_interval(30, 100, 0.99)
    assert b[0] < a[0] < 0.3 < a[1] < b[1]


# ---------------------------------------------------------------------------------------------------------------
# mean_interval (the C&W-wb distortion interval)
# ---------------------------------------------------------------------------------------------------------------

def ref_mean_interval(values, level: float, n_boot: int, seed: int) -> tuple[float, float]:
    """Percentile bootstrap of the mean: ONE (n_boot, n) draw of indices, the mean of each row, its quantiles."""
    v = [float(x) for x in np.asarray(values).ravel()]
    idx = np.random.default_rng(seed).integers(0, len(v), size=(n_boot, len(v)))
    means = [sum(v[i] for i in row) / len(v) for row in idx]
    return ref_percentile(means, level)


def test_mean_interval_defaults_are_95_percent_1000_resamples_seed_0():
    values = [3.1, 0.4, 2.2, 5.0, 1.7, 0.9, 4.4]
    assert_interval(mean_interval(values), ref_mean_interval(values, 0.95, 1000, 0))


@pytest.mark.parametrize("level, n_boot, seed", [(0.8, 50, 3), (0.5, 7, 11), (0.99, 333, 1)])
def test_mean_interval_equals_the_reference(level, n_boot, seed):
    values = np.random.default_rng(seed).exponential(2.0, 9)
    got = mean_interval(values, level=level, n_boot=n_boot, seed=seed)
    assert_interval(got, ref_mean_interval(values, level, n_boot, seed))
    assert got[0] <= np.mean(values) <= got[1] or level < 0.9


def test_mean_interval_is_computed_in_float64_from_any_shape():
    f32 = np.array([[0.1, 0.7], [0.2, 0.3]], dtype=np.float32)  # float32 means would differ at 1e-8
    as64 = f32.astype(np.float64).ravel()
    assert_interval(mean_interval(f32, n_boot=40, seed=2), ref_mean_interval(as64, 0.95, 40, 2))


def test_mean_interval_edge_cases():
    assert mean_interval([]) == (None, None)
    assert mean_interval([2.5]) == (2.5, 2.5)  # one value: zero width
    lo, hi = mean_interval([1.0, 1.0, 1.0, 7.0], n_boot=200)
    assert 1.0 <= lo < 2.5 < hi <= 7.0
    assert isinstance(lo, float) and isinstance(hi, float)


# ---------------------------------------------------------------------------------------------------------------
# bootstrap_intervals
# ---------------------------------------------------------------------------------------------------------------

def test_bootstrap_defaults_equal_the_reference():
    """Defaults: fpr 5 %, 1000 resamples, seed 0, 95 %, held-out set resampled, one chunk."""
    case = small_case(0, n=14, m=25)
    got = op.bootstrap_intervals(**case)
    want = ref_bootstrap(case, 0.05, 1000, 0, 0.95, True, chunk=1000)
    assert got["n_boot"] == 1000 and got["level"] == 0.95
    for k in KEYS:
        assert_interval(got[k], want[k])


@pytest.mark.parametrize("resample_heldout", [True, False])
@pytest.mark.parametrize("fpr, level, seed", [(0.2, 0.9, 1), (0.0, 0.5, 2), (0.25, 0.8, 3)])
def test_bootstrap_equals_the_reference(resample_heldout, fpr, level, seed):
    case = small_case(seed)
    success = np.random.default_rng(seed + 10).random(len(case["y"])) < 0.6
    got = op.bootstrap_intervals(**case, success=success, fpr=fpr, n_boot=120, seed=seed, level=level,
                                 resample_heldout=resample_heldout)
    want = ref_bootstrap(case, fpr, 120, seed, level, resample_heldout, chunk=120, success=success)
    for k in KEYS:
        assert_interval(got[k], want[k])


@pytest.mark.parametrize("resample_heldout", [True, False])
@pytest.mark.parametrize("chunk_elements, n_boot", [(1, 9), (28, 9), (14 * 4, 10), (14 * 7, 20), (14 * 50, 20)])
def test_bootstrap_chunks_follow_the_documented_draw_order(monkeypatch, resample_heldout, chunk_elements, n_boot):
    """With ``_CHUNK_ELEMENTS`` small, the resamples come in chunks of max(1, E // max(n, m)): each chunk draws its
    image indices then its held-out indices, and the chunks together hold exactly ``n_boot`` resamples."""
    case = small_case(5, n=14, m=11)
    monkeypatch.setattr(op, "_CHUNK_ELEMENTS", chunk_elements)
    chunk = max(1, chunk_elements // 14)
    got = op.bootstrap_intervals(**case, fpr=0.1, n_boot=n_boot, seed=4, level=0.8,
                                 resample_heldout=resample_heldout)
    want = ref_bootstrap(case, 0.1, n_boot, 4, 0.8, resample_heldout, chunk=chunk)
    for k in KEYS:
        assert_interval(got[k], want[k])


_DEFAULT_RNG = np.random.default_rng


class CountingRng:
    """A numpy Generator that records the shape of every ``integers`` draw."""

    def __init__(self, seed):
        self.inner, self.shapes = _DEFAULT_RNG(seed), []

    def integers(self, low, high, size):
        self.shapes.append((low, high, size))
        return self.inner.integers(low, high, size=size)


@pytest.mark.parametrize("chunk_elements, n_boot, chunks", [(14 * 3, 10, [3, 3, 3, 1]), (14 * 5, 10, [5, 5]),
                                                            (1 << 21, 10, [10]), (1, 3, [1, 1, 1])])
def test_exactly_n_boot_resamples_are_drawn(monkeypatch, chunk_elements, n_boot, chunks):
    case = small_case(6, n=14, m=11)
    made = []

    def counting(seed):
        made.append(CountingRng(seed))
        return made[-1]

    monkeypatch.setattr(op, "_CHUNK_ELEMENTS", chunk_elements)
    monkeypatch.setattr(op.np.random, "default_rng", counting)
    op.bootstrap_intervals(**case, n_boot=n_boot, seed=7)
    assert len(made) == 1
    want = []
    for b in chunks:  # per chunk: all 14 images, then all 11 held-out scores, each index in [0, size)
        want += [(0, 14, (b, 14)), (0, 11, (b, 11))]
    assert made[0].shapes == want


def test_the_heldout_resample_draws_every_index():
    """A resample must be able to draw held-out index 0 (and m − 1): with two held-out scores, T at fpr 0 is
    the largest resampled one, so {0} alone, {1} alone and both must all occur across resamples."""
    case = {"heldout_clean": [0.0, 1.0], "clean": [-1.0] * 4, "adv": [0.5] * 4, "y": [0] * 4,
            "pred_clean": [0] * 4, "pred_adv": [1] * 4}
    b = op.bootstrap_intervals(**case, fpr=0.0, n_boot=200, seed=0, level=0.999)
    # T = 0 (both draws index 0: adv 0.5 rejected, SR 0) or T = 1 (accepted, SR 1)
    assert b["attack_success_rate"] == (0.0, 1.0) and b["tpr_success"] == (0.0, 1.0)


def test_single_image_and_single_resample():
    case = {"heldout_clean": [0.1, 0.2, 0.9], "clean": [0.0], "adv": [0.5], "y": [1], "pred_clean": [1],
            "pred_adv": [0]}
    # one image, one pair: every resample is that pair, T = 0.9 at fpr 0 (accepted) unless only 0.1/0.2 drawn
    b = op.bootstrap_intervals(**case, fpr=0.0, n_boot=1, seed=0, resample_heldout=False)
    assert b["auc"] == (1.0, 1.0) and b["tpr_success"] == (0.0, 0.0) and b["attack_success_rate"] == (1.0, 1.0)
    assert b["n_boot"] == 1


def test_no_numpy_warnings_where_statistics_are_undefined():
    """Undefined statistics (no pair, no clean-correct image) are NaN by construction, never a 0/0 warning."""
    case = small_case(8, n=6, m=5)
    case["pred_adv"] = case["y"].copy()
    case["pred_adv"][0] = (case["y"][0] + 1) % 4
    case["pred_clean"] = case["y"].copy()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        b = op.bootstrap_intervals(**case, n_boot=50, seed=0)
        r = op.operating_point(case["heldout_clean"], [], [], [], [], [])
    assert all(math.isnan(x) for x in b["auc"] + b["tpr_success"])  # ~1/3 of resamples lack the pair
    assert math.isnan(r["tpr_all"]) and math.isnan(r["clean_rejection_rate"])


@pytest.mark.parametrize("n_values, n_undefined, defined", [(20, 1, True), (20, 2, False), (1000, 50, True),
                                                            (1000, 51, False), (1, 0, True), (4, 4, False)])
def test_nan_only_when_more_than_5_percent_undefined(n_values, n_undefined, defined):
    """MAX_UNDEFINED_SHARE: "NaN when they EXCEED 5 % of the resamples" (exactly 5 % is still defined)."""
    values = np.arange(n_values, dtype=float)
    values[:n_undefined] = np.nan
    got = op._percentile_interval(values, 0.9)
    if defined:
        assert_interval(got, ref_percentile(values.tolist(), 0.9))
    else:
        assert all(math.isnan(x) for x in got)


def test_bootstrap_with_exactly_5_percent_of_resamples_undefined():
    """End to end: 3 pairs among 60 images are all absent from a resample with probability (57/60)^60 ≈ 4.6 %;
    take a seed where exactly 1 of 20 resamples lacks them (5 %, not more) and check the interval is defined."""
    n = 60
    case = {"heldout_clean": np.arange(10.0), "clean": np.zeros(n), "adv": np.linspace(0, 9, n),
            "y": np.zeros(n, int), "pred_clean": np.zeros(n, int), "pred_adv": np.zeros(n, int)}
    case["pred_adv"][:3] = 1  # the only pairs: images 0, 1, 2
    seed = next(s for s in range(100)
                if sum(min(row) > 2 for row in np.random.default_rng(s).integers(0, n, size=(20, n))) == 1)
    got = op.bootstrap_intervals(**case, n_boot=20, seed=seed, resample_heldout=False)
    want = ref_bootstrap(case, 0.05, 20, seed, 0.95, False, chunk=20)
    assert not any(math.isnan(x) for x in got["auc"] + got["tpr_success"])
    for k in KEYS:
        assert_interval(got[k], want[k])


def test_empty_image_set_still_validates_fpr():
    with pytest.raises(InputError, match="fpr"):
        op.bootstrap_intervals([0.1, 0.2], [], [], [], [], [], fpr=1.0, n_boot=5)
    # one image is not "no image"
    b = op.bootstrap_intervals([0.1, 0.2], [0.0], [1.0], [0], [0], [1], fpr=0.0, n_boot=5)
    assert b["auc"] == (1.0, 1.0)


# ---------------------------------------------------------------------------------------------------------------
# operating_point: hand-built cases
# ---------------------------------------------------------------------------------------------------------------

# Held-out scores 1..10, fpr = 0.2: ⌊0.2·10⌋ = 2 may exceed T, so T = the 8th smallest = 8.0 (9, 10 rejected).
HAND_HELDOUT = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0]
#                 img0  img1  img2  img3  img4  img5  img6
HAND_Y = [0, 1, 2, 3, 4, 5, 6]
HAND_PC = [0, 1, 2, 4, 4, 5, 6]  # img3 is wrong already when clean
HAND_PA = [0, 2, 0, 3, 4, 1, 6]  # misclassified: img1, img2, img5; img3's attacked version is right again
HAND_CLEAN = [2.0, 8.0, 5.0, 9.0, 8.5, 1.0, 3.0]  # > 8 (rejected): img3, img4; img1 = T is ACCEPTED
HAND_ADV = [3.0, 9.0, 8.0, 1.0, 10.0, 2.0, 4.0]  # > 8 (rejected): img1, img4; img2 = T is ACCEPTED


def hand(**kw) -> dict:
    d = {"heldout_clean": HAND_HELDOUT, "clean": HAND_CLEAN, "adv": HAND_ADV, "y": HAND_Y,
         "pred_clean": HAND_PC, "pred_adv": HAND_PA}
    d.update(kw)
    return d


def test_operating_point_hand_case():
    r = op.operating_point(**hand(), fpr=0.2)
    assert r["threshold"] == 8.0 and r["fpr"] == 0.2 and r["n_heldout"] == 10 and r["n_images"] == 7
    # clean rejected (> 8): img3 (9), img4 (8.5) → 2/7; img1's clean 8.0 equals T and is accepted
    assert r["clean_rejection_rate"] == 2 / 7
    # adv rejected (> 8): img1 (9), img4 (10) → 2/7
    assert r["tpr_all"] == 2 / 7
    # pairs (clean right AND adv wrong): img1, img2, img5; rejected among them: img1 → 1/3
    assert r["n_pairs"] == 3 and r["tpr_success"] == 1 / 3
    # strict AUC over the pairs, clean [8, 5, 1] vs adv [9, 8, 2]: adv 9 beats 3, adv 8 beats 5 and 1 (not 8),
    # adv 2 beats 1 → 6 of 9
    assert r["auc"] == 6 / 9
    # SR@N among the 6 clean-correct images (all but img3): misclassified AND accepted: img2 (adv 8 = T), img5
    assert r["n_clean_correct"] == 6 and r["attack_success_rate"] == 2 / 6
    # robust accuracy with rejection, right OR rejected: img0, img3, img6 right; img1, img4 rejected → 5/7
    # (img2 and img5: wrong and accepted)
    assert r["robust_accuracy_with_rejection"] == 5 / 7
    # clean accuracy with rejection, right AND accepted: img0, img1 (8 = T), img2, img5, img6 → 5/7
    # (img3 wrong, img4 rejected)
    assert r["clean_accuracy_with_rejection"] == 5 / 7


def test_operating_point_hand_case_with_a_targeted_success_flag():
    # target reached on img1 and img5 only (img2 is misclassified but missed its target)
    r = op.operating_point(**hand(success=[False, True, False, False, False, True, False]), fpr=0.2)
    # SR@N: succeeded AND accepted among the 6 clean-correct images: img5 only (img1 is rejected) → 1/6
    assert r["attack_success_rate"] == 1 / 6
    # the pairs and the accuracies stay those of the labels
    assert r["n_pairs"] == 3 and r["robust_accuracy_with_rejection"] == 5 / 7


def test_operating_point_hand_case_at_another_fpr():
    # fpr = 0.05: ⌊0.5⌋ = 0 rejected on the held-out set, T = 10: nothing is rejected
    r = op.operating_point(**hand())  # default fpr = 0.05
    assert r["threshold"] == 10.0 and r["fpr"] == 0.05
    assert r["clean_rejection_rate"] == 0.0 and r["tpr_all"] == 0.0 and r["tpr_success"] == 0.0
    # SR@N: img1, img2, img5 misclassified and accepted → 3/6; robust: right only (img0, img3, img4, img6) → 4/7
    assert r["attack_success_rate"] == 3 / 6 and r["robust_accuracy_with_rejection"] == 4 / 7
    assert r["clean_accuracy_with_rejection"] == 6 / 7


@pytest.mark.parametrize("resample_heldout", [False, True])
def test_operating_points_carry_the_exact_bootstrap_rounded(resample_heldout):
    success = [False, True, False, False, False, True, False]  # img2 misclassified but missed its target
    got = op.operating_points(**hand(success=success), fprs=(0.2,), n_boot=7, seed=3, level=0.8,
                              resample_heldout=resample_heldout)["fpr_20"]
    want = op.bootstrap_intervals(**hand(success=success), fpr=0.2, n_boot=7, seed=3, level=0.8,
                                  resample_heldout=resample_heldout)
    ref = ref_bootstrap(hand(), 0.2, 7, 3, 0.8, resample_heldout, chunk=7, success=success)
    for k in KEYS:
        assert_interval(want[k], ref[k])
        assert got["bootstrap"][k] == [None if math.isnan(x) else round(x, 6) for x in want[k]]
    assert got["bootstrap"]["n_boot"] == 7 and got["bootstrap"]["level"] == 0.8
    assert got["attack_success_rate"] == round(1 / 6, 6)  # succeeded and accepted: img5 (img1 is rejected)


def continuous_case(seed: int, n: int = 30, m: int = 40) -> dict:
    """Continuous scores with adversarial ones around the held-out tail: re-choosing T on a resampled held-out set
    (or one resample more) moves the TPR and SR@N intervals."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n)
    return {"heldout_clean": rng.normal(size=m), "clean": rng.normal(-0.5, 1.0, n), "adv": rng.normal(1.2, 0.6, n),
            "y": y, "pred_clean": np.where(rng.random(n) < 0.1, (y + 1) % 4, y),
            "pred_adv": np.where(rng.random(n) < 0.2, y, (y + 2) % 4)}


def test_operating_points_defaults():
    """Defaults: FPRs 5 % and 1 %, 1000 resamples, seed 0, 95 %, held-out set resampled."""
    case = continuous_case(0)
    got = op.operating_points(**case)
    assert list(got) == ["fpr_5", "fpr_1"]
    for key, fpr in (("fpr_5", 0.05), ("fpr_1", 0.01)):
        want = ref_bootstrap(case, fpr, 1000, 0, 0.95, True, chunk=1000)
        assert got[key]["bootstrap"]["n_boot"] == 1000 and got[key]["bootstrap"]["level"] == 0.95
        for k in KEYS:
            assert got[key]["bootstrap"][k] == [None if math.isnan(x) else round(x, 6) for x in want[k]]
    one = op.operating_points(**case, fprs=(0.05,), n_boot=1)
    assert one["fpr_5"]["bootstrap"]["n_boot"] == 1


# ---------------------------------------------------------------------------------------------------------------
# replication: two-level bootstrap across seeds
# ---------------------------------------------------------------------------------------------------------------

def ref_two_level_share(k, n, n_boot: int, seed: int, level: float) -> dict:
    """Resample b: S seed indices in one draw, then one Binomial(n_s, k_s/n_s) per drawn seed with n_s > 0, in
    order; its value is the mean of the drawn shares. Interval: percentile, widened to the pooled Wilson."""
    rng = np.random.default_rng(seed)
    s = len(k)
    draws = []
    for _ in range(n_boot):
        kept = [j for j in rng.integers(0, s, size=s) if n[j] > 0]
        shares = [rng.binomial(n[j], k[j] / n[j]) / n[j] for j in kept]
        draws.append(sum(shares) / len(shares) if shares else math.nan)
    lo, hi = ref_percentile(draws, level)
    total_n = sum(x for x in n if x > 0)
    if total_n and not math.isnan(lo):
        w_lo, w_hi = ref_wilson(sum(kk for kk, nn in zip(k, n) if nn > 0), total_n, level)
        lo, hi = min(lo, w_lo), max(hi, w_hi)
    per_seed = [kk / nn if nn else math.nan for kk, nn in zip(k, n)]
    defined = [p for p in per_seed if not math.isnan(p)]
    return {"mean": sum(defined) / len(defined) if defined else math.nan, "low": lo, "high": hi,
            "per_seed": per_seed}


def assert_summary(got: dict, want: dict, n_seeds: int, n_boot: int, level: float):
    assert_interval([got["mean"], got["low"], got["high"]], [want["mean"], want["low"], want["high"]])
    assert_interval(got["per_seed"], want["per_seed"])
    assert (got["n_seeds"], got["n_boot"], got["level"]) == (n_seeds, n_boot, level)


@pytest.mark.parametrize("k, n, n_boot, seed, level", [
    ([12, 30, 7], [100, 120, 90], 300, 0, 0.95),
    ([3], [40], 200, 5, 0.9),  # one seed: the image level alone
    ([0, 5, 0, 9], [0, 20, 0, 30], 150, 2, 0.8),  # seeds without images are left out
    ([1, 0, 1, 1, 0], [1, 1, 1, 1, 1], 100, 4, 0.95),  # one image per seed
])
def test_two_level_share_equals_the_reference(k, n, n_boot, seed, level):
    got = rep.two_level_share(k, n, n_boot=n_boot, seed=seed, level=level)
    assert_summary(got, ref_two_level_share(k, n, n_boot, seed, level), len(k), n_boot, level)


def test_two_level_share_defaults_and_saturated_shares():
    got = rep.two_level_share([4, 9], [50, 60])
    assert_summary(got, ref_two_level_share([4, 9], [50, 60], 1000, 0, 0.95), 2, 1000, 0.95)
    # 0 of n on every seed: the bootstrap has zero width, the interval is the pooled Wilson one (0 of 150)
    zero = rep.two_level_share([0, 0, 0], [50, 50, 50], n_boot=50)
    assert (zero["low"], zero["high"]) == (0.0, pytest.approx(ref_wilson(0, 150, 0.95)[1], rel=1e-12))
    # only seeds without images: nothing defined
    none = rep.two_level_share([0, 0], [0, 0], n_boot=10)
    assert all(math.isnan(none[x]) for x in ("mean", "low", "high"))


def ref_two_level_auc(clean, adv, n_boot: int, seed: int, level: float) -> dict:
    """Resample b: S seed indices in one draw, then for each drawn seed with pairs, in order, one draw of its pair
    indices; its value is the mean over those seeds of the strict AUC (brute force) of the resampled pairs."""
    rng = np.random.default_rng(seed)
    s = len(clean)
    draws = []
    for _ in range(n_boot):
        aucs = []
        for j in rng.integers(0, s, size=s):
            m = len(clean[j])
            if m:
                idx = rng.integers(0, m, size=m)
                aucs.append(brute_auc([clean[j][i] for i in idx], [adv[j][i] for i in idx]))
        draws.append(sum(aucs) / len(aucs) if aucs else math.nan)
    lo, hi = ref_percentile(draws, level)
    per_seed = [brute_auc(list(c), list(a)) for c, a in zip(clean, adv)]
    defined = [p for p in per_seed if not math.isnan(p)]
    return {"mean": sum(defined) / len(defined) if defined else math.nan, "low": lo, "high": hi,
            "per_seed": per_seed}


def auc_seeds(sizes, seed=0):
    rng = np.random.default_rng(seed)
    clean = [rng.integers(0, 6, s).astype(float).tolist() for s in sizes]
    adv = [(rng.integers(0, 6, s) + 1).astype(float).tolist() for s in sizes]  # ties with clean scores
    return clean, adv


@pytest.mark.parametrize("sizes, n_boot, seed, level", [([8, 12, 5], 120, 0, 0.95), ([9], 100, 1, 0.8),
                                                        ([0, 6, 7], 80, 2, 0.9), ([1, 1, 1, 1], 60, 3, 0.95)])
def test_two_level_auc_equals_the_reference(sizes, n_boot, seed, level):
    clean, adv = auc_seeds(sizes, seed)
    got = rep.two_level_auc(clean, adv, n_boot=n_boot, seed=seed, level=level)
    assert_summary(got, ref_two_level_auc(clean, adv, n_boot, seed, level), len(sizes), n_boot, level)


def test_two_level_auc_defaults():
    clean, adv = auc_seeds([6, 4], 7)
    got = rep.two_level_auc(clean, adv)
    assert_summary(got, ref_two_level_auc(clean, adv, 1000, 0, 0.95), 2, 1000, 0.95)


@pytest.mark.parametrize("level", [0.5, 0.9, 0.95])
def test_replication_percentile_interval(level):
    values = np.random.default_rng(1).normal(size=37)
    assert_interval(rep.percentile_interval(values, level), ref_percentile(values.tolist(), level))
    with_nan = np.r_[values, np.nan, np.nan]  # NaN draws are left out
    assert_interval(rep.percentile_interval(with_nan, level), ref_percentile(values.tolist(), level))
    assert all(math.isnan(x) for x in rep.percentile_interval([np.nan, np.nan], level))
    assert_interval(rep.percentile_interval(values), ref_percentile(values.tolist(), 0.95))


@pytest.mark.parametrize("holds, counts, verdict", [
    ([True, True, True], (3, 0, 0), "holds"),
    ([False, False], (0, 2, 0), "does not hold"),
    ([True, False, None], (1, 1, 1), "mixed"),
    ([True, None], (1, 0, 1), "mixed"),
    ([None, None], (0, 0, 2), "not resolved"),
    ([True], (1, 0, 0), "holds"),
    ([], (0, 0, 0), "not resolved"),  # no seed: nothing was resolved (not a vacuous "holds")
])
def test_agreement(holds, counts, verdict):
    got = rep.agreement(holds)
    assert got == {"holds": counts[0], "fails": counts[1], "unresolved": counts[2], "n_seeds": len(holds),
                   "verdict": verdict}


def test_two_level_share_is_never_narrower_than_the_pooled_wilson_interval():
    # every seed at 1 (30 of 30 twice): the bootstrap interval is (1, 1), widened down to Wilson's 60 of 60
    full = rep.two_level_share([30, 30], [30, 30], n_boot=20)
    assert (full["low"], full["high"]) == (pytest.approx(ref_wilson(60, 60, 0.95)[0], rel=1e-12), 1.0)
    assert set(full) == {"mean", "low", "high", "per_seed", "n_seeds", "n_boot", "level"}
    # seeds of one image count in the pooled n: 0 of 1, 0 of 1, 0 of 30 → Wilson of 0 of 32
    small = rep.two_level_share([0, 0, 0], [1, 1, 30], n_boot=20, level=0.9)
    assert (small["low"], small["high"]) == (0.0, pytest.approx(ref_wilson(0, 32, 0.9)[1], rel=1e-12))


def test_one_resample_and_no_warning_where_nothing_is_defined():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a seed without images, or without pairs, is NaN by construction
        share = rep.two_level_share([0, 4], [0, 10], n_boot=1, seed=3)
        none = rep.two_level_share([0, 0], [0, 0], n_boot=5)
        pairs = rep.two_level_auc([[], []], [[], []], n_boot=5)
        one = rep.two_level_auc([[0.1, 0.2], []], [[0.3, 0.0], []], n_boot=1)
    assert_summary(share, ref_two_level_share([0, 4], [0, 10], 1, 3, 0.95), 2, 1, 0.95)
    assert math.isnan(none["mean"]) and math.isnan(pairs["mean"]) and math.isnan(pairs["low"])
    assert_summary(one, ref_two_level_auc([[0.1, 0.2], []], [[0.3, 0.0], []], 1, 0, 0.95), 2, 1, 0.95)


@pytest.mark.parametrize("call, message", [
    (lambda: rep.two_level_share([1], [2], n_boot=0), r"^n_boot must be a positive integer, got 0$"),
    (lambda: rep.two_level_share([1], [2], n_boot=True), r"^n_boot must be a positive integer, got True$"),
    (lambda: rep.two_level_share([1], [2], level=1.0), r"^level must be in \(0, 1\), got 1.0$"),
    (lambda: rep.two_level_share([3], [2]), r"^every count must satisfy 0 <= k <= n, got k=\[3\], n=\[2\]$"),
    (lambda: rep.two_level_share([-1], [2]), r"^every count must satisfy 0 <= k <= n"),
    (lambda: rep.two_level_share([1, 2], [2]),
     r"^k and n must be equal-length non-empty lists of counts, got \[1, 2\] and \[2\]$"),
    (lambda: rep.two_level_share([], []), r"^k and n must be equal-length non-empty lists of counts"),
    (lambda: rep.two_level_auc([[0.1]], [[0.2, 0.3]]),
     r"^seed 0: 1 clean and 2 adversarial scores; pairs need one of each$"),
    (lambda: rep.two_level_auc([[0.1], [0.2]], [[0.1], [math.inf]]), r"^seed 1: scores must be finite$"),
    (lambda: rep.two_level_auc([], []), r"^clean and adv need one list of scores per seed, got 0 and 0$"),
    (lambda: rep.two_level_auc([[0.1]], [[0.2]], level=0.0), r"^level must be in \(0, 1\), got 0.0$"),
])
def test_replication_refuses_bad_inputs(call, message):
    with pytest.raises(InputError, match=message):
        call()
