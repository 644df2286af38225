"""K-density kernel edge cases (protocol §4.2-4.4) against a direct float64 computation of the paper's formula

    log KD(z) = log( (1/|X_t|) Σ_{x ∈ X_t} exp(−‖z − z_x‖² / σ²) )

(Feinman et al. 2017; Pang et al. 2018, §3.3), X_t the kernel points of the predicted class t: one class, one
point per class, unequal class sizes (padded kernels), an empty batch, counts beyond the kernel's K, the log K_t
normalisation, every scoring path, and the files and messages.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from rcedetect.core.errors import CheckpointError, ConfigError, InputError
from rcedetect.core.io import read_metadata, save_tensors
from rcedetect.detectors import density
from rcedetect.detectors.density import FORMAT, KernelDensity

RTOL, ATOL = 1e-10, 1e-12


def ref_log_kd(z, points, sigma2: float) -> list[float]:
    """The paper's log KD in plain float64 Python, one query at a time, with the largest exponent factored out
    (log Σ e^{t_i} = t* + log Σ e^{t_i − t*}) so that nothing underflows."""
    out = []
    for q in np.asarray(z, dtype=np.float64).tolist():
        t = [-sum((a - b) ** 2 for a, b in zip(q, p)) / sigma2 for p in np.asarray(points, np.float64).tolist()]
        top = max(t)
        out.append(top + math.log(math.fsum(math.exp(x - top) for x in t)) - math.log(len(t)))
    return out


def ref_scores(kd: KernelDensity, z, classes) -> list[float]:
    """:func:`ref_log_kd` of each query against the first counts[t] kernel points of its class t."""
    out = []
    for q, t in zip(z, classes.tolist()):
        out += ref_log_kd(q[None], kd.kernels[t, : int(kd.counts[t])], kd.sigma2)
    return out


def padded(points_per_class: list[np.ndarray], dim: int, fill: float = 1e3) -> tuple[torch.Tensor, torch.Tensor]:
    """(C, K, D) kernels with unequal classes: class c holds its points then ``fill`` padding up to K."""
    k = max(len(p) for p in points_per_class)
    kernels = torch.full((len(points_per_class), k, dim), fill, dtype=torch.float64)
    for c, p in enumerate(points_per_class):
        kernels[c, : len(p)] = torch.as_tensor(p)
    return kernels, torch.tensor([len(p) for p in points_per_class])


def queries(n: int, dim: int, num_classes: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, dim, generator=g, dtype=torch.float64), torch.randint(0, num_classes, (n,), generator=g)


def unequal_kd(chunk_elements: int = 1 << 24, sigma2: float = 0.7) -> KernelDensity:
    rng = np.random.default_rng(0)
    kernels, counts = padded([rng.normal(size=(5, 3)), rng.normal(size=(1, 3)), rng.normal(1.0, 1.0, (3, 3))], 3)
    return KernelDensity(kernels, sigma2, counts, chunk_elements=chunk_elements)


# ---------------------------------------------------------------------------------------------------------------
# the formula on edge-shaped kernels
# ---------------------------------------------------------------------------------------------------------------

def test_one_class():
    f, _ = queries(7, 3, 1, seed=1)
    kd = KernelDensity.fit(f, torch.zeros(7, dtype=torch.long), 1, per_class="all", sigma2=1.5)
    assert kd.num_classes == 1 and kd.counts.tolist() == [7]
    z, c = queries(4, 3, 1, seed=2)
    np.testing.assert_allclose(kd.log_kd(z, c).numpy(), ref_log_kd(z, f, 1.5), rtol=RTOL, atol=ATOL)


def test_one_point_per_class_is_minus_the_scaled_distance():
    """K_t = 1: log KD = −‖z − z_1‖²/σ² − log 1."""
    kernels = torch.tensor([[[0.0, 0.0]], [[3.0, 4.0]]], dtype=torch.float64)
    kd = KernelDensity(kernels, 2.0)
    z = torch.tensor([[3.0, 0.0], [0.0, 0.0], [3.0, 4.0]], dtype=torch.float64)
    got = kd.log_kd(z, torch.tensor([0, 1, 1]))
    assert got.tolist() == pytest.approx([-9 / 2, -25 / 2, 0.0], rel=1e-12, abs=1e-12)


def test_fit_one_point_per_class_picks_a_feature_of_the_class():
    f, y = queries(30, 2, 3, seed=3)
    kd = KernelDensity.fit(f, y, 3, per_class=1, sigma2=1.0, seed=4)
    assert kd.counts.tolist() == [1, 1, 1]
    for c in range(3):
        assert (kd.kernels[c, 0] == f[y == c]).all(1).any()


@pytest.mark.parametrize("chunk_elements, grad", [(1 << 24, False), (8, False), (8, True)])
def test_unequal_class_sizes_use_exactly_their_own_points(chunk_elements, grad):
    """Classes of 5, 1 and 3 points padded with 1e3 (which would dominate the sum if counted) and normalised by
    log 5, log 1, log 3: the gathered path (small batch), the bounded batched path and the exact one."""
    kd = unequal_kd(chunk_elements)
    z, c = queries(11, 3, 3, seed=5)
    want = ref_scores(kd, z, c)
    z = z.clone().requires_grad_(grad)
    np.testing.assert_allclose(kd.log_kd(z, c).detach().numpy(), want, rtol=RTOL, atol=ATOL)


def test_fit_all_keeps_every_feature_of_unequal_classes():
    f, _ = queries(12, 2, 3, seed=6)
    y = torch.tensor([0] * 7 + [1] * 1 + [2] * 4)
    kd = KernelDensity.fit(f, y, 3, per_class="all", sigma2=0.9)
    assert kd.counts.tolist() == [7, 1, 4]
    z, c = queries(9, 2, 3, seed=7)
    want = [ref_log_kd(q[None], f[y == t], 0.9)[0] for q, t in zip(z, c.tolist())]
    np.testing.assert_allclose(kd.log_kd(z, c).numpy(), want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("chunk_elements", [1 << 24, 8])
def test_normalisation_is_the_mean_over_the_class(chunk_elements):
    """KD is a MEAN over X_t: the same points listed twice (K_t doubled) give the same log KD, and K_t identical
    points give exactly that one point's kernel value: a wrong log K_t shifts both."""
    rng = np.random.default_rng(8)
    pts = rng.normal(size=(3, 4))
    once = KernelDensity(torch.as_tensor(pts)[None], 1.3, chunk_elements=chunk_elements)
    twice = KernelDensity(torch.as_tensor(np.r_[pts, pts])[None], 1.3, chunk_elements=chunk_elements)
    z, c = queries(5, 4, 1, seed=9)
    with torch.no_grad():
        np.testing.assert_allclose(twice.log_kd(z, c).numpy(), once.log_kd(z, c).numpy(), rtol=RTOL, atol=ATOL)
    same = KernelDensity(torch.as_tensor(np.repeat(pts[:1], 6, axis=0))[None], 1.3, chunk_elements=chunk_elements)
    with torch.no_grad():
        got = same.log_kd(z, c).numpy()
    want = [-float(((q - pts[0]) ** 2).sum()) / 1.3 for q in z.numpy()]
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


def test_kd_is_the_exponential():
    kd = unequal_kd()
    z, c = queries(4, 3, 3, seed=10)
    np.testing.assert_allclose(kd.kd(z, c).numpy(), np.exp(ref_scores(kd, z, c)), rtol=1e-10)


def test_empty_batch():
    kd = unequal_kd()
    for dtype in (torch.float64, torch.float32):
        z = torch.zeros(0, 3, dtype=dtype, requires_grad=True)
        out = kd.log_kd(z, torch.zeros(0, dtype=torch.long))
        assert out.shape == (0,) and out.dtype == dtype
        assert kd.kd(z, torch.zeros(0, dtype=torch.long)).shape == (0,)


def test_single_query():
    kd = unequal_kd()
    z = torch.tensor([[0.5, -0.2, 1.0]], dtype=torch.float64)
    np.testing.assert_allclose(kd.log_kd(z, torch.tensor([2])).numpy(), ref_scores(kd, z, torch.tensor([2])),
                               rtol=RTOL)


def test_float32_and_float64_queries_on_one_kernel():
    """Kernel points are converted (and cached) per query dtype: float64 then float32 then float64 again."""
    kd = unequal_kd()
    z, c = queries(6, 3, 3, seed=11)
    want = ref_scores(kd, z, c)
    first = kd.log_kd(z, c)
    single = kd.log_kd(z.float(), c)
    assert single.dtype == torch.float32 and first.dtype == torch.float64
    np.testing.assert_allclose(single.double().numpy(), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(kd.log_kd(z, c).numpy(), want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("chunk_elements", [1 << 24, 8])
@pytest.mark.parametrize("dtype", [torch.int32, torch.uint8])
def test_any_integer_class_indices_score_like_int64(chunk_elements, dtype):
    """uint8 indices would index as a boolean MASK if they were not converted to int64."""
    kd = unequal_kd(chunk_elements)
    z, c = queries(6, 3, 3, seed=12)
    assert torch.equal(kd.log_kd(z, c.to(dtype)), kd.log_kd(z, c))


# ---------------------------------------------------------------------------------------------------------------
# counts: beyond K, zero, wrong shape
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("counts", [[4, 1], [3, 0], [3], [1, 2, 3], [-1, 2]])
def test_counts_outside_1_k_are_refused(counts):
    """A class count beyond the K rows of the kernel would normalise by log K_t while summing over fewer points
    (or read past the class): refused, as is a count of 0 or a count per class missing."""
    kernels = torch.zeros(2, 3, 2, dtype=torch.float64)
    with pytest.raises(InputError, match=r"^counts must be 2 integers in \[1, 3\], got \["):
        KernelDensity(kernels, 1.0, torch.tensor(counts))


def test_counts_given_as_a_list_or_at_the_limit():
    kernels, _ = padded([np.zeros((3, 2)), np.ones((1, 2))], 2)
    for counts in ([3, 1], torch.tensor([3, 1], dtype=torch.int32), np.array([3, 1], dtype=np.int16)):
        kd = KernelDensity(kernels, 1.0, counts)
        assert kd.counts.dtype == torch.int64 and kd.counts.tolist() == [3, 1]
    assert KernelDensity(kernels, 1.0).counts.tolist() == [3, 3]  # default: every row counts


# ---------------------------------------------------------------------------------------------------------------
# scoring paths (performance contract of log_kd's docstring)
# ---------------------------------------------------------------------------------------------------------------

def spy(monkeypatch, name: str) -> list:
    calls = []
    original = getattr(density, name)

    def wrapped(*a, **kw):
        calls.append(name)
        return original(*a, **kw)

    monkeypatch.setattr(density, name, wrapped)
    return calls


def test_small_batches_gather_and_large_ones_are_grouped(monkeypatch):
    """Gathered when N·C·K ≤ chunk_elements // 16 (here 2 classes × 3 points, D = 4, 96 // 16 = 6)."""
    gathered, bounded = spy(monkeypatch, "gathered_lse"), spy(monkeypatch, "bounded_lse")
    kernels = torch.as_tensor(np.random.default_rng(13).normal(size=(2, 3, 4)))
    kd = KernelDensity(kernels, 1.0, chunk_elements=96)
    z, c = queries(2, 4, 2, seed=14)
    with torch.no_grad():
        one = kd.log_kd(z[:1], c[:1])  # 1·2·3 = 6 ≤ 6
        assert gathered == ["gathered_lse"] and bounded == []
        two = kd.log_kd(z, c)  # 2·2·3 = 12 > 6
    assert gathered == ["gathered_lse"] and len(bounded) >= 1
    np.testing.assert_allclose(torch.cat([one, two]).numpy(), ref_scores(kd, torch.cat([z[:1], z]),
                                                                         torch.cat([c[:1], c])), rtol=RTOL)


@pytest.mark.parametrize("no_grad, requires_grad, path", [(True, False, "bounded_lse"), (False, False, "bounded_lse"),
                                                          (True, True, "bounded_lse"), (False, True, "exact_lse")])
def test_the_exact_path_only_where_a_gradient_is_needed(monkeypatch, no_grad, requires_grad, path):
    calls = {n: spy(monkeypatch, n) for n in ("bounded_lse", "exact_lse")}
    kd = unequal_kd(chunk_elements=8)
    z, c = queries(10, 3, 3, seed=15)
    z.requires_grad_(requires_grad)
    with torch.set_grad_enabled(not no_grad):
        out = kd.log_kd(z, c)
    other = "exact_lse" if path == "bounded_lse" else "bounded_lse"
    assert calls[path] and not calls[other]
    np.testing.assert_allclose(out.detach().numpy(), ref_scores(kd, z.detach(), c), rtol=RTOL, atol=ATOL)


# ---------------------------------------------------------------------------------------------------------------
# fit, subset, copies
# ---------------------------------------------------------------------------------------------------------------

def test_fit_defaults_1000_points_seed_0():
    g = torch.Generator().manual_seed(16)
    f = torch.randn(1003, 2, generator=g, dtype=torch.float64)
    y = torch.zeros(1003, dtype=torch.long)
    kd = KernelDensity.fit(f, y, 1, sigma2=1.0)
    assert kd.counts.tolist() == [1000]
    assert torch.equal(kd.kernels, KernelDensity.fit(f, y, 1, per_class=1000, sigma2=1.0, seed=0).kernels)
    assert not torch.equal(kd.kernels, KernelDensity.fit(f, y, 1, per_class=1000, sigma2=1.0, seed=1).kernels)


def test_short_classes_warn_with_their_sizes_at_the_callers_line():
    f, _ = queries(9, 2, 3)
    y = torch.tensor([0, 0, 0, 0, 0, 1, 1, 2, 2])
    with pytest.warns(UserWarning) as rec:
        kd = KernelDensity.fit(f, y, 3, per_class=3, sigma2=1.0)
    assert len(rec) == 1 and Path(rec[0].filename).name != "density.py"  # names the caller, not the library
    assert str(rec[0].message) == ("fewer training features than per_class=3 (class 1: 2, class 2: 2); "
                                   "using all of them")
    assert kd.counts.tolist() == [3, 2, 2]
    with pytest.warns(UserWarning) as rec:
        sub = kd.subset(3, seed=0)
    assert Path(rec[0].filename).name != "density.py"
    assert str(rec[0].message) == "fewer kernel points than per_class=3 (class 1: 2, class 2: 2); using all of them"
    assert sub.counts.tolist() == [3, 2, 2]


def test_no_warning_when_a_class_has_exactly_per_class_points():
    f, _ = queries(6, 2, 2)
    y = torch.tensor([0, 0, 0, 1, 1, 1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        kd = KernelDensity.fit(f, y, 2, per_class=3, sigma2=1.0)
        sub = kd.subset(3, seed=0)
    assert kd.counts.tolist() == sub.counts.tolist() == [3, 3]


def test_subset_of_unequal_classes():
    kd = unequal_kd(chunk_elements=77)
    with pytest.warns(UserWarning, match=r"\(class 1: 1\)"):
        sub = kd.subset(2, seed=3)
    assert sub.counts.tolist() == [2, 1, 2] and sub.chunk_elements == kd.chunk_elements
    for c in range(3):
        pts = sub.kernels[c, : int(sub.counts[c])]
        assert (pts[:, None] == kd.kernels[c, : int(kd.counts[c])][None]).all(-1).any(1).all()
    z, q = queries(5, 3, 3, seed=17)
    np.testing.assert_allclose(sub.log_kd(z, q).numpy(), ref_scores(sub, z, q), rtol=RTOL, atol=ATOL)
    assert kd.subset(1, seed=0).counts.tolist() == [1, 1, 1]


def test_copies_keep_counts_chunks_and_convert_dtype():
    kd = unequal_kd(chunk_elements=123)
    for copy in (kd.with_sigma2(2.0), kd.to(dtype=torch.float32), kd.to("cpu")):
        assert copy.counts.tolist() == [5, 1, 3] and copy.chunk_elements == 123
    assert kd.with_sigma2(2.0).sigma2 == 2.0 and kd.to(dtype=torch.float32).kernels.dtype == torch.float32
    assert kd.to("cpu").kernels.dtype == torch.float64


def test_repr():
    assert repr(unequal_kd(sigma2=0.25)) == "KernelDensity(classes=3, points_per_class=1..5, dim=3, sigma2=0.25)"
    same = KernelDensity(torch.zeros(2, 4, 3), 1 / 3)
    assert repr(same) == "KernelDensity(classes=2, points_per_class=4, dim=3, sigma2=0.333333)"
    assert repr(KernelDensity(torch.zeros(1, 2, 5), 4.0)) == "KernelDensity(classes=1, points_per_class=2, dim=5, sigma2=4)"


# ---------------------------------------------------------------------------------------------------------------
# eta
# ---------------------------------------------------------------------------------------------------------------

def test_eta_of_a_class_with_one_feature_and_its_dtype():
    kd = unequal_kd()
    f, _ = queries(4, 3, 3, seed=18)
    y = torch.tensor([0, 1, 1, 2])  # classes 0 and 2: one feature each (its own −log KD)
    eta = kd.eta(f, y)
    assert eta.dtype == torch.float64
    want0 = -ref_scores(kd, f[:1], y[:1])[0]
    want2 = -ref_scores(kd, f[3:], y[3:])[0]
    l1 = ref_scores(kd, f[1:3], y[1:3])
    want1 = -(max(l1) + math.log((1 + math.exp(min(l1) - max(l1))) / 2))  # log of the mean of the two KD values
    np.testing.assert_allclose(eta.numpy(), [want0, want1, want2], rtol=RTOL)
    assert kd.eta(f.float(), y).dtype == torch.float32


# ---------------------------------------------------------------------------------------------------------------
# files
# ---------------------------------------------------------------------------------------------------------------

def test_file_header_and_unequal_counts_round_trip(tmp_path):
    kd = unequal_kd(sigma2=0.375)
    path = kd.save(tmp_path / "kd.safetensors")
    meta = read_metadata(path)
    assert meta["format"] == FORMAT
    assert json.loads(meta["meta"]) == {"format_version": 1, "sigma2": 0.375, "num_classes": 3, "dim": 3}
    back = KernelDensity.load(path)
    assert back.counts.tolist() == [5, 1, 3] and back.sigma2 == 0.375
    z, c = queries(5, 3, 3, seed=19)
    assert torch.equal(back.log_kd(z, c), kd.log_kd(z, c))


@pytest.mark.parametrize("tensors, metadata, message", [
    ({"kernels": torch.zeros(1, 2, 2)}, {"format": FORMAT, "meta": "{}"}, "is not an rcedetect K-density file"),
    ({"kernels": torch.zeros(1, 2, 2), "counts": torch.tensor([2])}, {"format": "other", "meta": "{}"},
     "is not an rcedetect K-density file"),
    ({"kernels": torch.zeros(1, 2, 2), "counts": torch.tensor([2])},
     {"format": FORMAT, "meta": json.dumps({"format_version": 2, "sigma2": 1.0})},
     "has K-density format version 2, this rcedetect reads 1"),
    ({"kernels": torch.zeros(1, 2, 2), "counts": torch.tensor([3])},
     {"format": FORMAT, "meta": json.dumps({"format_version": 1, "sigma2": 1.0})},
     r"^K-density file .* is inconsistent: counts must be 1 integers in \[1, 2\]"),
    ({"kernels": torch.zeros(1, 2, 2), "counts": torch.tensor([2])},
     {"format": FORMAT, "meta": json.dumps({"format_version": 1})}, r"^K-density file .* is inconsistent: 'sigma2'"),
])
def test_broken_files_are_refused_with_their_reason(tmp_path, tensors, metadata, message):
    path = save_tensors(tmp_path / "f.safetensors", tensors, metadata=metadata)
    with pytest.raises(CheckpointError, match=message):
        KernelDensity.load(path)


def test_unreadable_file_names_the_k_density_file(tmp_path):
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(CheckpointError, match=r"^K-density file .*junk.safetensors is not a valid safetensors"):
        KernelDensity.load(tmp_path / "junk.safetensors")


# ---------------------------------------------------------------------------------------------------------------
# messages: each names the argument that is wrong
# ---------------------------------------------------------------------------------------------------------------

def _kd():
    return unequal_kd()


F3, Y3 = torch.zeros(6, 3, dtype=torch.float64), torch.tensor([0, 0, 1, 1, 2, 2])


@pytest.mark.parametrize("call, error, message", [
    (lambda: KernelDensity([[[0.0]]], 1.0), InputError, r"^kernels must be a floating-point \(C, K, D\) tensor, got list$"),
    (lambda: KernelDensity(torch.zeros(2, 3), 1.0), InputError, r"^kernels must be .* got torch.Size\(\[2, 3\]\)$"),
    (lambda: KernelDensity(torch.zeros(1, 2, 3, dtype=torch.long), 1.0), InputError,
     r"^kernels must be a floating-point \(C, K, D\) tensor, got torch.Size\(\[1, 2, 3\]\)$"),
    (lambda: KernelDensity(torch.zeros(0, 2, 3), 1.0), InputError,
     r"^kernels must hold at least one class and one point, got shape \(0, 2, 3\)$"),
    (lambda: KernelDensity(torch.zeros(2, 0, 3), 1.0), InputError, r"at least one class and one point, got shape \(2, 0, 3\)$"),
    (lambda: KernelDensity(torch.full((1, 1, 2), math.inf), 1.0), InputError,
     r"^kernel points contain NaN or infinite values$"),
    (lambda: KernelDensity(torch.zeros(1, 1, 2), "wide"), ConfigError,
     r"^the K-density bandwidth sigma2 must be a number, got 'wide'$"),
    (lambda: KernelDensity(torch.zeros(1, 1, 2), -1.0), ConfigError,
     r"^the K-density bandwidth sigma2 must be finite and > 0, got -1.0$"),
    (lambda: KernelDensity.fit(F3, Y3, 3), ConfigError,
     r"^KernelDensity.fit needs sigma2; the paper's is default_sigma2\('ce' or 'rce'\)$"),
    (lambda: KernelDensity.fit(F3.tolist(), Y3, 3, sigma2=1.0), InputError, r"^features must be a torch.Tensor"),
    (lambda: KernelDensity.fit(F3, Y3, 0, sigma2=1.0), ConfigError, r"^num_classes must be a positive integer, got 0$"),
    (lambda: KernelDensity.fit(F3, Y3, "3", sigma2=1.0), ConfigError, r"^num_classes must be a positive integer, got '3'$"),
    (lambda: KernelDensity.fit(F3, Y3[:4], 3, sigma2=1.0), InputError, r"^labels must have shape \(6,\)"),
    (lambda: KernelDensity.fit(F3, Y3, 3, per_class=0, sigma2=1.0), ConfigError,
     r"^per_class must be a positive integer or 'all', got 0$"),
    (lambda: KernelDensity.fit(F3, Y3, 3, per_class=True, sigma2=1.0), ConfigError, r"got True$"),
    (lambda: KernelDensity.fit(F3, Y3, 4, per_class=1, sigma2=1.0), InputError,
     (r"^class 3 has no training features; K-density needs kernel points for every class "
      r"\(check the labels and num_classes\)$")),
    (lambda: _kd().subset(0, seed=0), ConfigError, r"^per_class must be a positive integer, got 0$"),
    (lambda: _kd().subset(True, seed=0), ConfigError, r"^per_class must be a positive integer, got True$"),
    (lambda: _kd().subset(2.0, seed=0), ConfigError, r"^per_class must be a positive integer, got 2.0$"),
    (lambda: _kd().log_kd(torch.zeros(2, 5, dtype=torch.float64), torch.tensor([0, 1])), InputError,
     r"^z has 5-d feature vectors but 3-d ones"),
    (lambda: _kd().log_kd(torch.zeros(2, 3, dtype=torch.float64), [0, 1]), InputError,
     r"^classes must be a torch.Tensor of class indices, got list$"),
    (lambda: _kd().log_kd(torch.zeros(2, 3, dtype=torch.float64), torch.tensor([0, 3])), InputError,
     r"^classes must lie in \[0, 3\)"),
    (lambda: _kd().eta(torch.zeros(2, 5, dtype=torch.float64), torch.tensor([0, 1])), InputError,
     r"^features has 5-d feature vectors"),
    (lambda: _kd().eta(F3, torch.tensor([0, 1])), InputError, r"^labels must have shape \(6,\)"),
    (lambda: _kd().eta(F3, torch.tensor([0, 0, 0, 2, 2, 2])), InputError,
     r"^class 1 has no training features; eta needs at least one per class$"),
])
def test_messages(call, error, message):
    with pytest.raises(error, match=message):
        call()
