"""Adaptive attacks (PGD, PGD against a detector term, selective / orthogonal PGD, the K-density feature attack and
the gradient-free random search): known answers on hand-weighted linear models, invariants on the tiny ResNets."""

from __future__ import annotations

import math

import pytest
import torch
from tiny_nets import LinearNet

from rcedetect import Classifier, attacks
from rcedetect.attacks.engine import random_start
from rcedetect.attacks.feature_attack import feature_distance
from rcedetect.attacks.gradient import BIM
from rcedetect.attacks.orthogonal_pgd import OrthogonalPGD, orthogonal_component
from rcedetect.attacks.pgd import class_margin
from rcedetect.attacks.pgd_detector import PGDDetector
from rcedetect.attacks.random_search import objective
from rcedetect.core.errors import ConfigError
from rcedetect.detectors import KDTerm, KernelDensity, ScoreTerm
from rcedetect.detectors import create as create_metric
from rcedetect.detectors.base import View, observe

ADAPTIVE = ("pgd_detector", "selective_pgd", "orthogonal_pgd", "feature_pgd", "random_search_detector")
NAMES = ("pgd", *ADAPTIVE)
#: small settings per attack, to keep the file fast
FAST = {"pgd": {"steps": 10}, "pgd_detector": {"steps": 10, "lambdas": (0.0, 10.0)}, "selective_pgd": {"steps": 10},
        "orthogonal_pgd": {"steps": 10}, "feature_pgd": {"steps": 10}, "random_search_detector": {"iterations": 30}}


class AcceptAll:
    """A detector term that rejects nothing: margin −1 everywhere, still a function of z for autograd."""

    layers = ()

    def margin(self, view, classes):
        return -1.0 + 0.0 * view.z.sum(1)


def linear_classifier(classes=3, d=16, scale=3.0, seed=0, objective="ce"):
    w = torch.randn(classes, d, generator=torch.Generator().manual_seed(seed)) * scale
    return Classifier(LinearNet(w), objective).eval()


def images(n=8, seed=1, lo=0.3, hi=0.7, side=4):
    g = torch.Generator().manual_seed(seed)
    return lo + (hi - lo) * torch.rand(n, 1, side, side, generator=g)


def box_images(n=8, seed=1):
    """Images with pixels at 0 and at 1, so clipping to [0, 1] matters."""
    x = images(n, seed, 0.0, 1.0)
    x[:, :, 0, :2] = 0.0
    x[:, :, 1, :2] = 1.0
    return x


@pytest.fixture(scope="module")
def linear_kd():
    """(classifier, KDTerm) for a 3-class linear model whose features are the 16 pixels."""
    clf = linear_classifier()
    train = images(300, seed=7, lo=0.0, hi=1.0)
    feats = train.flatten(1)
    labels = clf.predict(train)
    kd = KernelDensity.fit(feats, labels, 3, per_class=12, sigma2=0.5, seed=0)
    sub = kd.subset(8, seed=1)
    return clf, KDTerm(sub, sub.eta(feats, labels))


@pytest.fixture(scope="module")
def resnet_kd(rce_classifier, synthetic):
    """A K-density term on the tiny RCE ResNet's final hidden features of the synthetic training set."""
    train = synthetic.train_images()
    with torch.no_grad():
        feats = rce_classifier.features(train)
    labels = synthetic.y_train
    kd = KernelDensity.fit(feats, labels, 4, per_class=50, sigma2=20.0, seed=0)
    sub = kd.subset(20, seed=1)
    return KDTerm(sub, sub.eta(feats, labels))


def build(name, eps, term, **kw):
    settings = {"eps": eps, **FAST[name], **kw}
    if name != "pgd":
        settings["detector"] = term
    return attacks.create(name, **settings)


# ---------------------------------------------------------------------------------------------------------------
def test_registry_traits():
    for name in NAMES:
        spec = attacks.spec(name)
        assert spec.takes_eps and spec.seeded, name
        assert spec.needs_detector == (name != "pgd"), name
    assert attacks.create("selective_pgd", eps=0.1, detector=AcceptAll()).mode == "selective"
    assert attacks.create("orthogonal_pgd", eps=0.1, detector=AcceptAll()).mode == "orthogonal"
    pgd = attacks.create("pgd", eps=0.1)
    assert (pgd.norm, pgd.steps, pgd.step_size, pgd.random_start, pgd.restarts, pgd.loss) == (
        "linf", 100, None, True, 1, "ce")
    assert attacks.create("pgd_detector", eps=0.1, detector=AcceptAll()).lambdas == (0.0, 1.0, 10.0, 100.0)
    assert attacks.create("pgd", eps=0.1, steps=7, restarts=2).passes_per_image() == 42.0
    # per run (4 λ × 1 start): one forward+backward per step, one forward for the last iterate
    assert attacks.create("pgd_detector", eps=0.1, detector=AcceptAll(), steps=5).passes_per_image() == 64.0
    assert attacks.create("pgd_detector", eps=0.1, detector=AcceptAll(), steps=5,
                          keep_best=False).passes_per_image() == 64.0


@pytest.mark.parametrize("bad", [
    ("pgd_detector", {"lambdas": (1.0, -1.0)}), ("pgd_detector", {"lambdas": ()}), ("pgd", {"norm": "l1"}),
    ("pgd_detector", {"norm": "l1"}), ("orthogonal_pgd", {"norm": "linf2"}), ("feature_pgd", {"norm": "l0"}),
    ("pgd", {"loss": "hinge"}), ("pgd", {"steps": 0}), ("pgd", {"restarts": 0}), ("pgd", {"eps": -0.1}),
    ("pgd", {"step_size": -1.0}), ("random_search_detector", {"lam": -1.0}), ("random_search_detector", {"p": 0.0}),
    ("random_search_detector", {"p": 1.5}), ("feature_pgd", {"k": 0}), ("orthogonal_pgd", {"mode": "parallel"}),
])
def test_bad_settings_raise_config_error(bad):
    name, settings = bad
    kw = {"eps": 0.1, **({} if name == "pgd" else {"detector": AcceptAll()}), **settings}
    with pytest.raises(ConfigError):
        attacks.create(name, **kw)


@pytest.mark.parametrize("name", ADAPTIVE)
def test_missing_detector_raises_config_error(name):
    with pytest.raises(ConfigError, match="detector"):
        attacks.create(name, eps=0.1)
    with pytest.raises(ConfigError, match="detector"):
        attacks.spec(name).cls(eps=0.1, detector=None)
    with pytest.raises(ConfigError, match="detector"):
        attacks.create(name, eps=0.1, detector=object())


def test_feature_pgd_needs_a_kdensity_term():
    clf = linear_classifier()
    term = ScoreTerm(create_metric("confidence"), -0.5)
    with pytest.raises(ConfigError, match="needs a K-density detector term"):
        attacks.create("feature_pgd", eps=0.1, detector=term, steps=2)(clf, images(2))


@pytest.mark.parametrize("name", NAMES)
def test_eps_zero_returns_the_input(name, linear_kd):
    clf, term = linear_kd
    x = box_images()
    res = build(name, 0.0, term)(clf, x)
    assert torch.equal(res.x_adv, x)
    assert not res.success.any()


@pytest.mark.parametrize("name", NAMES)
def test_empty_batch(name, linear_kd):
    clf, term = linear_kd
    res = build(name, 0.1, term)(clf, images(2)[:0])
    assert res.x_adv.shape == (0, 1, 4, 4) and res.success.shape == (0,)
    assert all(v.shape == (0,) for v in res.extra.values())


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 0.5)])
@pytest.mark.parametrize("name", NAMES)
def test_budget_box_and_input_untouched(name, norm, eps, linear_kd):
    if name == "random_search_detector" and norm == "l2":
        pytest.skip("the random search is L∞ only")
    clf, term = linear_kd
    x = box_images()
    before = x.clone()
    kw = {} if name == "random_search_detector" else {"norm": norm}
    res = build(name, eps, term, **kw)(clf, x)
    assert torch.equal(x, before)
    assert res.x_adv.shape == x.shape and float(res.x_adv.min()) >= 0.0 and float(res.x_adv.max()) <= 1.0
    delta = (res.x_adv - x).flatten(1)
    size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    assert bool((size <= eps * (1 + 1e-5)).all()), size
    assert res.success.dtype == torch.bool and len(res.success) == len(x)


def test_random_start_is_inside_the_ball():
    x = images(16, lo=0.0, hi=1.0)
    g = torch.Generator().manual_seed(0)
    linf = random_start(x, 0.1, "linf", g) - x
    l2 = random_start(x, 0.5, "l2", g) - x
    assert float(linf.abs().max()) <= 0.1 + 1e-7 and float(linf.abs().max()) > 0.05
    assert bool((l2.flatten(1).norm(dim=1) <= 0.5 + 1e-6).all())


def test_pgd_ce_without_random_start_is_bim():
    """Same steps (ε/steps, sign of the CE gradient), projection and clipping as BIM: the same images."""
    clf = linear_classifier()
    x = box_images()
    pgd = attacks.create("pgd", eps=0.1, steps=10, step_size=0.01, random_start=False)(clf, x)
    assert torch.equal(pgd.x_adv, BIM(0.1, steps=10)(clf, x).x_adv)


def test_pgd_restarts_only_add_successes(rce_classifier, test_batch):
    """At ε 0.2 one 5-step restart fools about half of the 64 images (35 here), leaving room for the restarts to
    add some (42 with five) whatever the float rounding of the machine that trained the fixture model."""
    x = test_batch[0]
    one = attacks.create("pgd", eps=0.2, steps=5, restarts=1, seed=3)(rce_classifier, x)
    three = attacks.create("pgd", eps=0.2, steps=5, restarts=5, seed=3)(rce_classifier, x)
    assert 0 < int(one.success.sum()) < len(x)
    assert bool((three.success >= one.success).all()) and int(three.success.sum()) > int(one.success.sum())
    same = one.success  # the first restart starts at the same point, so its successes are kept as they are
    assert torch.equal(three.x_adv[same], one.x_adv[same])


@pytest.mark.parametrize("norm,eps", [("linf", 0.05), ("l2", 1.0)])
def test_pgd_detector_lambda0_is_pgd_margin(norm, eps, rce_classifier, test_batch, resnet_kd):
    x = test_batch[0][:16]
    pgd = attacks.create("pgd", eps=eps, norm=norm, steps=8, loss="margin", random_start=False)(rce_classifier, x)
    det = PGDDetector(eps=eps, detector=resnet_kd, norm=norm, steps=8, lambdas=(0,), restarts=1,
                      random_start=False, keep_best=False)(rce_classifier, x)
    assert torch.equal(det.x_adv, pgd.x_adv)
    assert torch.equal(det.extra["misclassified"], pgd.success)
    assert det.extra["lambda"].tolist() == [0.0] * 16


def test_pgd_detector_against_a_permissive_term_is_pgd(rce_classifier, test_batch):
    x = test_batch[0][:24]
    pgd = attacks.create("pgd", eps=0.18, steps=10, loss="margin", restarts=2, seed=5)(rce_classifier, x)
    det = attacks.create("pgd_detector", eps=0.18, detector=AcceptAll(), steps=10, restarts=2, seed=5,
                         keep_best=False)(rce_classifier, x)
    assert 0 < int(pgd.success.sum()) < len(x)  # a case with both outcomes
    assert torch.equal(det.success, pgd.success)
    assert bool(det.extra["accepted"].all()) and torch.equal(det.extra["misclassified"], det.success)
    # keeping the best iterate of every step (the default) can only add successes
    best = attacks.create("pgd_detector", eps=0.18, detector=AcceptAll(), steps=10, restarts=2, seed=5)(
        rce_classifier, x)
    assert bool((best.success | ~det.success).all())


def test_more_steps_at_the_same_step_size_never_lose_a_success(rce_classifier, test_batch, resnet_kd):
    """With the best iterate kept, the first 8 steps of a 32-step run are the 8-step run: success can only grow."""
    x = test_batch[0][:24]
    kw = {"eps": 0.18, "detector": resnet_kd, "step_size": 0.18 * 2.5 / 8, "lambdas": (0.0, 10.0), "seed": 1}
    short = attacks.create("pgd_detector", steps=8, **kw)(rce_classifier, x)
    long = attacks.create("pgd_detector", steps=32, **kw)(rce_classifier, x)
    assert bool((long.success | ~short.success).all())


def test_pgd_detector_extras_describe_the_returned_image(linear_kd):
    clf, term = linear_kd
    x = images(12)
    lambdas = (0.0, 1.0, 10.0)
    res = attacks.create("pgd_detector", eps=0.15, detector=term, steps=20, lambdas=lambdas)(clf, x)
    with torch.no_grad():
        view = observe(clf, res.x_adv, term)
        logits = view.logits
        margin = term.margin(view, logits.argmax(1))
    torch.testing.assert_close(res.extra["detector_margin"], margin)
    assert torch.equal(res.extra["accepted"], margin <= 0)
    assert torch.equal(res.extra["misclassified"], logits.argmax(1) != clf.predict(x))
    assert torch.equal(res.success, res.extra["accepted"] & res.extra["misclassified"])
    assert set(res.extra["lambda"].tolist()) <= set(lambdas)


def test_orthogonal_component():
    g = torch.randn(5, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    h = torch.randn(5, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    p = orthogonal_component(g, h)
    dots = (p.flatten(1) * h.flatten(1)).sum(1)
    assert bool((dots.abs() <= 1e-5 * g.flatten(1).norm(dim=1) * h.flatten(1).norm(dim=1)).all())
    torch.testing.assert_close(orthogonal_component(p, h), p, atol=1e-6, rtol=0)  # p ⟂ h stays as it is
    h[2] = 0.0  # a zero gradient removes nothing
    assert torch.equal(orthogonal_component(g, h)[2], g[2])
    torch.testing.assert_close(orthogonal_component(h[:1] * 3.0, h[:1]), torch.zeros_like(h[:1]), atol=1e-6, rtol=0)


def low_confidence_case():
    """Logits 10·(x₀, x₁, x₂) of 4-pixel images; x₁, x₂ a little below x₀, so class 0 wins with confidence < 0.5.

    Accepting confidence ≥ 0.45 is satisfiable in the L2 ball of radius 0.3: the witness δ = (−0.1, +0.1, −0.1, 0)
    (‖δ‖ = 0.17) gives logits (5, 6.3..6.8, 4.3..4.8), class 1 with confidence > 0.6. Below confidence 0.5 a path
    of constant confidence reaches the class boundary, so even the orthogonal steps (which keep the detector score
    constant to first order while misclassifying) get there.
    """
    clf = Classifier(LinearNet(10.0 * torch.eye(3, 4)), "ce").eval()
    u = 0.02 + 0.05 * torch.rand(8, 2, generator=torch.Generator().manual_seed(0))
    x = torch.stack([torch.full((8,), 0.6), 0.6 - u[:, 0], 0.6 - u[:, 1], torch.full((8,), 0.5)], 1)
    term = ScoreTerm(create_metric("confidence"), threshold=-0.45)
    witness = x + torch.tensor([-0.1, 0.1, -0.1, 0.0])
    return clf, x.view(-1, 1, 2, 2), term, witness.view(-1, 1, 2, 2)


@pytest.mark.parametrize("mode,norm", [("selective", "linf"), ("selective", "l2"), ("orthogonal", "l2")])
def test_selective_and_orthogonal_succeed_when_satisfiable(mode, norm):
    clf, x, term, witness = low_confidence_case()
    with torch.no_grad():
        logits = clf.logits(witness)
        assert bool((logits.argmax(1) != 0).all()) and bool((term.margin(View(None, logits), None) <= 0).all())
        assert bool((torch.softmax(clf.logits(x), 1).amax(1) < 0.5).all())
    eps = 0.2 if norm == "linf" else 0.3
    res = OrthogonalPGD(eps=eps, detector=term, mode=mode, norm=norm, steps=50, random_start=False)(clf, x)
    assert bool(res.success.all()), res.extra["detector_margin"]
    assert bool((res.extra["detector_margin"] <= 0).all()) and bool(res.extra["misclassified"].all())
    assert bool((res.extra["step"] >= 1).all())  # found along the way, not the start


def test_gradient_free_search_does_not_beat_the_gradient_attack():
    clf = linear_classifier()
    x = images(8)
    term = ScoreTerm(create_metric("confidence"), threshold=-0.95)
    grad = attacks.create("pgd_detector", eps=0.2, detector=term, steps=50)(clf, x)
    free = attacks.create("random_search_detector", eps=0.2, detector=term, iterations=200)(clf, x)
    assert bool(grad.success.all())
    assert int(free.success.sum()) <= int(grad.success.sum())


def test_random_search_never_ends_above_its_start(linear_kd):
    clf, term = linear_kd
    x = images(16)
    res = attacks.create("random_search_detector", eps=0.1, detector=term, iterations=60, lam=2.0, seed=4)(clf, x)
    assert bool((res.extra["objective"] <= res.extra["start_objective"]).all())
    assert bool((res.extra["objective"] < res.extra["start_objective"]).any())  # it does search
    torch.testing.assert_close(res.extra["objective"], objective(clf, term, res.x_adv, clf.predict(x), 2.0))
    assert bool(((res.x_adv - x).abs().amax((1, 2, 3)) > 0).all())


def test_feature_pgd_pulls_z_toward_the_target_kernel(rce_classifier, test_batch, resnet_kd):
    x = test_batch[0][:16]
    res = attacks.create("feature_pgd", eps=0.1, detector=resnet_kd, steps=15, seed=2)(rce_classifier, x)
    pred = rce_classifier.predict(x)
    assert res.target is not None and bool((res.target != pred).all())
    with torch.no_grad():
        clean = feature_distance(rce_classifier.features(x), resnet_kd.density, res.target, 10)
        z = rce_classifier.features(res.x_adv)
        logits = rce_classifier.logits_from_features(z)
    assert bool((res.extra["feature_distance"] < clean).all())
    torch.testing.assert_close(res.extra["feature_distance"], feature_distance(z, resnet_kd.density, res.target, 10))
    assert torch.equal(res.extra["target_reached"], logits.argmax(1) == res.target)
    accepted = resnet_kd.margin(View(z, logits), logits.argmax(1)) <= 0
    assert torch.equal(res.extra["accepted"], accepted)
    assert torch.equal(res.success, accepted & res.extra["target_reached"])


def test_feature_distance_uses_the_k_nearest_valid_points():
    kernels = torch.tensor([[[0.0, 0.0], [1.0, 0.0], [3.0, 0.0], [100.0, 0.0]]])
    density = KernelDensity(kernels, 1.0, counts=torch.tensor([3]))  # the 4th point is padding
    z = torch.zeros(1, 2)
    target = torch.zeros(1, dtype=torch.long)
    assert feature_distance(z, density, target, 2).item() == pytest.approx(0.5)
    assert feature_distance(z, density, target, 10).item() == pytest.approx(10.0 / 3)


@pytest.mark.parametrize("name", NAMES)
def test_seeded_results_are_reproducible(name, linear_kd):
    clf, term = linear_kd
    x = images(6)
    kw = {} if name == "random_search_detector" else {"step_size": 0.005}  # small steps: the start still shows
    a = build(name, 0.1, term, seed=11, **kw)(clf, x)
    b = build(name, 0.1, term, seed=11, **kw)(clf, x)
    c = build(name, 0.1, term, seed=12, **kw)(clf, x)
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.success, b.success)
    assert not torch.equal(a.x_adv, c.x_adv)


def test_rce_margin_uses_effective_logits():
    """On an RCE model the attacks see −Z: PGD lowers the margin of the effective logits, not of the raw ones."""
    clf = linear_classifier(objective="rce")
    x = images(8)
    res = attacks.create("pgd", eps=0.1, steps=20, loss="margin", random_start=False)(clf, x)
    label = clf.predict(x)
    with torch.no_grad():
        before, after = class_margin(clf.logits(x), label), class_margin(clf.logits(res.x_adv), label)
    assert bool((after < before).all()) and math.isfinite(float(after.sum()))


def test_guided_start_is_the_nearest_other_class_image_projected_into_the_ball():
    from rcedetect.attacks.pgd_detector import guided_start

    x = torch.stack([torch.full((1, 2, 2), v) for v in (0.0, 0.1, 0.9, 1.0)])
    label = torch.tensor([0, 0, 1, 1])
    full = guided_start(x, label, 1.0, "linf")
    torch.testing.assert_close(full, x[[2, 2, 1, 1]])  # at ε = 1: the nearest image of another class itself
    small = guided_start(x, label, 0.05, "linf")
    assert float((small - x).abs().amax()) <= 0.05 + 1e-7 and bool(((small - x)[:2] > 0).all())
    l2 = guided_start(x, label, 0.1, "l2")
    assert bool(((l2 - x).flatten(1).norm(dim=1) <= 0.1 + 1e-6).all())
    assert torch.equal(guided_start(x, torch.zeros(4, dtype=torch.long), 1.0, "linf"), x)  # one class: x itself
    with pytest.raises(ConfigError, match="guided_starts"):
        attacks.create("pgd_detector", eps=0.1, detector=AcceptAll(), guided_starts=2)


def test_guided_start_skips_images_that_would_not_be_a_success_as_they_are():
    """The nearest image of another label is no success at ε = 1 when the classifier puts it in x's class or the
    detector rejects it: the guide is the nearest image that is predicted otherwise AND accepted."""
    from rcedetect.attacks.pgd_detector import guided_start

    x = torch.stack([torch.full((1, 2, 2), v) for v in (0.0, 0.2, 0.5, 1.0)])
    label = torch.tensor([0, 1, 1, 1])
    pred = torch.tensor([0, 0, 1, 1])  # image 1 (label 1) is put in class 0
    accepted = torch.tensor([True, True, False, True])  # image 2 is rejected
    full = guided_start(x, label, 1.0, "linf", pred, accepted)
    torch.testing.assert_close(full[0], x[3])  # not 1 (predicted 0, x's class) nor 2 (rejected): the nearest success
    # for the label-1 images: the nearest other image predicted 0 and accepted (image 1 counts: its label is 1 but it
    # is predicted 0), never the image itself
    torch.testing.assert_close(full[1:], x[[0, 1, 1]])
    none = guided_start(x, label, 1.0, "linf", pred, torch.zeros(4, dtype=torch.bool))  # no success anywhere
    torch.testing.assert_close(none, guided_start(x, label, 1.0, "linf"))  # the nearest image of another label


# -- the runs of an attack as one batch, the status from the loss pass --------------------------------------------
@pytest.fixture(scope="module")
def mixed_term(rce_classifier, test_batch):
    """A confidence term whose threshold accepts half of the test images moved by ε = 0.1: both verdicts occur
    along the attacks."""
    metric = create_metric("confidence")
    x = random_start(test_batch[0], 0.1, "linf", torch.Generator().manual_seed(5))
    with torch.no_grad():
        scores = metric.score(observe(rce_classifier, x, metric))
    return ScoreTerm(metric, float(scores.median()))


def sequential_pgd_detector(attack, clf, x):
    """The λ × start runs one after the other, each iterate judged by a forward pass of its own: the reference the
    batched attack must equal."""
    from rcedetect.attacks.engine import Best, resolve_step_size, run_pgd, starts
    from rcedetect.attacks.pgd_detector import begin, combined_loss, evaluate, guided_start

    x, label, term = begin(attack, clf, x, None)
    alpha = resolve_step_size(attack.step_size, attack.eps, attack.steps)
    best = Best(x)
    for lam in attack.lambdas:
        def offer(xa, lam=lam):
            best.update(xa, evaluate(clf, term, x, xa, label, attack.norm), **{"lambda": lam})

        with torch.no_grad():  # the batch as it is: which images would be a success as a start
            view = observe(clf, x, term)
        pred, accepted = view.logits.argmax(1), term.margin(view, view.logits.argmax(1)) <= 0
        guided = [guided_start(x, label, attack.eps, attack.norm, pred, accepted)] if attack.guided_starts else []
        for start in [*starts(x, attack.eps, attack.norm, attack.restarts, attack.seed, attack.random_start), *guided]:
            offer(start)  # the start is a candidate too
            run_pgd(x, start, combined_loss(clf, term, label, lam), eps=attack.eps, norm=attack.norm,
                    steps=attack.steps, step_size=alpha, direction=-1.0, on_iterate=offer)
    return best, evaluate(clf, term, x, best.x, label, attack.norm)


@pytest.mark.parametrize("norm,eps", [("linf", 0.5), ("l2", 4.0)])
def test_pgd_detector_batched_runs_choose_the_sequential_images(norm, eps, rce_classifier, test_batch, mixed_term):
    """All λ × start runs in one batch (the default), one run per pass (max_batch = the batch) and chunks that cut
    runs apart (max_batch = 7) keep the image the sequential runs keep, with the same success and λ."""
    x = test_batch[0][:16]
    kw = {"eps": eps, "detector": mixed_term, "norm": norm, "steps": 8, "lambdas": (0.0, 10.0, 100.0),
          "restarts": 2, "guided_starts": 1, "seed": 3}
    ref, st = sequential_pgd_detector(PGDDetector(**kw), rce_classifier, x)
    assert 0 < int(st.ok.sum()) < len(x)  # a case with both outcomes
    for max_batch in (4096, 16, 7):
        res = PGDDetector(**kw, max_batch=max_batch)(rce_classifier, x)
        torch.testing.assert_close(res.x_adv, ref.x)
        assert torch.equal(res.success, st.ok), max_batch
        torch.testing.assert_close(res.extra["lambda"], ref.tags["lambda"], equal_nan=True)


def test_status_from_the_loss_pass_is_evaluate(rce_classifier, test_batch, mixed_term):
    """The status read off the loss pass (with its graph) is the one a separate forward pass gives, and the loss is
    class margin + λ · max(0, detector margin) with λ per example (λ = 0: the margin's gradient exactly)."""
    from rcedetect.attacks.pgd import margin_loss
    from rcedetect.attacks.pgd_detector import combined_loss, evaluate, loss_and_status

    x = test_batch[0][:16]
    label = rce_classifier.predict(x)
    xa = random_start(x, 0.2, "linf", torch.Generator().manual_seed(0)).requires_grad_(True)
    lam = torch.tensor([0.0, 10.0] * 8)
    with torch.enable_grad():
        loss, st = loss_and_status(rce_classifier, mixed_term, x, xa, label, lam, "linf")
        (grad,) = torch.autograd.grad(loss.sum(), xa)
    ref = evaluate(rce_classifier, mixed_term, x, xa.detach(), label, "linf")
    for name in ("class_margin", "det_margin", "dist"):
        torch.testing.assert_close(getattr(st, name), getattr(ref, name), rtol=0, atol=0)
    assert torch.equal(st.misclassified, ref.misclassified) and torch.equal(st.ok, ref.ok)
    assert bool((ref.det_margin > 0).any()) and bool((ref.det_margin <= 0).any())
    with torch.no_grad():
        for lv in (0.0, 10.0):
            rows = lam == lv
            torch.testing.assert_close(loss.detach()[rows], combined_loss(rce_classifier, mixed_term, label, lv)(
                xa.detach())[rows])
    zero = lam == 0
    xz = xa.detach().requires_grad_(True)
    with torch.enable_grad():
        (g0,) = torch.autograd.grad(margin_loss(rce_classifier, label)(xz).sum(), xz)
    assert torch.equal(grad[zero], g0[zero])


@pytest.mark.parametrize("name", ["pgd", "selective_pgd", "orthogonal_pgd"])
def test_batched_restarts_equal_one_restart_per_pass(name, rce_classifier, test_batch, mixed_term):
    x = test_batch[0][:16]
    kw = {"eps": 0.1, "steps": 8, "restarts": 3, "seed": 2, **({} if name == "pgd" else {"detector": mixed_term})}
    one = attacks.create(name, **kw)(rce_classifier, x)
    for max_batch in (16, 5):
        seq = attacks.create(name, **kw, max_batch=max_batch)(rce_classifier, x)
        torch.testing.assert_close(one.x_adv, seq.x_adv)
        assert torch.equal(one.success, seq.success)


def test_selective_single_backward_is_the_gradient_it_follows(rce_classifier, test_batch, mixed_term):
    """selective_pgd's one backward pass of where(misclassified, g, f) gives, per image, ∇g where x* is
    misclassified and ∇f elsewhere: what two backward passes and ``direction`` give."""
    from rcedetect.attacks.orthogonal_pgd import _grad
    from rcedetect.attacks.pgd_detector import detector_margin

    attack = OrthogonalPGD(eps=0.3, detector=mixed_term, mode="selective")
    x = test_batch[0][:16]
    label = rce_classifier.predict(x)
    moved = attacks.create("pgd", eps=0.2, steps=6, loss="margin", seed=1)(rce_classifier, x)  # some misclassified
    xa = moved.x_adv.requires_grad_(True)
    with torch.enable_grad():
        view = observe(rce_classifier, xa, mixed_term)
        f, g = class_margin(view.logits, label), detector_margin(mixed_term, view)
        fooled = view.logits.detach().argmax(1) != label
        one = _grad(torch.where(fooled, g, f), xa, retain=True)
        two = attack.direction(_grad(f, xa, retain=True), _grad(g, xa, retain=False), fooled)
    assert bool(fooled.any()) and bool((~fooled).any())
    torch.testing.assert_close(one, two, rtol=1e-6, atol=0)


@pytest.mark.parametrize("keep_best", [True, False])
def test_at_steps_equals_separate_attacks(keep_best, rce_classifier, test_batch, mixed_term):
    """One set of 12-step runs stopped after 3, 12 and 7 steps gives what three attacks with those steps (and the
    same step size) give, each with its own best iterate."""
    x = test_batch[0][:16]
    kw = {"eps": 0.3, "detector": mixed_term, "step_size": 0.03, "lambdas": (0.0, 10.0), "guided_starts": 1,
          "seed": 4, "keep_best": keep_best}
    together = PGDDetector(steps=12, **kw).at_steps(rce_classifier, x, None, (3, 12, 7))
    for h, res in zip((3, 12, 7), together):
        alone = PGDDetector(steps=h, **kw)(rce_classifier, x)
        torch.testing.assert_close(res.x_adv, alone.x_adv)
        assert torch.equal(res.success, alone.success) and torch.equal(res.iterations, alone.iterations)
    with pytest.raises(ConfigError, match="steps"):
        PGDDetector(steps=12, **kw).at_steps(rce_classifier, x, None, (13,))


class OnTheDataTerm:
    """A detector term that accepts only the given images themselves (L∞ distance to the nearest below 1e-3): a
    detector no step off the data can satisfy, so only an attack whose start is a data image can succeed."""

    layers = ()

    def __init__(self, data: torch.Tensor):
        self.data = data.flatten(1)

    def margin(self, view, classes):
        x = view.need_images("OnTheDataTerm").flatten(1)
        return (x[:, None, :] - self.data[None].to(x.device)).abs().amax(2).amin(1) - 1e-3 + 0.0 * view.z.sum(1)


def test_the_start_is_a_candidate_at_large_eps():
    """At ε = 1 the guided start IS another class's image, which this detector accepts: offered as a candidate it
    is a success on every image, although every step then leaves the data (Carlini et al. 2019's unbounded check)."""
    clf = linear_classifier()
    x = images(12, seed=4, lo=0.0, hi=1.0)
    label = clf.predict(x)
    assert len(set(label.tolist())) > 1
    term = OnTheDataTerm(x)
    kw = {"eps": 1.0, "detector": term, "steps": 3, "step_size": 0.5, "lambdas": (0.0,), "guided_starts": 1,
          "random_start": False}
    res = attacks.create("pgd_detector", **kw)(clf, x)
    assert bool(res.success.all()), res.success
    later = attacks.create("pgd_detector", **kw)(clf, x)  # deterministic
    assert torch.equal(later.x_adv, res.x_adv)


def sequential_pgd_defended(attack, clf, x):
    """The targets × starts runs one after the other, each iterate (the start included) judged by a forward pass
    of its own: the reference the batched attack must equal."""
    import torch.nn.functional as F

    from rcedetect.attacks.engine import Best, resolve_step_size, run_pgd, starts
    from rcedetect.attacks.pgd_defended import target_classes
    from rcedetect.attacks.pgd_detector import begin, evaluate
    from rcedetect.detectors.defended import defend

    x, label, term = begin(attack, clf, x, None)
    model = defend(clf, term, scale=attack.reject_scale)
    alpha = resolve_step_size(attack.step_size, attack.eps, attack.steps)
    chosen = target_classes(label, clf.num_classes, attack.targets, attack.seed)
    best = Best(x)
    for r in range(attack.targets):
        t = chosen[:, r]

        def offer(xa, t=t):
            best.update(xa, evaluate(clf, term, x, xa, label, attack.norm), target=t.float())

        for start in starts(x, attack.eps, attack.norm, attack.restarts, attack.seed, attack.random_start):
            offer(start)
            run_pgd(x, start, lambda xa, t=t: F.cross_entropy(model(xa), t, reduction="none"), eps=attack.eps,
                    norm=attack.norm, steps=attack.steps, step_size=alpha, direction=-1.0, on_iterate=offer)
    return best, evaluate(clf, term, x, best.x, label, attack.norm)


@pytest.mark.parametrize("norm,eps,steps", [("linf", 0.5, 16), ("l2", 4.0, 12)])
def test_pgd_defended_batched_runs_choose_the_sequential_images(norm, eps, steps, rce_classifier, test_batch,
                                                               mixed_term):
    """The targets × restarts runs as one batch, one run per pass (max_batch = the batch) and chunks that cut runs
    apart (max_batch = 7) keep the image the runs one after the other keep, with the same success and target."""
    from rcedetect.attacks.pgd_defended import PGDDefended

    x = test_batch[0][:16]
    kw = {"detector": mixed_term, "norm": norm, "steps": steps, "targets": 2, "restarts": 2, "seed": 1}
    for scale in (1.0, 1.4, 0.7, 2.0):  # the first budget with both outcomes (the fixture model varies by machine)
        kw["eps"] = eps * scale
        ref, st = sequential_pgd_defended(PGDDefended(**kw), rce_classifier, x)
        if 0 < int(st.ok.sum()) < len(x):
            break
    assert 0 < int(st.ok.sum()) < len(x)  # a case with both outcomes
    for max_batch in (4096, 16, 7):
        res = PGDDefended(**kw, max_batch=max_batch)(rce_classifier, x)
        torch.testing.assert_close(res.x_adv, ref.x)
        assert torch.equal(res.success, st.ok), max_batch
        torch.testing.assert_close(res.target, ref.tags["target"], equal_nan=True)  # finish() files it as .target


def rows_through(clf, run):
    """(result of ``run()``, image rows that went through ``clf``'s network while it ran)."""
    seen = []
    first = next(m for m in clf.modules() if isinstance(m, torch.nn.Conv2d))  # every pass starts there
    handle = first.register_forward_hook(lambda module, args, out: seen.append(len(args[0])))
    try:
        return run(), sum(seen)
    finally:
        handle.remove()


@pytest.mark.parametrize("name", ["pgd_detector", "pgd_defended"])
def test_stop_on_success_keeps_every_success_at_a_fraction_of_the_passes(name, rce_classifier, test_batch,
                                                                         mixed_term):
    """An image whose runs stop at its first success is still a success, and one never fooled is attacked to the
    end: the successes are those of the full attack (which keeps the least distorted success of ALL steps, so
    only the x* differ), for fewer image passes; at ε = 1, where every image falls early, for a fraction of them.
    The ε with both outcomes is searched (the fixture model depends on the machine's float rounding)."""
    x = test_batch[0][:16]
    kw = ({"steps": 16, "lambdas": (0.0, 10.0), "guided_starts": 1} if name == "pgd_detector"
          else {"steps": 16, "targets": 2})
    kw.update(detector=mixed_term, seed=2)
    mixed = 0
    for eps in (0.3, 0.4, 0.5, 0.6, 0.7, 0.85, 1.0):
        full, n_full = rows_through(rce_classifier,
                                    lambda e=eps: attacks.create(name, eps=e, **kw)(rce_classifier, x))
        early, n_early = rows_through(
            rce_classifier, lambda e=eps: attacks.create(name, eps=e, **kw, stop_on_success=True)(rce_classifier, x))
        assert torch.equal(early.success, full.success), eps
        assert bool((early.extra["accepted"] | ~early.success).all())
        fooled = int(full.success.sum())
        assert n_early <= n_full and (n_early < n_full) == (fooled > 0), (eps, n_early, n_full)
        mixed += 0 < fooled < len(x)
    assert mixed > 0  # some ε had both outcomes
    assert fooled == len(x) and n_early < 0.5 * n_full, (n_early, n_full)  # ε = 1; measured 115 of 967, 250 of 576
    with pytest.raises(ConfigError, match="keep_best"):
        attacks.create(name, eps=0.1, **kw, stop_on_success=True, keep_best=False)
    with pytest.raises(ConfigError, match="true or false"):
        attacks.create(name, eps=0.1, **kw, stop_on_success="yes")


def test_stop_on_success_at_every_horizon(rce_classifier, test_batch, mixed_term):
    """With several horizons from one set of runs, each horizon's successes are those of its own full attack."""
    x = test_batch[0][:16]
    kw = {"eps": 0.3, "detector": mixed_term, "step_size": 0.03, "lambdas": (0.0, 10.0), "guided_starts": 1,
          "seed": 4}
    early = PGDDetector(steps=12, stop_on_success=True, **kw).at_steps(rce_classifier, x, None, (3, 12))
    for h, res in zip((3, 12), early):
        assert torch.equal(res.success, PGDDetector(steps=h, **kw)(rce_classifier, x).success), h
