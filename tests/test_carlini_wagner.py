"""C&W-L2 / C&W-hc / C&W-wb (protocol §6, §7): known answers on hand-weighted linear models, invariants, errors."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from tiny_nets import LinearNet

from rcedetect import Classifier
from rcedetect.attacks import REGISTRY, create
from rcedetect.attacks.carlini_wagner import CarliniWagnerL2, random_targets
from rcedetect.core.errors import ConfigError, InputError
from rcedetect.detectors import KDTerm, ScoreTerm
from rcedetect.detectors import create as create_metric
from rcedetect.detectors.bandwidth import default_sigma2
from rcedetect.detectors.density import KernelDensity
from rcedetect.evaluation.scoring import table3_stats


def linear_classifier(objective="ce", classes=3, d=16, scale=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(classes, d, generator=g) * scale
    b = torch.randn(classes, generator=g) * 0.1
    return Classifier(LinearNet(w, b), objective).eval()


def images(n, seed=1, lo=0.3, hi=0.7, d=16):
    g = torch.Generator().manual_seed(seed)
    side = math.isqrt(d)
    return lo + (hi - lo) * torch.rand(n, 1, side, side, generator=g)


def margins(classifier, x_adv, label):
    """Z_label − max_{j≠label} Z_j on the effective logits."""
    with torch.no_grad():
        z = classifier.logits(x_adv)
    own = z.gather(1, label[:, None]).squeeze(1)
    other = z.scatter(1, label[:, None], -math.inf).amax(1)
    return own - other


def boundary_distance(classifier, x):
    """Analytic minimal L2 (on the [0, 255]/√d scale) to leave the predicted class of a linear model."""
    w, b = classifier.net.fc.weight.detach(), classifier.net.fc.bias.detach()
    z = x.flatten(1) @ w.T + b
    y = z.argmax(1)
    dist = torch.full((len(x),), math.inf)
    for j in range(w.shape[0]):
        dj = (z.gather(1, y[:, None]).squeeze(1) - z[:, j]) / (w[y] - w[j]).norm(dim=1)
        dist = torch.where(y == j, dist, torch.minimum(dist, dj))
    return dist / math.sqrt(x[0].numel()) * 255.0


def test_registry_presets():
    assert {"cw", "cw_hc", "cw_wb"} <= set(REGISTRY)
    cw = create("cw")
    assert (cw.kappa, cw.binary_search_steps, cw.max_iterations, cw.learning_rate, cw.initial_const) == (
        0.0, 9, 10_000, 0.01, 1.0)
    assert cw.mode == "targeted" and cw.abort_early
    assert create("cw_hc").kappa == 10.0 and create("cw_hc", kappa=3.0).kappa == 3.0


def test_untargeted_minimal_l2_matches_boundary_distance():
    clf = linear_classifier()
    x = images(8)
    r = create("cw", mode="untargeted", binary_search_steps=5, max_iterations=150)(clf, x)
    exact = boundary_distance(clf, x)
    assert r.success.all() and r.target is None
    # a success must cross the boundary, so it is never closer than the analytic distance; the search gets within 1 %
    assert torch.all(r.l2 >= exact * (1 - 1e-4))
    assert torch.all(r.l2 <= exact * 1.01), (r.l2, exact)


def test_binary_search_shrinks_distortion(ce_classifier, test_batch):
    x = test_batch[0][:8]
    one = create("cw", binary_search_steps=1, max_iterations=80, initial_const=10.0)(ce_classifier, x)
    many = create("cw", binary_search_steps=4, max_iterations=80, initial_const=10.0)(ce_classifier, x)
    assert torch.equal(one.target, many.target)  # same seed, same targets
    # round 1 is the same computation in both runs and the best is kept, so more rounds never hurt ...
    assert torch.all(many.success >= one.success)
    both = one.success & many.success
    assert both.sum() >= 5
    assert torch.all(many.l2[both] <= one.l2[both] + 1e-4)
    # ... and the search on c really shrinks the distortion
    assert many.l2[both].mean() < 0.9 * one.l2[both].mean()
    steps = many.extra["l2_per_step"]
    assert steps.shape == (8, 4)
    fin = torch.isfinite(steps)
    assert torch.all(torch.where(fin[:, 1:], steps[:, 1:] <= steps[:, :-1].nan_to_num(posinf=1e9), True))
    assert torch.allclose(steps[many.success, -1], many.l2[many.success], atol=1e-3)


@pytest.mark.parametrize("kappa", [0.0, 10.0])
def test_final_margin_at_least_kappa(kappa):
    clf = linear_classifier(scale=6.0)
    x = images(8, seed=2)
    r = create("cw", kappa=kappa, binary_search_steps=4, max_iterations=120)(clf, x)
    assert r.success.sum() >= 6
    m = margins(clf, r.x_adv, r.target)
    assert torch.all(m[r.success] >= kappa - 1e-4), m
    assert torch.all(r.extra["target_reached"] == r.success)
    # minimal: the hinge stops pushing at κ, so the margin lands close to it
    assert torch.all(m[r.success] <= kappa + 1.0)
    if kappa > 0:
        r0 = create("cw", binary_search_steps=4, max_iterations=120)(clf, x)
        both = r.success & r0.success
        assert torch.all(r.l2[both] > r0.l2[both])


def test_untargeted_margin_and_labels():
    clf = linear_classifier(scale=3.0)
    x = images(6, seed=3)
    y = clf.predict(x)
    r = create("cw", mode="untargeted", kappa=2.0, binary_search_steps=5, max_iterations=200)(clf, x, y)
    assert r.success.all()
    assert torch.all(margins(clf, r.x_adv, y) <= -2.0 + 1e-4)  # misclassified by at least κ


def test_range_no_mutation_and_failure_returns_clean(ce_classifier, test_batch):
    x = test_batch[0][:6].clone()
    x[0] = 0.0
    x[1] = 1.0  # saturated images: the tanh box must keep them in range
    before = x.clone()
    r = create("cw", binary_search_steps=2, max_iterations=30)(ce_classifier, x)
    assert torch.equal(x, before)
    assert r.x_adv.min() >= 0 and r.x_adv.max() <= 1
    assert torch.equal(r.x, before)
    # one iteration at the clean image can never reach a wrong target: clean image back, success False
    fail = create("cw", binary_search_steps=1, max_iterations=1)(ce_classifier, x)
    assert not fail.success.any()
    assert torch.equal(fail.x_adv, before)
    assert torch.all(fail.iterations == 1)
    assert torch.all(fail.l2 == 0)


def test_targets_seeded_uniform_and_wrong():
    y = torch.arange(4).repeat(500)
    t = random_targets(y, 4, seed=0)
    assert torch.all(t != y)
    assert torch.equal(t, random_targets(y, 4, seed=0))
    assert not torch.equal(t, random_targets(y, 4, seed=1))
    counts = torch.bincount((t - y) % 4, minlength=4)
    assert counts[0] == 0 and counts[1:].min() > 600  # each of the 3 offsets about a third of 2000


def test_seeded_and_batched_equals_one_by_one(ce_classifier, test_batch):
    x = test_batch[0][:3]
    attack = create("cw", binary_search_steps=2, max_iterations=50)
    a = attack(ce_classifier, x)
    b = attack(ce_classifier, x)
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.target, b.target)
    for i in range(len(x)):
        r = attack(ce_classifier, x[i : i + 1], target=a.target[i : i + 1])
        assert bool(r.success[0]) == bool(a.success[i])
        assert int(r.iterations[0]) == int(a.iterations[i])
        assert torch.allclose(r.x_adv[0], a.x_adv[i], atol=1e-4)


def test_rce_is_attacked_through_reversed_logits():
    """An RCE model with weights W behaves exactly like a CE model with weights −W (effective logits −Z)."""
    ce = linear_classifier("ce", scale=2.0)
    w, b = ce.net.fc.weight.detach(), ce.net.fc.bias.detach()
    rce = Classifier(LinearNet(-w, -b), "rce").eval()
    x = images(6, seed=4)
    attack = create("cw", binary_search_steps=3, max_iterations=100)
    r_ce, r_rce = attack(ce, x), attack(rce, x)
    assert torch.equal(r_ce.target, r_rce.target)
    assert torch.allclose(r_ce.x_adv, r_rce.x_adv, atol=1e-6)
    assert r_rce.success.sum() >= 4
    s = r_rce.success
    with torch.no_grad():
        raw_z = rce.net.head(rce.net.features(r_rce.x_adv))
    assert torch.equal(raw_z[s].argmin(1), r_rce.target[s])  # RCE predicts argmin Z = argmax of −Z


def test_rce_resnet(rce_classifier, test_batch):
    x = test_batch[0][:4]
    r = create("cw", binary_search_steps=1, max_iterations=100, initial_const=10.0)(rce_classifier, x)
    assert r.success.sum() >= 2
    assert torch.equal(rce_classifier.predict(r.x_adv)[r.success], r.target[r.success])


def linear_density(clf, sigma2=0.5, per_class=30):
    """K-density on a linear model's features (= the flattened image) of random images, by predicted class."""
    pool = torch.rand(600, 1, 4, 4, generator=torch.Generator().manual_seed(7))
    labels, feats = clf.predict(pool), pool.flatten(1)
    kd = KernelDensity.fit(feats, labels, clf.num_classes, per_class=per_class, sigma2=sigma2, seed=0)
    return kd, kd.eta(feats, labels)


def test_whitebox_successes_fool_both():
    clf = linear_classifier(scale=6.0)
    kd, eta = linear_density(clf)
    x = images(8, seed=2)
    r = create("cw_wb", detector=KDTerm(kd, eta), binary_search_steps=3, max_iterations=100)(clf, x)
    s = r.success
    assert s.sum() >= 2
    assert torch.all(r.extra["f2"][s] <= 0)
    assert torch.all(r.extra["target_reached"][s])
    assert torch.equal(clf.predict(r.x_adv)[s], r.target[s])
    f2 = -kd.log_kd(r.x_adv.flatten(1), r.target) - eta[r.target]
    assert torch.allclose(r.extra["f2"], f2, atol=1e-4)
    # the failures fell back to the target-reaching x* of smallest f2, which the detector still catches
    assert torch.all(r.extra["f2"][~s] > 0) and torch.all(r.extra["target_reached"])
    # a threshold every x* meets (f2 < 0 everywhere) removes the density term: exactly the plain attack
    lenient = create("cw_wb", detector=KDTerm(kd, torch.full((3,), 1e6)), binary_search_steps=3, max_iterations=100)
    plain = create("cw", binary_search_steps=3, max_iterations=100)(clf, x, target=r.target)
    rl = lenient(clf, x)
    assert torch.equal(rl.x_adv, plain.x_adv) and torch.equal(rl.success, plain.success)
    # warm start from a plain C&W result: still only successes that fool both
    rw = create("cw_wb", detector=KDTerm(kd, eta), binary_search_steps=2, max_iterations=60, warm_start=True)(clf, x)
    assert torch.all(rw.extra["f2"][rw.success] <= 0) and rw.success.any()
    stats = table3_stats(r, clf.predict(x), clf.predict(x))
    assert stats["n"] == 8 and stats["n_target_reached"] == 8 and stats["n_efficient"] == int(s.sum())
    assert stats["ratio_f2_positive"] == pytest.approx(1 - float(s.float().mean()))
    assert stats["mean_distortion"] == pytest.approx(float(r.l2[s].mean()), rel=1e-5)


def test_whitebox_on_resnet_features(ce_classifier, synthetic, test_batch):
    """The real path: 64-d features of the ResNet and the detector's KernelDensity (η made lenient)."""
    with torch.no_grad():
        feats = ce_classifier.features(synthetic.train_images())
    kd = KernelDensity.fit(feats, synthetic.y_train, ce_classifier.num_classes, per_class=100,
                           sigma2=default_sigma2("ce"), seed=0)
    eta = kd.eta(feats, synthetic.y_train) + 2.0
    x, y = test_batch[0][:4], test_batch[1][:4]
    attack = create("cw_wb", detector=KDTerm(kd, eta), binary_search_steps=1, max_iterations=100, initial_const=10.0)
    r = attack(ce_classifier, x)
    s = r.success
    assert s.sum() >= 2
    assert torch.all(r.extra["f2"][s] <= 0)
    assert torch.equal(ce_classifier.predict(r.x_adv)[s], r.target[s])
    with torch.no_grad():
        f2 = -kd.log_kd(ce_classifier.features(r.x_adv), r.target) - eta[r.target]
    assert torch.allclose(r.extra["f2"], f2, atol=1e-4)
    assert table3_stats(r, y, ce_classifier.predict(x))["n"] == 4


def test_whitebox_unreachable_density_falls_back():
    """η = −1 can never be met (KD ≤ 1): no success; x* is the target-reaching image with the smallest f2."""
    clf = linear_classifier(scale=6.0)
    kd, _ = linear_density(clf)
    x = images(6, seed=5)
    eta = torch.full((3,), -1.0)
    r = create("cw_wb", detector=KDTerm(kd, eta), binary_search_steps=2, max_iterations=60)(clf, x)
    assert not r.success.any()
    reached = r.extra["target_reached"]
    assert reached.sum() >= 4 and torch.all(r.extra["f2"] > 1.0)
    assert torch.equal(clf.predict(r.x_adv)[reached], r.target[reached])
    assert torch.equal(r.x_adv[~reached], x[~reached])
    stats = table3_stats(r, clf.predict(x), clf.predict(x))
    assert stats["ratio_f2_positive"] == 1.0 and math.isnan(stats["mean_distortion"])
    off = create("cw_wb", detector=KDTerm(kd, eta), binary_search_steps=1, max_iterations=30, fallback=False)(clf, x)
    assert torch.equal(off.x_adv, x) and not off.success.any()


@pytest.mark.parametrize("settings", [
    {"kappa": -1.0}, {"binary_search_steps": 0}, {"max_iterations": 0}, {"mode": "sideways"},
    {"learning_rate": 0.0}, {"initial_const": -1.0}, {"kappa": float("nan")}, {"max_iterations": 2.5},
    {"warm_start": True},
])
def test_bad_settings(settings):
    with pytest.raises(ConfigError):
        create("cw", **settings)


def test_whitebox_errors(ce_classifier, test_batch):
    kd = KernelDensity(torch.rand(4, 5, 64), sigma2=1.0)
    with pytest.raises(ConfigError, match="detector"):
        create("cw_wb")
    with pytest.raises(ConfigError, match="density"):
        create("cw_wb", density=kd)  # not a setting: the detector comes as one term
    with pytest.raises(ConfigError, match="margin"):
        create("cw_wb", detector=kd)  # a density is not a detector term
    with pytest.raises(ConfigError, match="targeted"):
        create("cw_wb", detector=KDTerm(kd, torch.zeros(4)), mode="untargeted")
    with pytest.raises(ConfigError, match="η"):
        KDTerm(kd, torch.zeros(3))
    five = KernelDensity(torch.rand(5, 5, 64), sigma2=1.0)
    with pytest.raises(ConfigError, match="classes"):
        create("cw_wb", detector=KDTerm(five, torch.zeros(5)), max_iterations=1)(ce_classifier, test_batch[0][:2])
    with pytest.raises(ConfigError):
        create("cw", unknown_setting=1)


def test_whitebox_against_any_detector_term():
    """The detector term is an interface: a thresholded confidence detector works the same way (margin ≤ 0 at the
    returned successes), with no K-density involved."""
    clf = linear_classifier(scale=6.0)
    x = images(8, seed=2)
    term = ScoreTerm(create_metric("confidence"), threshold=-0.9)  # accepted iff max softmax ≥ 0.9
    r = create("cw_wb", detector=term, binary_search_steps=3, max_iterations=100)(clf, x)
    s = r.success
    assert s.any()
    with torch.no_grad():
        conf = torch.softmax(clf.logits(r.x_adv), 1).amax(1)
    assert torch.all(conf[s] >= 0.9 - 1e-5) and torch.equal(clf.predict(r.x_adv)[s], r.target[s])
    assert torch.allclose(r.extra["f2"], -conf + 0.9, atol=1e-5)


def test_call_errors(ce_classifier, test_batch):
    x, y = test_batch[0][:3], test_batch[1][:3]
    attack = create("cw", binary_search_steps=1, max_iterations=1)
    with pytest.raises(InputError, match="differ"):
        attack(ce_classifier, x, y, target=y)
    with pytest.raises(InputError):
        attack(ce_classifier, x * 2 + 0.5)
    with pytest.raises(InputError, match="targeted"):
        create("cw", mode="untargeted", max_iterations=1)(ce_classifier, x, y, target=(y + 1) % 4)
    ce_classifier.train()
    try:
        with pytest.raises(InputError, match="training mode"):
            attack(ce_classifier, x)
    finally:
        ce_classifier.eval()
    empty = attack(ce_classifier, x[:0])
    assert len(empty) == 0


def test_dataclass_is_frozen():
    attack = CarliniWagnerL2()
    with pytest.raises(dataclasses.FrozenInstanceError):
        attack.kappa = 1.0  # type: ignore[misc]


def test_continue_rounds_refine_instead_of_repeating(ce_classifier, test_batch):
    """restart="continue": with too few iterations per round for one climb to succeed, rounds that go on from
    where the last one ended reach more examples, and never at the cost of a larger distortion on the examples
    both versions fool (each later round starts from the best success)."""
    x = test_batch[0][:12]
    settings = {"mode": "untargeted", "binary_search_steps": 5, "max_iterations": 15, "learning_rate": 0.02}
    start = create("cw", **settings)(ce_classifier, x)
    cont = create("cw", restart="continue", **settings)(ce_classifier, x)
    assert int(cont.success.sum()) > int(start.success.sum())
    both = start.success & cont.success
    assert torch.all(cont.l2[both] <= start.l2[both] * 1.05)
    assert torch.equal(ce_classifier.predict(cont.x_adv)[cont.success] != ce_classifier.predict(x)[cont.success],
                       torch.ones(int(cont.success.sum()), dtype=torch.bool))
    # one round: nothing to continue from, the same computation as the original
    one = {**settings, "binary_search_steps": 1}
    assert torch.equal(create("cw", restart="continue", **one)(ce_classifier, x).x_adv,
                       create("cw", **one)(ce_classifier, x).x_adv)
    with pytest.raises(ConfigError):
        create("cw", restart="resume")


def test_bf16_rounds_then_a_float32_round(ce_classifier, test_batch):
    """precision="bf16": the rounds before the last run in bfloat16, the last in float32, and every reported
    success is one in float32 (checked here with an independent float32 pass); the result is as good."""
    x = test_batch[0][:16]
    settings = {"mode": "untargeted", "binary_search_steps": 4, "max_iterations": 40, "learning_rate": 0.05,
                "restart": "continue"}
    exact = create("cw", **settings)(ce_classifier, x)
    fast = create("cw", precision="bf16", **settings)(ce_classifier, x)
    y = ce_classifier.predict(x)
    assert torch.equal(fast.success, ce_classifier.predict(fast.x_adv) != y)
    assert abs(int(fast.success.sum()) - int(exact.success.sum())) <= 2
    both = fast.success & exact.success
    assert float(fast.l2[both].mean()) <= 1.1 * float(exact.l2[both].mean())
    one = {**settings, "binary_search_steps": 1}  # a single round is the float32 round
    assert torch.equal(create("cw", precision="bf16", **one)(ce_classifier, x).x_adv,
                       create("cw", **one)(ce_classifier, x).x_adv)
    with pytest.raises(ConfigError, match="float32"):
        create("cw_wb", detector=ScoreTerm(create_metric("confidence"), threshold=0.0), precision="bf16")
