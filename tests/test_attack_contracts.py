"""The call contract, checked on every registered attack (as timm's tests run over the whole model registry and
torchattacks' over ``__all__``): a new attack is covered by registering it.

On a hand-weighted linear model of 4×4 images (fast, known): ε = 0 returns the input; the output stays in [0, 1]
and inside the ε-ball of the attack's norm; the same seed gives the same output; an attack whose output for an
image does not depend on the rest of its batch gives the same output for any batch split; shapes and dtypes are
kept and the input is never changed. An attack that does not make a promise is skipped with the reason its own
traits give (no ``eps`` field, an ``eps`` that is no ball, random draws made per batch).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from tiny_nets import LinearNet

from rcedetect import Classifier, attacks
from rcedetect.detectors import KDTerm, KernelDensity

#: a tiny budget often fools nothing, which is not what these tests look at
pytestmark = pytest.mark.filterwarnings("ignore::rcedetect.attacks.base.NoSuccessWarning")
NAMES = sorted(attacks.REGISTRY)
#: small budgets by field name: each attack runs with min(its default, these)
SMALL = {"steps": 3, "iterations": 10, "max_iterations": 10, "binary_search_steps": 2, "max_steps": 6, "top_k": 8}
EPS = 0.1


@pytest.fixture(scope="module")
def setting():
    """(classifier, detector term, images): 3 classes of 16 pixels, a K-density term on 300 images, and 6 images
    with pixels at 0 and at 1, so that clipping matters."""
    w = torch.randn(3, 16, generator=torch.Generator().manual_seed(0)) * 3.0
    clf = Classifier(LinearNet(w), "ce").eval()
    train = torch.rand(300, 1, 4, 4, generator=torch.Generator().manual_seed(7))
    labels = clf.predict(train)
    kd = KernelDensity.fit(train.flatten(1), labels, 3, per_class=12, sigma2=0.5, seed=0).subset(8, seed=1)
    term = KDTerm(kd, kd.eta(train.flatten(1), labels))
    x = torch.rand(6, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    x[:, :, 0, :2], x[:, :, 1, :2] = 0.0, 1.0
    return clf, term, x


def build(name: str, term, **kw):
    """The attack ``name`` with small budgets, ε = 0.1 where it takes one, the term where it needs one."""
    spec = attacks.spec(name)
    fields = spec.fields
    settings = {k: min(v, fields[k].default) for k, v in SMALL.items()
                if k in fields and isinstance(fields[k].default, int)}
    if spec.takes_eps:
        settings["eps"] = EPS
    if spec.needs_detector:
        settings["detector"] = term
    return spec.create(**{**settings, **kw})


def run(name, setting, x=None, **kw):
    """(the attack, its result on ``x``, default the setting's images)."""
    clf, term, x0 = setting
    attack = build(name, term, **kw)
    return attack, attack(clf, x0 if x is None else x)


@pytest.mark.parametrize("name", NAMES)
def test_zero_budget_returns_the_input(name, setting):
    if not attacks.spec(name).takes_eps:
        pytest.skip(f"{name} has no eps field: its budget is no ε")
    x = setting[2]
    _, res = run(name, setting, eps=0.0)
    assert torch.equal(res.x_adv, x)
    assert not bool(res.success.any())


@pytest.mark.parametrize("name", NAMES)
def test_output_in_the_box_and_the_ball(name, setting):
    x = setting[2]
    attack, res = run(name, setting)
    assert float(res.x_adv.min()) >= 0.0 and float(res.x_adv.max()) <= 1.0
    spec = attacks.spec(name)
    if not spec.bounded:
        pytest.skip(f"{name}: {'no eps field' if not spec.takes_eps else 'its eps bounds no ball (eps_bounds)'}")
    delta = (res.x_adv - x).flatten(1)
    size = delta.abs().amax(1) if getattr(attack, "norm", "linf") == "linf" else delta.norm(dim=1)
    assert bool((size <= EPS * (1 + 1e-6)).all()), size


@pytest.mark.parametrize("name", [n for n in NAMES if "norm" in attacks.spec(n).fields])
def test_l2_output_in_the_ball(name, setting):
    x = setting[2]
    _, res = run(name, setting, norm="l2", eps=0.5)
    assert float(res.x_adv.min()) >= 0.0 and float(res.x_adv.max()) <= 1.0
    assert bool(((res.x_adv - x).flatten(1).norm(dim=1) <= 0.5 * (1 + 1e-6)).all())


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_output(name, setting):
    (_, a), (_, b) = run(name, setting), run(name, setting)
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.success, b.success)


def deterministic(name, setting, x) -> dict:
    """Settings under which ``name`` draws nothing at random, or None: an unseeded attack as it is; a seeded one with
    ``random_start=False`` where it has that field, if two seeds then give the same output (else its seed still
    draws, e.g. targets, per batch)."""
    spec = attacks.spec(name)
    if not spec.seeded:
        return {}
    if "random_start" not in spec.fields:
        return None
    a, b = (run(name, setting, x, random_start=False, seed=s)[1] for s in (0, 1))
    return {"random_start": False} if torch.equal(a.x_adv, b.x_adv) else None


@pytest.mark.parametrize("name", NAMES)
def test_any_batch_split_gives_the_same_output(name, setting):
    x = setting[2]
    kw = deterministic(name, setting, x)
    if kw is None:
        pytest.skip(f"{name} is seeded: its random draws are made per batch (each batch of a run has its own seed)")
    whole = run(name, setting, x, **kw)[1]
    parts = [run(name, setting, x[:4], **kw)[1], run(name, setting, x[4:], **kw)[1]]
    assert torch.equal(whole.x_adv, torch.cat([p.x_adv for p in parts]))
    assert torch.equal(whole.success, torch.cat([p.success for p in parts]))


@pytest.mark.parametrize("name", NAMES)
def test_shapes_dtypes_and_the_input_are_kept(name, setting):
    x = setting[2]
    before = x.clone()
    _, res = run(name, setting)
    assert torch.equal(x, before)
    assert res.x_adv.shape == x.shape and res.x_adv.dtype == torch.float32 and res.x_adv.device == x.device
    assert res.success.shape == (len(x),) and res.success.dtype == torch.bool
    assert all(v.shape[0] == len(x) for v in res.extra.values())
    _, empty = run(name, setting, x[:0])
    assert empty.x_adv.shape == (0, *x.shape[1:]) and empty.success.shape == (0,)


def test_every_attack_is_a_registered_frozen_dataclass():
    for name in NAMES:
        cls = attacks.spec(name).cls
        assert dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen, name
        assert callable(getattr(cls, "passes_per_image", None)), name
