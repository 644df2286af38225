"""LID, Mahalanobis and KD+BU (protocol §15): each score against an independent computation, differentiable
scores that match finite differences, save / load, the fitting split that never sees a scored attack, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist, mahalanobis

from rcedetect import attacks, detectors
from rcedetect.core.errors import CheckpointError, ConfigError, InputError
from rcedetect.detectors import Detector, View, create, observe
from rcedetect.detectors import combiner as combiner_module
from rcedetect.detectors.kd_bu import bayesian_uncertainty
from rcedetect.detectors.lid import lid_mle
from rcedetect.detectors.mahalanobis import squared_distances, tied_gaussian
from rcedetect.models import create as create_model
from rcedetect.models.classifier import Classifier
from rcedetect.models.features import extract

FAST = {"fit_images": 120, "fit_eps": 0.3}


# ----------------------------------------------------------------------------------------------- the math
def test_lid_of_points_on_a_plane_in_ten_dimensions_is_about_two():
    g = torch.Generator().manual_seed(0)
    basis, _ = torch.linalg.qr(torch.randn(10, 2, generator=g, dtype=torch.float64))
    ref = torch.rand(3000, 2, generator=g, dtype=torch.float64) @ basis.T
    query = (0.25 + 0.5 * torch.rand(300, 2, generator=g, dtype=torch.float64)) @ basis.T  # away from the edges
    lid = lid_mle(query, ref, k=20)
    # Ma et al.'s estimator averages k log-ratios of which one is 0: its mean is d·k/(k−2) for a d-dim. Poisson process
    assert float(lid.mean()) == pytest.approx(2.0 * 20 / 18, abs=0.15)
    assert float(lid.median()) == pytest.approx(2.0, abs=0.3)
    cube = torch.rand(3000, 5, generator=g, dtype=torch.float64)  # a 5-d cube: about 5
    assert float(lid_mle(0.25 + 0.5 * cube[:300], cube[300:], k=20).median()) == pytest.approx(5.0, abs=0.8)


def test_lid_equals_the_maximum_likelihood_formula_computed_with_scipy():
    g = torch.Generator().manual_seed(1)
    a, ref = torch.randn(7, 6, generator=g, dtype=torch.float64), torch.randn(40, 6, generator=g, dtype=torch.float64)
    r = np.sort(cdist(a.numpy(), ref.numpy()), axis=1)[:, :9]
    want = -1.0 / np.mean(np.log(r / r[:, -1:]), axis=1)
    np.testing.assert_allclose(lid_mle(a, ref, k=9).numpy(), want, rtol=1e-8)
    with pytest.raises(InputError, match="k"):
        lid_mle(a, ref, k=41)


def test_mahalanobis_distance_matches_scipy_with_the_fitted_tied_covariance():
    g = torch.Generator().manual_seed(2)
    labels = torch.arange(300) % 3
    f = torch.randn(300, 5, generator=g) @ torch.randn(5, 5, generator=g) + labels[:, None].float() * 2.0
    means, precision = tied_gaussian(f, labels, 3, shrinkage=0.0)
    fn = f.double().numpy()
    mu = np.stack([fn[labels.numpy() == c].mean(0) for c in range(3)])
    centred = fn - mu[labels.numpy()]
    cov = centred.T @ centred / len(fn)
    np.testing.assert_allclose(means.numpy(), mu, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(precision.numpy(), np.linalg.inv(cov), rtol=1e-4, atol=1e-4)
    q = torch.randn(4, 5, generator=g)
    d2 = squared_distances(q, means, precision)
    want = [[mahalanobis(q[i].numpy(), mu[c], np.linalg.inv(cov)) ** 2 for c in range(3)] for i in range(4)]
    np.testing.assert_allclose(d2.numpy(), want, rtol=1e-3)


def test_a_singular_covariance_is_shrunk_to_finite_scores_never_nan():
    g = torch.Generator().manual_seed(3)
    labels = torch.arange(60) % 2
    f = torch.randn(60, 3, generator=g)
    f = torch.cat([f, f[:, :1], torch.zeros(60, 1)], dim=1)  # a duplicated and a dead channel: Σ is singular
    means, precision = tied_gaussian(f, labels, 2)
    d2 = squared_distances(torch.randn(5, 5, generator=g), means, precision)
    assert bool(torch.isfinite(precision).all()) and bool(torch.isfinite(d2).all())
    with pytest.raises(InputError, match="class"):
        tied_gaussian(f, torch.zeros(60, dtype=torch.long), 2)  # no activations of class 1


def test_bayesian_uncertainty_is_the_variance_of_the_mc_samples():
    probs = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])  # two samples that disagree completely
    assert float(bayesian_uncertainty(probs)) == pytest.approx(0.5)  # mean ‖p‖² = 1, ‖p̄‖² = 0.5
    same = torch.tensor([[[0.3, 0.7]], [[0.3, 0.7]], [[0.3, 0.7]]])
    assert float(bayesian_uncertainty(same)) == pytest.approx(0.0, abs=1e-7)
    p = torch.softmax(torch.randn(6, 4, 3, generator=torch.Generator().manual_seed(4)), -1)
    want = [np.mean([p[t, i] @ p[t, i] for t in range(6)]) - (p[:, i].mean(0) @ p[:, i].mean(0)) for i in range(4)]
    np.testing.assert_allclose(bayesian_uncertainty(p).numpy(), np.array(want, dtype=np.float32), atol=1e-6)


# ----------------------------------------------------------------------------------------------- on a network
@pytest.fixture(scope="module")
def fitted(ce_classifier, synthetic):
    """Each baseline fitted on the synthetic training set (FGSM at ε 0.3 on its last 120 images)."""
    x, y = synthetic.train_images(), synthetic.y_train
    extra = {"mahalanobis": {"noise": 0.0}, "kd_bu": {"per_class": 100}}
    return {m: Detector(ce_classifier, m, **FAST, **extra.get(m, {})).fit(x, y)
            for m in ("lid", "mahalanobis", "kd_bu")}


def test_default_layers_are_every_stage_output_and_the_final_layer(ce_classifier):
    n = ce_classifier.net.n
    assert ce_classifier.stage_names() == [f"units.{n - 1}", f"units.{2 * n - 1}", f"units.{3 * n - 1}"]
    lid = create("lid").bind(ce_classifier)
    assert lid.layers == (*ce_classifier.stage_names(), "final")
    with pytest.raises(ConfigError, match="lacks"):
        create("lid", layers=["units.99"]).bind(ce_classifier)


def test_kd_bu_uncertainty_is_mc_dropout_through_the_head(fitted, ce_classifier, test_batch):
    metric = fitted["kd_bu"].scorer
    x, _ = test_batch
    with torch.no_grad():
        view = observe(ce_classifier, x)
        probs = torch.stack([torch.softmax(ce_classifier.logits_from_features(view.z * m), 1) for m in metric.masks])
    torch.testing.assert_close(metric.uncertainty(view), bayesian_uncertainty(probs))
    assert metric.rate == 0.5 and set(torch.unique(metric.masks).tolist()) <= {0.0, 2.0}  # 1 / (1 − p)
    kd = detectors.KDensity(per_class=metric.kd.per_class, seed=0)
    assert torch.equal(metric.raw(view)[:, 0], metric.kd.score(view)) and kd.name == "kd"


@pytest.mark.parametrize("metric", ["lid", "mahalanobis", "kd_bu"])
def test_scores_are_differentiable_and_match_finite_differences(metric, fitted, ce_classifier, test_batch):
    det = fitted[metric]
    x = test_batch[0][:6].clone()
    d = torch.randn(x.shape, generator=torch.Generator().manual_seed(5))
    xg = x.clone().requires_grad_(True)
    score = det.scorer.score(observe(ce_classifier, xg, det.scorer))
    (grad,) = torch.autograd.grad(score.sum(), xg)
    assert bool(torch.isfinite(grad).all()) and float(grad.abs().sum()) > 0
    h = 1e-3
    with torch.no_grad():
        plus = det.scorer.score(observe(ce_classifier, x + h * d, det.scorer))
        minus = det.scorer.score(observe(ce_classifier, x - h * d, det.scorer))
    fd = (plus - minus) / (2 * h)
    analytic = (grad * d).flatten(1).sum(1)
    torch.testing.assert_close(analytic.sum(), fd.sum(), rtol=0.05, atol=0.05 * float(fd.abs().sum()) + 1e-3)


@pytest.mark.parametrize("metric", ["lid", "mahalanobis", "kd_bu"])
def test_save_load_calibrate_and_the_generic_attack_term(metric, fitted, ce_classifier, test_batch, tmp_path):
    det = fitted[metric]
    x, _ = test_batch
    det.calibrate(x, fpr=0.25)
    det.save(tmp_path / metric)
    back = Detector.load(tmp_path / metric, ce_classifier)
    torch.testing.assert_close(back.score(x), det.score(x))
    assert back.threshold == det.threshold and back.scorer.split == det.scorer.split
    labels, scores = back.decide(x)
    assert torch.equal(labels == -1, scores > back.threshold)
    term = back.attack_term()  # score − T, what every adaptive attack runs against
    with torch.no_grad():
        view = observe(ce_classifier, x, term)
    torch.testing.assert_close(term.margin(view, view.logits.argmax(1)).cpu(), scores - back.threshold,
                               atol=1e-4, rtol=1e-4)


def test_adaptive_attacks_run_against_every_baseline_unchanged(fitted, ce_classifier, test_batch):
    x, y = test_batch
    for metric, det in fitted.items():
        det.calibrate(x, fpr=0.25)
        res = attacks.create("pgd_detector", eps=0.3, detector=det.attack_term(), steps=5, lambdas=(0.0, 10.0))(
            ce_classifier, x[:8], y[:8])
        assert res.x_adv.shape == x[:8].shape and "accepted" in res.extra, metric


def test_the_regression_is_fit_on_the_fitting_split_and_fit_on_attack_only(ce_classifier, synthetic, monkeypatch):
    """The adversarial examples the regression sees come from fit_on on the last fit_images training images and
    from nothing else: a detector scored on another attack, or on other images, never saw them."""
    x, y = synthetic.train_images(), synthetic.y_train
    seen: list[tuple[str, torch.Tensor]] = []
    real_create = attacks.AttackSpec.create

    class Spied:
        def __init__(self, name, attack):
            self.name, self.attack = name, attack

        def __call__(self, classifier, xb, yb=None):
            seen.append((self.name, xb.detach().cpu().clone()))
            return self.attack(classifier, xb, yb)

    monkeypatch.setattr(attacks.AttackSpec, "create", lambda spec, **kw: Spied(spec.name, real_create(spec, **kw)))
    det = Detector(ce_classifier, "lid", fit_on="bim", fit_eps=0.3, fit_images=120).fit(x, y)
    assert {name for name, _ in seen} == {"bim"}
    attacked = torch.cat([b for _, b in seen])
    assert torch.equal(attacked, x[-120:])  # exactly the fitting split, in order
    assert det.scorer.split.attack == "bim" and det.scorer.split.n_images == 120
    other = Detector(ce_classifier, "lid", fit_on="noise", fit_eps=0.3, fit_images=120).fit(x, y)
    assert not torch.equal(other.scorer.combiner.weight, det.scorer.combiner.weight)  # the fit attack matters


def test_bad_input_is_a_clear_error(ce_classifier, rce_classifier, synthetic, fitted, tmp_path):
    x, y = synthetic.train_images(), synthetic.y_train
    with pytest.raises(ConfigError, match="unknown detection metric"):
        Detector(ce_classifier, "lda")
    with pytest.raises(ConfigError, match="unknown attack"):
        create("lid", fit_on="nope")
    with pytest.raises(ConfigError, match="cw_wb"):
        create("lid", fit_on="cw_wb")
    with pytest.raises(ConfigError, match="k"):
        create("lid", k=200, batch=100)
    with pytest.raises(InputError, match="reference"):  # too few samples for the k-NN reference
        Detector(ce_classifier, "lid", batch=100, fit_images=8).fit(x[:60], y[:60])
    with pytest.raises(InputError, match="not cached features"):
        Detector(ce_classifier, "mahalanobis").fit(extract(ce_classifier, x, y), y)
    with pytest.raises(ConfigError, match="noise"):
        create("mahalanobis", noise=[0.5])
    fitted["lid"].save(tmp_path / "lid")
    with pytest.raises(CheckpointError, match="rce model"):
        Detector.load(tmp_path / "lid", rce_classifier)
    deeper = Classifier(create_model("resnet14", in_channels=1, num_classes=4), "ce")
    with pytest.raises(CheckpointError, match="wide"):  # the same layer names, other widths
        Detector.load(tmp_path / "lid", deeper)
    (tmp_path / "lid" / "lid.safetensors").write_bytes(b"not a tensor file")
    with pytest.raises(CheckpointError):
        Detector.load(tmp_path / "lid", ce_classifier)


def test_fitting_features_with_a_nan_are_refused():
    with pytest.raises(InputError, match="finite"):
        combiner_module.LogisticCombiner.fit(torch.tensor([[0.0], [float("nan")]]), torch.tensor([[1.0], [2.0]]))


def test_a_view_without_a_layer_or_images_says_what_is_missing():
    view = View(torch.zeros(2, 3), torch.zeros(2, 2))
    with pytest.raises(InputError, match="units.0"):
        view.layer("units.0")
    with pytest.raises(InputError, match="images"):
        view.need_images("pre-processing")
    metric = create("lid")
    metric.layers = ("units.0",)
    with pytest.raises(InputError, match="lack"):
        detectors.score_features(metric, None, torch.zeros(2, 3))


def test_mahalanobis_preprocessing_moves_each_layer_toward_its_closest_class(ce_classifier, synthetic, test_batch):
    x, y = synthetic.train_images(), synthetic.y_train
    det = Detector(ce_classifier, "mahalanobis", **FAST).fit(x, y)  # ε chosen from Lee et al.'s magnitudes
    m = det.scorer
    assert set(m.selection) == {"0", "0.0005", "0.001", "0.0014", "0.002", "0.005", "0.01"}
    assert m.noise in m.noise_grid and m.selection[f"{m.noise:g}"] == max(m.selection.values())
    m.noise = 0.005
    xb = test_batch[0][:5]
    want = []
    for layer in m.layers:
        x0 = xb.clone().requires_grad_(True)
        act = observe(ce_classifier, x0, m).layer(layer)
        dist = squared_distances(act, m.means[layer], m.precision[layer]).amin(1)
        (g,) = torch.autograd.grad(dist.sum(), x0)
        with torch.no_grad():
            moved = observe(ce_classifier, xb - 0.005 * g.sign(), m).layer(layer)
            want.append(-squared_distances(moved, m.means[layer], m.precision[layer]).amin(1))
    with torch.no_grad():
        got = m.raw(observe(ce_classifier, xb, m))
    torch.testing.assert_close(got, torch.stack(want, 1), rtol=1e-4, atol=1e-4)
    m.noise = 0.0
    with torch.no_grad():
        plain = m.raw(observe(ce_classifier, xb, m))
    assert float((got >= plain - 1e-3).float().mean()) > 0.5  # mostly closer to a class after the step (Lee et al.)
    m.noise = 0.005
    with pytest.raises(InputError, match="images"):
        detectors.score_features(m, ce_classifier, extract(ce_classifier, xb, layers=m.layers))


def test_mahalanobis_choice_of_eps_reuses_the_direction_and_equals_the_plain_computation(ce_classifier, synthetic):
    """The fit computes sign(∇ distance) once per layer and image and reuses it for every ε of the grid; the AUCs it
    chose by, the ε and the final regression are those of the plain computation (:func:`raw_features` run again at
    each ε, its own gradient each time)."""
    from rcedetect.detectors.combiner import LogisticCombiner, raw_features
    from rcedetect.stats.metrics import auc as roc_auc

    x, y = synthetic.train_images(), synthetic.y_train
    m = Detector(ce_classifier, "mahalanobis", **FAST, noise=[0.0, 0.002, 0.01]).fit(x, y).scorer
    clean, adv = (torch.rand(20, *x.shape[1:], generator=torch.Generator().manual_seed(k)) for k in (0, 1))
    got = m._raw_at(ce_classifier, clean, m._signs(ce_classifier, clean), 0.01)
    m.noise = 0.01
    torch.testing.assert_close(got, raw_features(m, ce_classifier, clean), rtol=0, atol=0)
    # refit the regression on the fitting split both ways
    fast = Detector(ce_classifier, "mahalanobis", **FAST, noise=[0.0, 0.002, 0.01]).fit(x, y).scorer
    g = torch.Generator().manual_seed(fast.seed)
    pc, pa = torch.randperm(len(clean), generator=g), torch.randperm(len(adv), generator=g)
    (c1, c2), (a1, a2) = pc.tensor_split(2), pa.tensor_split(2)
    fast.fit_combiner(ce_classifier, clean, adv)
    aucs = {}
    for eps in (0.0, 0.002, 0.01):
        m.noise = eps
        fc, fa = raw_features(m, ce_classifier, clean), raw_features(m, ce_classifier, adv)
        lr = LogisticCombiner.fit(fc[c1], fa[a1])
        with torch.no_grad():
            aucs[f"{eps:g}"] = round(float(roc_auc(lr(fc[c2]), lr(fa[a2]), ties="half")), 6)
    assert fast.selection == aucs
    m.noise = fast.noise
    want = LogisticCombiner.fit(raw_features(m, ce_classifier, clean), raw_features(m, ce_classifier, adv))
    for k, t in want.tensors().items():
        torch.testing.assert_close(fast.combiner.tensors()[k], t, rtol=0, atol=0)


def test_the_dropout_variant_drops_z_only_in_training_and_kd_bu_reads_its_rate():
    from rcedetect.detectors.kd_bu import model_dropout
    from rcedetect.training.config import TrainConfig

    net = create_model("resnet8", in_channels=1, num_classes=4, dropout=0.3)
    z = torch.randn(16, 64, generator=torch.Generator().manual_seed(6))
    net.train()
    torch.manual_seed(0)
    assert not torch.allclose(net.head(z), net.fc(z))
    net.eval()
    assert torch.equal(net.head(z), net.fc(z))
    assert model_dropout(Classifier(net, "ce")) == 0.3
    assert model_dropout(Classifier(create_model("resnet8", 1, 4), "ce")) == 0.0
    assert TrainConfig(dropout=0.5).dropout == 0.5
    with pytest.raises(ConfigError, match="dropout"):
        TrainConfig(dropout=1.0)


def test_the_tiny_run_compares_every_detector_fit_on_a_split_it_never_scores(tiny_run):
    _out, results, _ = tiny_run
    n_train = 600  # the synthetic training set; the attacked pool and the held-out images are test images
    for model in ("ce", "rce"):
        base = results["detectors"][model]["baselines"]
        assert set(base) == {"kd_bu", "lid", "mahalanobis"}
        for b in base.values():
            start, end = b["fit_split_indices"]
            assert b["fit_split"]["attack"] == "fgsm" and b["fit_split"]["n_images"] == end - start == 200
            assert b["statistics_images"] <= start and end == n_train  # the statistics never include the split
        assert base["mahalanobis"]["noise"] in (0.0, 0.002) and set(base["mahalanobis"]["noise_selection"]) == {
            "0", "0.002"}
    for model in ("target_ce", "target_rce"):
        assert "baselines" not in results["detectors"][model]
    recs = [r for r in results["adaptive"]["records"] if r["metric"] in ("lid", "mahalanobis", "kd_bu")]
    assert {r["attack"] for r in recs} == {"pgd_detector"} and len(recs) == 2 * 3 * 2  # models × baselines × ε
    from rcedetect.report.compare import compare_blocks
    from rcedetect.report.format import to_markdown

    report = to_markdown(compare_blocks(results))
    assert "## Detectors compared" in report and "FGSM (fit)" in report and "| LID | RCE |" in report
