"""K-density (protocol §4.2-4.4): agreement with scikit-learn, log-domain stability, gradients, fitting, files."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from sklearn.neighbors import KernelDensity as SkKernelDensity

from rcedetect.core.errors import CheckpointError, ConfigError, InputError
from rcedetect.detectors.bandwidth import default_sigma2, log_density, select_sigma2
from rcedetect.detectors.density import KernelDensity


def clustered(n: int, d: int, classes: int, seed: int = 0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(classes, d, generator=g, dtype=dtype) * 3
    y = torch.arange(n) % classes
    return centers[y] + torch.randn(n, d, generator=g, dtype=dtype), y


def sklearn_log_kd(kd: KernelDensity, z: torch.Tensor, classes: torch.Tensor) -> np.ndarray:
    """Feinman et al.'s per-class sklearn KDE, with its Gaussian normalising constant removed."""
    h = math.sqrt(kd.sigma2 / 2)  # exp(-d²/σ²) = exp(-d²/(2h²))
    out = np.empty(len(z))
    for c in range(kd.num_classes):
        sel = (classes == c).numpy()
        if sel.any():
            sk = SkKernelDensity(kernel="gaussian", bandwidth=h, rtol=0, atol=0)
            sk.fit(kd.kernels[c, : int(kd.counts[c])].numpy())
            out[sel] = sk.score_samples(z[sel].numpy()) + 0.5 * kd.dim * math.log(math.pi * kd.sigma2)
    return out


@pytest.mark.parametrize("per_class", [40, "all"])
def test_equals_sklearn_up_to_its_normalising_constant(per_class):
    f, y = clustered(303, 16, 4)
    y[:30] = 0  # unequal class sizes for "all" (padded kernels)
    kd = KernelDensity.fit(f, y, 4, per_class=per_class, sigma2=2.5, seed=3)
    # queries near their class (scikit-learn's tree bounds are not accurate where the density is ~1e-17 or less)
    z, c = clustered(50, 16, 4, seed=0)
    z = z + 0.5 * torch.randn(50, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ours = kd.kd(z, c).numpy()
    ref = np.exp(sklearn_log_kd(kd, z, c))
    np.testing.assert_allclose(ours, ref, rtol=1e-6)


def test_definition_by_hand():
    kernels = torch.tensor([[[0.0, 0.0], [1.0, 0.0]], [[0.0, 2.0], [0.0, 0.0]]], dtype=torch.float64)
    kd = KernelDensity(kernels, sigma2=0.5)
    z = torch.tensor([[1.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
    got = kd.kd(z, torch.tensor([0, 1]))
    want0 = (math.exp(-2 / 0.5) + math.exp(-1 / 0.5)) / 2
    want1 = (math.exp(-2 / 0.5) + math.exp(-2 / 0.5)) / 2
    assert got.tolist() == pytest.approx([want0, want1], rel=1e-12)


def test_log_kd_is_finite_where_kd_underflows():
    f, y = clustered(200, 64, 2)
    kd = KernelDensity.fit(f, y, 2, per_class=50, sigma2=0.1 / 0.26)
    z = f[:5] + 40.0  # d² ≈ 1e5: exp(-d²/σ²) underflows to 0 even in float64
    c = torch.zeros(5, dtype=torch.long)
    k = kd.kernels[0, :50]
    d2 = torch.cdist(z, k).pow(2)
    assert torch.all(torch.exp(-d2 / kd.sigma2).mean(1) == 0)  # the naive computation fails
    got = kd.log_kd(z, c)
    want = torch.logsumexp(-d2 / kd.sigma2, 1) - math.log(50)
    assert torch.isfinite(got).all()
    assert torch.allclose(got, want, rtol=1e-9)
    assert torch.isfinite(kd.to(dtype=torch.float32).log_kd((z * 100).float(), c)).all()


def test_gradients_match_finite_differences():
    f, y = clustered(90, 6, 3)
    kd = KernelDensity.fit(f, y, 3, per_class=20, sigma2=1.3)
    z = (f[:4] + 0.3 * torch.randn(4, 6, dtype=torch.float64)).requires_grad_(True)
    c = torch.tensor([0, 1, 2, 1])
    assert torch.autograd.gradcheck(lambda q: kd.log_kd(q, c), (z,))
    small = KernelDensity(kd.kernels, kd.sigma2, kd.counts, chunk_elements=8)  # chunked path
    assert torch.autograd.gradcheck(lambda q: small.log_kd(q, c), (z,))
    far = (z.detach() + 50).requires_grad_(True)
    kd.log_kd(far, c).sum().backward()
    assert torch.isfinite(far.grad).all() and far.grad.abs().sum() > 0


def test_chunking_order_and_padding_do_not_change_results():
    f, y = clustered(400, 8, 4)
    kd = KernelDensity.fit(f, y, 4, per_class="all", sigma2=0.8)
    z, _ = clustered(37, 8, 4, seed=2)
    c = torch.randint(0, 4, (37,), generator=torch.Generator().manual_seed(1))
    ref = kd.log_kd(z, c)
    tiny = KernelDensity(kd.kernels, kd.sigma2, kd.counts, chunk_elements=7)
    assert torch.allclose(tiny.log_kd(z, c), ref, rtol=1e-10)
    perm = torch.randperm(37, generator=torch.Generator().manual_seed(5))
    assert torch.allclose(kd.log_kd(z[perm], c[perm]), ref[perm], rtol=1e-12)
    counts = torch.tensor([60, 100, 3, 100])
    garbage = kd.kernels.clone()
    for k in range(4):
        garbage[k, counts[k]:] = 1e6
    a = KernelDensity(garbage, 0.8, counts).log_kd(z, c)
    b = KernelDensity(kd.kernels, 0.8, counts).log_kd(z, c)
    assert torch.equal(a, b)
    assert torch.allclose(kd.to(dtype=torch.float32).log_kd(z.float(), c).double(), ref, rtol=1e-4, atol=1e-4)


def test_fit_selects_seeded_points_of_the_true_class():
    f, y = clustered(300, 5, 3)
    a = KernelDensity.fit(f, y, 3, per_class=20, sigma2=1.0, seed=7)
    b = KernelDensity.fit(f, y, 3, per_class=20, sigma2=1.0, seed=7)
    c = KernelDensity.fit(f, y, 3, per_class=20, sigma2=1.0, seed=8)
    assert torch.equal(a.kernels, b.kernels) and not torch.equal(a.kernels, c.kernels)
    assert a.counts.tolist() == [20, 20, 20] and a.dim == 5 and a.num_classes == 3
    for k in range(3):
        pts = a.kernels[k]
        match = (pts[:, None, :] == f[y == k][None]).all(-1).any(1)
        assert match.all() and len(torch.unique(pts, dim=0)) == 20


def test_fit_with_too_few_or_no_points():
    f, y = clustered(30, 4, 3)
    with pytest.warns(UserWarning, match="fewer training features than per_class"):
        kd = KernelDensity.fit(f, y, 3, per_class=50, sigma2=1.0)
    assert kd.counts.tolist() == [10, 10, 10]
    with pytest.raises(InputError, match="class 3 has no training features"):
        KernelDensity.fit(f, y, 4, per_class=5, sigma2=1.0)


def test_subset_is_a_seeded_subset():
    f, y = clustered(300, 5, 3)
    kd = KernelDensity.fit(f, y, 3, per_class=50, sigma2=1.0)
    sub = kd.subset(10, seed=1)
    assert sub.counts.tolist() == [10, 10, 10] and sub.sigma2 == kd.sigma2
    assert torch.equal(sub.kernels, kd.subset(10, seed=1).kernels)
    for k in range(3):
        assert (sub.kernels[k][:, None] == kd.kernels[k][None]).all(-1).any(1).all()


@pytest.mark.parametrize("n_per_class", [31, 32])  # odd and even counts (Matlab's median averages the middle two)
def test_eta_is_minus_log_median_kd(n_per_class):
    f, y = clustered(3 * n_per_class, 6, 3)
    kd = KernelDensity.fit(f, y, 3, per_class=10, sigma2=2.0)
    eta = kd.eta(f, y)
    for k in range(3):
        kd_vals = kd.kd(f[y == k], y[y == k]).numpy()
        assert eta[k].item() == pytest.approx(-math.log(np.median(kd_vals)), rel=1e-10)


def test_default_bandwidths():
    assert default_sigma2("ce") == pytest.approx(1 / 0.26)
    assert default_sigma2("rce") == pytest.approx(0.1 / 0.26)
    with pytest.raises(ConfigError):
        default_sigma2("mse")


def test_log_density_is_sklearns_log_likelihood():
    f, y = clustered(100, 3, 2)
    kd = KernelDensity.fit(f, y, 2, per_class="all", sigma2=0.7)
    z, _ = clustered(10, 3, 2, seed=4)
    c = torch.zeros(10, dtype=torch.long)
    sk = SkKernelDensity(bandwidth=math.sqrt(0.35)).fit(kd.kernels[0, :50].numpy())
    np.testing.assert_allclose(log_density(kd, z, c).numpy(), sk.score_samples(z.numpy()), rtol=1e-6)


def test_select_sigma2_maximises_held_out_likelihood():
    g = torch.Generator().manual_seed(0)
    f = torch.randn(600, 2, generator=g, dtype=torch.float64)
    y = torch.arange(600) % 2
    sel = select_sigma2(f, y, 2, candidates=[0.01, 0.1, 0.3, 1.0, 10.0, 100.0])
    assert sel.sigma2 == sel.candidates[int(np.argmax(sel.mean_log_likelihood))]
    assert sel.sigma2 in (0.1, 0.3, 1.0)  # neither the spiky nor the flat extreme
    assert len(sel.per_class_sigma2) == 2
    with pytest.warns(UserWarning, match="edge"):
        select_sigma2(f, y, 2, candidates=[10.0, 100.0])


def test_validation_errors():
    f, y = clustered(60, 4, 2)
    kd = KernelDensity.fit(f, y, 2, per_class=10, sigma2=1.0)
    for bad in (0.0, -1.0, float("nan"), "wide"):
        with pytest.raises(ConfigError):
            KernelDensity.fit(f, y, 2, sigma2=bad)
        with pytest.raises(ConfigError):
            KernelDensity(kd.kernels, bad)
    with pytest.raises(ConfigError):
        KernelDensity.fit(f, y, 2)  # sigma2 is required
    with pytest.raises(ConfigError):
        KernelDensity.fit(f, y, 2, per_class=0, sigma2=1.0)
    with pytest.raises(InputError, match="4-d"):
        kd.log_kd(torch.zeros(3, 5, dtype=torch.float64), torch.zeros(3, dtype=torch.long))
    z = torch.zeros(3, 4, dtype=torch.float64)
    with pytest.raises(InputError, match="NaN"):
        kd.log_kd(z.clone().fill_(float("nan")), torch.zeros(3, dtype=torch.long))
    with pytest.raises(InputError):
        kd.log_kd(z, torch.tensor([0, 1, 2]))
    with pytest.raises(InputError):
        kd.log_kd(z, torch.tensor([0, 1]))
    with pytest.raises(InputError):
        KernelDensity.fit(f.clone().fill_(float("nan")), y, 2, sigma2=1.0)
    with pytest.raises(InputError):
        KernelDensity(kd.kernels, 1.0, counts=torch.tensor([0, 3]))


def test_save_load_round_trip(tmp_path):
    f, y = clustered(120, 4, 3, dtype=torch.float32)
    kd = KernelDensity.fit(f, y, 3, per_class="all", sigma2=0.1 / 0.26)
    kd.save(tmp_path / "kd.safetensors")
    back = KernelDensity.load(tmp_path / "kd.safetensors")
    assert back.sigma2 == kd.sigma2 and torch.equal(back.counts, kd.counts)
    assert torch.equal(back.log_kd(f, y), kd.log_kd(f, y))
    moved = kd.to("cpu")
    assert moved is not kd and torch.equal(moved.kernels, kd.kernels)
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(CheckpointError):
        KernelDensity.load(tmp_path / "junk.safetensors")
    from rcedetect.core.io import save_tensors

    save_tensors(tmp_path / "foreign.safetensors", {"kernels": kd.kernels})
    with pytest.raises(CheckpointError, match="not an rcedetect"):
        KernelDensity.load(tmp_path / "foreign.safetensors")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert repr(back).startswith("KernelDensity(classes=3")


@pytest.mark.parametrize("sigma2", [1 / 0.26, 0.1 / 0.26])
def test_batched_scoring_equals_direct_log_sum_exp(sigma2):
    """logsumexp.bounded_lse, the no-gradient path for large batches (shifted exponents in one product per block, no row maximum, rows
    recomputed where the shift was too loose) against logsumexp over cdist, in float64 and float32."""
    f, y = clustered(1203, 16, 3)
    counts = torch.tensor([400, 1, 401])  # a class of one point: its norm range is a single value
    kernels = torch.zeros(3, 401, 16, dtype=torch.float64)
    for c in range(3):
        kernels[c, : counts[c]] = f[y == c][: counts[c]]
    kd = KernelDensity(kernels, sigma2, counts)
    z, c = clustered(3000, 16, 3, seed=4)
    z[::7] += 30.0  # far from every kernel point: exp underflows, so these rows take the exact path
    c = c.roll(1)  # many queries scored against another class's kernel
    assert len(z) * 3 * 401 > kd.chunk_elements // 16  # the batched path, not the gathered one
    want = torch.cat([torch.logsumexp(-torch.cdist(z[c == k], kernels[k, : counts[k]]).pow(2) / sigma2, 1)
                      - math.log(counts[k]) for k in range(3)])
    want = want[torch.argsort(torch.argsort(c, stable=True))]
    with torch.no_grad():
        got = kd.log_kd(z, c)
    assert torch.allclose(got, want, rtol=1e-10, atol=1e-9)
    zg = z.clone().requires_grad_(True)
    graded = kd.log_kd(zg, c)  # the differentiable path
    assert torch.allclose(graded.detach(), want, rtol=1e-10, atol=1e-9)
    graded.sum().backward()
    few = z[1:6].clone().requires_grad_(True)  # a small batch: the gathered path, each row on its own
    kd.log_kd(few, c[1:6]).sum().backward()
    assert torch.allclose(zg.grad[1:6], few.grad, rtol=1e-8, atol=1e-10)
    with torch.no_grad():
        got32 = kd.to(dtype=torch.float32).log_kd(z.float(), c).double()
    assert torch.allclose(got32, want, rtol=1e-5, atol=1e-3)
