"""FGSM / BIM / ILCM (protocol §5.3-5.5) on hand-weighted linear models with known answers and on tiny ResNets."""

from __future__ import annotations

import pytest
import torch
from tiny_nets import LinearNet

from rcedetect import Classifier, ConfigError, InputError, attacks
from rcedetect.attacks.gradient import BIM, FGSM, ILCM


def binary_linear(objective="ce"):
    """Logits [0, w·x − 1]: the CE gradient is a scalar times w, so FGSM moves every pixel by ±ε along sign(w)."""
    w = torch.linspace(-1.0, 1.0, 17)
    w = w[w != 0][:16]
    return Classifier(LinearNet(torch.stack([torch.zeros(16), w]), torch.tensor([0.0, -1.0])), objective).eval(), w


def grouped_linear(objective="ce"):
    """3 classes, each logit the sum of its own 5 pixels (pixel 15 unused): every class is reachable in the box."""
    weight = torch.zeros(3, 16)
    for k in range(3):
        weight[k, 5 * k : 5 * k + 5] = 1.0
    return Classifier(LinearNet(weight), objective).eval()


def images(n=8, seed=0, shape=(1, 4, 4)):
    return torch.rand((n, *shape), generator=torch.Generator().manual_seed(seed)) * 0.6 + 0.2


def test_registered_names():
    assert {"fgsm", "bim", "ilcm"} <= set(attacks.REGISTRY)
    assert isinstance(attacks.create("fgsm", eps=0.1), FGSM)
    assert attacks.create("bim", eps=0.1).steps == 10


def test_fgsm_moves_each_pixel_by_eps_along_sign_w():
    clf, w = binary_linear()
    x = images(16)
    pred = clf.predict(x)
    res = FGSM(0.1)(clf, x)
    delta = res.x_adv - x
    # label = clean prediction: label 0 -> raise w·x (+sign w), label 1 -> lower it (-sign w)
    direction = torch.where(pred == 0, 1.0, -1.0)[:, None, None, None] * w.sign().view(1, 1, 4, 4)
    torch.testing.assert_close(delta, 0.1 * direction, atol=1e-6, rtol=0)
    assert res.iterations.tolist() == [1] * 16


def test_fgsm_clips_at_the_box():
    clf, _w = binary_linear()
    x = torch.zeros(2, 1, 4, 4)
    x[1] = 1.0
    res = FGSM(0.3)(clf, x)
    assert float(res.x_adv.min()) >= 0.0 and float(res.x_adv.max()) <= 1.0
    assert float((res.x_adv - x).abs().max()) == pytest.approx(0.3)


def test_rce_wrapper_reverses_the_fgsm_direction():
    """An RCE model is attacked through −Z: with the same label its FGSM step is the opposite of the CE model's."""
    (ce, _), (rce, _) = binary_linear("ce"), binary_linear("rce")
    x, y = images(8), torch.tensor([0, 1] * 4)
    d_ce = FGSM(0.05, label="true")(ce, x, y).x_adv - x
    d_rce = FGSM(0.05, label="true")(rce, x, y).x_adv - x
    torch.testing.assert_close(d_rce, -d_ce, atol=1e-6, rtol=0)
    assert float(d_ce.abs().min()) > 0.049


@pytest.mark.parametrize("make", [lambda e: FGSM(e), lambda e: BIM(e), lambda e: ILCM(e)])
def test_eps_zero_returns_the_input(make, ce_classifier, test_batch):
    x = test_batch[0][:8]
    res = make(0.0)(ce_classifier, x)
    assert torch.equal(res.x_adv, x)
    assert not bool(res.success.any())


@pytest.mark.parametrize("name", ["fgsm", "bim", "ilcm"])
@pytest.mark.parametrize("objective", ["ce", "rce"])
def test_invariants_on_trained_resnets(name, objective, ce_classifier, rce_classifier, test_batch):
    clf = ce_classifier if objective == "ce" else rce_classifier
    x, y = test_batch[0][:16], test_batch[1][:16]
    x_before = x.clone()
    res = attacks.create(name, eps=0.3)(clf, x, y)
    assert torch.equal(x, x_before), "the input must not be mutated"
    assert res.x_adv.shape == x.shape and res.x_adv.dtype == torch.float32
    assert float(res.x_adv.min()) >= 0.0 and float(res.x_adv.max()) <= 1.0
    assert float(res.linf.max()) <= 0.3 + 1e-6
    with torch.no_grad():
        pred_clean, pred_adv = clf.predict(x), clf.predict(res.x_adv)
    assert torch.equal(res.success, pred_adv != pred_clean)
    assert torch.equal(res.extra["pred_adv"], pred_adv)
    if name == "ilcm":
        assert torch.equal(res.target, clf.logits(x).argmin(1))
        assert torch.equal(res.extra["target_reached"], pred_adv == res.target)
    assert float(res.success.float().mean()) > 0.5  # eps 0.3 fools these tiny nets (measured: 0.77-1.0)


def test_true_label_success_is_against_y(ce_classifier, test_batch):
    x, y = test_batch[0][:16], test_batch[1][:16]
    res = BIM(0.25, label="true")(ce_classifier, x, y)
    assert torch.equal(res.success, ce_classifier.predict(res.x_adv) != y)
    with pytest.raises(InputError):
        FGSM(0.1, label="true")(ce_classifier, x)


def test_same_result_batched_and_one_by_one(ce_classifier, test_batch):
    x = test_batch[0][:6]
    for attack in (FGSM(0.08), BIM(0.08), ILCM(0.08)):
        full = attack(ce_classifier, x)
        single = torch.cat([attack(ce_classifier, x[i : i + 1]).x_adv for i in range(len(x))])
        torch.testing.assert_close(full.x_adv, single, atol=1e-6, rtol=0)


def test_bim_stays_in_the_ball_and_beats_fgsm_on_the_linear_margin():
    clf, _w = binary_linear()
    x = images(8)
    fgsm, bim = FGSM(0.2)(clf, x), BIM(0.2)(clf, x)
    assert float(bim.linf.max()) <= 0.2 + 1e-6
    # on a linear binary model the BIM steps all point the same way, so BIM = FGSM
    torch.testing.assert_close(bim.x_adv, fgsm.x_adv, atol=1e-5, rtol=0)


def test_ilcm_reaches_the_least_likely_class():
    clf = grouped_linear()
    x = images(32, seed=3)
    res = ILCM(1.0)(clf, x)
    logits = clf.logits(x)
    assert torch.equal(res.target, logits.argmin(1))
    assert bool(res.extra["target_reached"].all())
    assert torch.equal(clf.predict(res.x_adv), res.target)
    assert bool(res.success.all())


def test_ilcm_uses_a_one_hot_target_not_the_original_pm_half_label():
    """One descent step along sign ∇ CE(x, y_ll): target-class pixels rise, all others fall (pixel 15 has zero
    gradient and stays). The original's ±0.5 label would add −0.5·∇Σ logits, i.e. push every pixel down more."""
    clf = grouped_linear()
    x = images(4, seed=5)
    res = ILCM(0.1, steps=1)(clf, x)
    d = (res.x_adv - x).flatten(1)
    for i, t in enumerate(res.target.tolist()):
        up = torch.zeros(16, dtype=torch.bool)
        up[5 * t : 5 * t + 5] = True
        torch.testing.assert_close(d[i, up], torch.full((5,), 0.1), atol=1e-6, rtol=0)
        torch.testing.assert_close(d[i, :15][~up[:15]], torch.full((10,), -0.1), atol=1e-6, rtol=0)
        assert float(d[i, 15]) == 0.0


def test_seeded_and_deterministic(ce_classifier, test_batch):
    x = test_batch[0][:8]
    a, b = BIM(0.1)(ce_classifier, x), BIM(0.1)(ce_classifier, x)
    assert torch.equal(a.x_adv, b.x_adv)


def test_train_mode_classifier_is_refused(test_batch):
    clf, _ = binary_linear()
    clf.train()
    with pytest.raises(InputError, match="eval"):
        FGSM(0.1)(clf, images(2))


@pytest.mark.parametrize("bad", [{"eps": -0.1}, {"eps": float("nan")}, {"eps": "0.1"}, {"eps": 0.1, "steps": 0},
                                 {"eps": 0.1, "label": "gold"}])
def test_bad_settings_raise_config_error(bad):
    with pytest.raises(ConfigError):
        attacks.create("bim", **bad)
    with pytest.raises(ConfigError):
        attacks.create("fgsm", eps=0.1, steps=3)
    with pytest.raises(ConfigError):
        attacks.create("fgsm", eps=0.1, nonsense=1)


def test_bad_images_raise_input_error():
    clf, _ = binary_linear()
    with pytest.raises(InputError):
        FGSM(0.1)(clf, images(2) * 3)
    with pytest.raises(InputError):
        FGSM(0.1)(clf, torch.rand(16))


@pytest.mark.parametrize("attack, passes", [(FGSM(0.1), 2), (BIM(0.1, steps=3), 4), (ILCM(0.1, steps=3), 5)])
def test_forward_passes_per_call(attack, passes):
    """The clean prediction is read off the first gradient step's forward pass: FGSM costs one forward/backward
    and one forward for the verdict, as foolbox's; ILCM needs the clean logits first (its target is their argmin)."""
    clf = grouped_linear()
    calls = []
    clf.net.fc.register_forward_hook(lambda *_: calls.append(1))
    x = images(4)
    y = clf.predict(x)
    calls.clear()
    res = attack(clf, x)
    assert len(calls) == passes
    assert torch.equal(res.extra["label"], y)  # the label is still the clean prediction


STEPS = 6


@pytest.mark.parametrize("name, settings, forward, backward", [
    # (forward, backward) images passed per attacked image, against a term that rejects every iterate.
    # pgd_detector: 2 λ × 2 starts = 4 runs in one batch, one forward+backward per step (its forward judges the
    # iterate), one forward for each run's last iterate, plus the clean prediction and the verdict at x*
    ("pgd_detector", {"lambdas": (0.0, 10.0), "guided_starts": 1}, 4 * (STEPS + 1) + 3, 4 * STEPS),  # + the guide's
    ("pgd_detector", {"lambdas": (0.0, 10.0), "keep_best": False}, 2 * (STEPS + 1) + 2, 2 * STEPS),
    ("pgd", {"restarts": 3, "loss": "margin"}, 3 * (STEPS + 1) + 2, 3 * STEPS),
    ("selective_pgd", {"restarts": 2}, 2 * (STEPS + 1) + 2, 2 * STEPS),  # one backward pass per step
    ("orthogonal_pgd", {"restarts": 2}, 2 * (STEPS + 1) + 2, 2 * 2 * STEPS),  # ∇f and ∇g
])
def test_adaptive_passes_per_step(name, settings, forward, backward):
    """Forward and backward passes of the network, in images per attacked image: each step of an adaptive attack is
    one forward+backward (orthogonal: two backward), whatever its number of runs, and ``passes_per_image`` says so
    (3 units a forward+backward, 1 a forward)."""
    fwd, bwd, attack = count_passes(name, settings, threshold=-0.99)
    assert (fwd, bwd) == (forward, backward)
    if name != "pgd":
        assert attack.passes_per_image() == forward - 2 + 2 * backward  # less the clean prediction and the verdict


def test_runs_of_one_start_share_passes_while_the_detector_accepts():
    """Against a term that accepts everything, the λ term has no gradient: the 3 λ runs of each of the 2 starts
    take the same steps, and pgd_detector passes each image through the network once per start and step (and once
    to choose the guided start)."""
    fwd, bwd, _ = count_passes("pgd_detector", {"lambdas": (0.0, 10.0, 100.0), "guided_starts": 1}, threshold=0.0)
    assert (fwd, bwd) == (2 * (STEPS + 1) + 3, 2 * STEPS)


def count_passes(name, settings, threshold):
    """(forward, backward) images through the network per attacked image, and the attack, with a confidence term
    (it reads the logits) at ``threshold``."""
    from rcedetect.detectors import ScoreTerm
    from rcedetect.detectors import create as create_metric

    clf = grouped_linear()
    fwd, bwd = [], []
    clf.net.fc.register_forward_hook(lambda m, i, o: fwd.append(len(i[0])))
    clf.net.fc.register_full_backward_hook(lambda m, gi, go: bwd.append(len(go[0])))
    x = images(4)
    kw = {"eps": 0.2, "steps": STEPS, **settings}
    if name != "pgd":
        kw["detector"] = ScoreTerm(create_metric("confidence"), threshold)
    attack = attacks.create(name, **kw)
    attack(clf, x)
    return sum(fwd) / len(x), sum(bwd) / len(x), attack
