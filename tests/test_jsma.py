"""JSMA (protocol §5.6): the original probability saliency and the pairwise logit option, batched."""

from __future__ import annotations

import pytest
import torch
from tiny_nets import LinearNet

from rcedetect import Classifier, ConfigError, InputError, attacks
from rcedetect.attacks.jsma import JSMA, _original_choice


def grouped_linear(objective="ce", scale=1.0):
    """3 classes; logit k = scale · (sum of pixels 5k..5k+4) + a small pixel-specific tilt; pixel 15 unused."""
    weight = torch.zeros(3, 16)
    for k in range(3):
        weight[k, 5 * k : 5 * k + 5] = scale * torch.tensor([1.0, 1.1, 1.2, 1.3, 1.4])
    return Classifier(LinearNet(weight, use_bias=False), objective).eval()


def images(n=8, seed=0):
    return torch.rand((n, 1, 4, 4), generator=torch.Generator().manual_seed(seed)) * 0.6 + 0.2


def changed(res):
    return (res.x_adv != res.x).flatten(1).sum(1)


def test_registered():
    assert isinstance(attacks.create("jsma", eps=0.1), JSMA)
    assert attacks.create("jsma", eps=0.1).max_steps == 100


def test_original_saliency_picks_the_largest_dF_t_among_qualifying_features():
    dt = torch.tensor([[0.5, 2.0, 3.0, -1.0]])
    do = torch.tensor([[-0.5, -2.0, 1.0, 1.0]])
    eligible = torch.tensor([[True, True, True, True]])
    assert _original_choice(dt, do, eligible).item() == 1  # 3.0 has do > 0: not qualifying
    assert _original_choice(dt, do, torch.tensor([[True, False, True, True]])).item() == 0
    # nothing qualifies -> fallback dt - do over eligible features only
    assert _original_choice(dt, do, torch.tensor([[False, False, True, True]])).item() == 2


def test_stops_at_the_least_likely_target_on_a_linear_model():
    clf = grouped_linear()
    x = images(16, seed=1)
    res = JSMA(0.2, max_steps=100)(clf, x)
    assert torch.equal(res.target, clf.logits(x).argmin(1))
    assert bool(res.extra["target_reached"].all())
    assert torch.equal(clf.predict(res.x_adv), res.target)
    assert bool(res.success.all())
    # one feature +eps per step, only features of the target's group (dF_t/dx > 0 only there)
    assert bool((changed(res) <= res.iterations).all())
    d = (res.x_adv - x).flatten(1)
    for i, t in enumerate(res.target.tolist()):
        outside = torch.ones(16, dtype=torch.bool)
        outside[5 * t : 5 * t + 5] = False
        assert bool((d[i, outside] == 0).all())
        assert bool((d[i] >= 0).all())
    # it stopped as soon as the target was reached: one step fewer does not reach it
    for i in range(4):
        k = int(res.iterations[i])
        shorter = JSMA(0.2, max_steps=k - 1)(clf, x[i : i + 1]) if k > 1 else None
        if shorter is not None:
            assert not bool(shorter.extra["target_reached"][0])
    # and more budget changes nothing for the finished examples
    longer = JSMA(0.2, max_steps=200)(clf, x)
    assert torch.equal(longer.x_adv, res.x_adv)


def test_features_are_chosen_repeatedly_until_they_reach_one():
    """The largest-gradient feature of the target group is raised by eps until clipped at 1, then the next one."""
    clf = grouped_linear()
    x = torch.full((1, 1, 4, 4), 0.5)
    x[0, 0, 0, :] = 0.9  # group 0 (the clean prediction), so the target is class 1 or 2
    res = JSMA(0.25, max_steps=3)(clf, x)
    t = int(res.target)
    d = (res.x_adv - x).flatten(1)[0]
    top = 5 * t + 4  # the largest weight of the target group
    assert float(res.x_adv.flatten()[top]) == 1.0  # 0.5 -> 0.75 -> 1.0 (two steps), then not eligible
    assert int((d != 0).sum()) == 2 and int(res.iterations) == 3


@pytest.mark.parametrize("saliency", ["original", "pairwise"])
def test_invariants_on_a_trained_resnet(saliency, rce_classifier, test_batch):
    x = test_batch[0][:6]
    x_before = x.clone()
    res = JSMA(0.3, max_steps=12, saliency=saliency)(rce_classifier, x)
    assert torch.equal(x, x_before)
    assert float(res.x_adv.min()) >= 0.0 and float(res.x_adv.max()) <= 1.0
    assert bool((changed(res) <= 12).all())
    assert bool(((res.x_adv - x) >= 0).all())  # JSMA only increases features
    assert float(res.linf.max()) <= 12 * 0.3 + 1e-6
    pred_clean, pred_adv = rce_classifier.predict(x), rce_classifier.predict(res.x_adv)
    assert torch.equal(res.success, pred_adv != pred_clean)
    assert torch.equal(res.extra["target_reached"], pred_adv == res.target)
    limit = 6 if saliency == "pairwise" else 12
    assert bool((res.iterations <= limit).all())
    # finished examples stopped changing: unfinished ones used the whole budget
    assert bool(((res.iterations == limit) | res.extra["target_reached"]).all())
    # batched equals one by one
    single = torch.cat([JSMA(0.3, max_steps=12, saliency=saliency)(rce_classifier, x[i : i + 1]).x_adv
                        for i in range(3)])
    torch.testing.assert_close(single, res.x_adv[:3], atol=1e-6, rtol=0)


def test_pairwise_changes_two_features_per_step_on_a_linear_model():
    clf = grouped_linear()
    x = images(8, seed=2)
    res = JSMA(0.2, max_steps=40, saliency="pairwise")(clf, x)
    assert bool(res.extra["target_reached"].all())
    assert bool((changed(res) <= 2 * res.iterations).all())
    assert bool((changed(res) <= 40).all())


def test_eps_zero_and_errors(ce_classifier, test_batch):
    x = test_batch[0][:2]
    assert torch.equal(JSMA(0.0, max_steps=3)(ce_classifier, x).x_adv, x)
    for bad in ({"eps": -1.0}, {"eps": 0.1, "max_steps": 0}, {"eps": 0.1, "saliency": "papernot"},
                {"eps": 0.1, "saliency": "pairwise", "top_k": 1}):
        with pytest.raises(ConfigError):
            attacks.create("jsma", **bad)
    clf = grouped_linear().train()
    with pytest.raises(InputError):
        JSMA(0.1)(clf, images(1))


def test_exact_sum_gradient_matches_the_autograd_map(ce_classifier, test_batch):
    """∇ₓΣF = 0 for a softmax: the one-backward variant picks the same features as the original's two passes
    (up to rare ties decided by rounding noise)."""
    x, y = test_batch
    a = JSMA(eps=0.3, max_steps=20)(ce_classifier, x[:16], y[:16])
    b = JSMA(eps=0.3, max_steps=20, sum_gradient="exact")(ce_classifier, x[:16], y[:16])
    same = (a.x_adv == b.x_adv).flatten(1).all(1)
    assert same.float().mean() >= 0.9
    assert torch.equal(a.success[same], b.success[same])
    with pytest.raises(ConfigError):
        JSMA(eps=0.1, sum_gradient="zero")


def test_several_features_per_step_keep_the_budget():
    """k features per gradient evaluation: k per step where the map allows k, never more than max_steps in all,
    ceil(max_steps / k) steps at most, and k = 1 is the original attack exactly."""
    clf = grouped_linear()
    x = images(8, seed=3)
    one = JSMA(1.0, max_steps=5)(clf, x)
    assert torch.equal(JSMA(1.0, max_steps=5, features_per_step=1)(clf, x).x_adv, one.x_adv)
    res = JSMA(1.0, max_steps=5, features_per_step=2)(clf, x)
    assert bool((changed(res) <= 5).all()) and bool((res.iterations <= 3).all())
    # eps = 1 makes every raised feature ineligible, so after s full steps exactly 2s features changed
    full = res.iterations < 3
    assert torch.equal(changed(res)[full], 2 * res.iterations[full])
    assert bool(((changed(res) == 5) | full).all())  # the last step raised one: the budget's remainder
    # only the target group has ∂F_t/∂x > 0 and only the unused pixel 15 has ∂F_t/∂x = 0: the map never allows
    # the other groups' features (∂F_t/∂x < 0), whatever k
    wide = JSMA(1.0, max_steps=16, features_per_step=8)(clf, x)
    d = (wide.x_adv - x).flatten(1)
    for i, t in enumerate(wide.target.tolist()):
        allowed = torch.zeros(16, dtype=torch.bool)
        allowed[5 * t : 5 * t + 5] = allowed[15] = True
        assert bool((d[i, ~allowed] == 0).all()) and bool((d[i, 5 * t : 5 * t + 5] != 0).any())
    for bad in ({"features_per_step": 0}, {"features_per_step": 2, "saliency": "pairwise"}):
        with pytest.raises(ConfigError):
            JSMA(0.1, **bad)
