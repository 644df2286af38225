"""The extension points: attacks carry their traits in their dataclass fields, detectors are registered metrics
with save/load and a detector term, σ² has one resolver, and a reproduce config is checked before any stage runs.

The last test adds an attack the way docs/design.md says (one registered dataclass plus a preset table) and runs it
through ``rce reproduce`` on the finished tiny run: only its own stage runs, and its records carry every detector.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass

import pytest
import torch

from rcedetect import attacks
from rcedetect.attacks.base import AttackResult, check_eps, prepare
from rcedetect.core.errors import ConfigError, NotFittedError
from rcedetect.detectors import (
    REGISTRY,
    Detector,
    KDTerm,
    ScoreTerm,
    default_sigma2,
    observe,
    resolve_sigma2,
    score_features,
)
from rcedetect.evaluation import attack_store, paper_ref
from rcedetect.models.features import extract
from rcedetect.reproduce import resolve_config


def test_attack_traits_come_from_the_dataclass_fields():
    table = {n: (s.takes_eps, s.seeded, s.needs_detector) for n, s in attacks.REGISTRY.items()
             if n in paper_ref.ATTACK_LABELS}  # the paper's attacks (the adaptive ones are tested on their own)
    assert table == {"fgsm": (True, False, False), "bim": (True, False, False), "ilcm": (True, False, False),
                     "jsma": (True, False, False), "noise": (True, True, False), "cw": (False, True, False),
                     "cw_hc": (False, True, False), "cw_wb": (False, True, True)}
    assert attacks.spec("fgsm").required == ("eps",) and attacks.spec("cw_wb").required == ("detector",)
    assert attacks.create("cw_hc").kappa == 10.0 and attacks.create("cw_hc", kappa=3.0).kappa == 3.0
    with pytest.raises(ConfigError, match="needs eps"):
        attacks.create("bim")
    with pytest.raises(ConfigError, match="known: eps, label, precision, steps"):
        attacks.create("bim", eps=0.1, stepz=3)
    # the cost estimate is the attack's own method
    assert attacks.create("bim", eps=0.1, steps=7).passes_per_image() == 21.0
    assert attacks.create("fgsm", eps=0.1).passes_per_image() == 3.0


def test_attack_factory_seeds_each_batch_and_checks_settings_first():
    f = attack_store.attack_factory("noise", {}, 0.1, seed=3)
    assert [f(b).seed for b in range(3)] == [3000, 3001, 3002] and f(0).eps == 0.1
    assert attack_store.attack_factory("noise", {"seed": 5}, 0.1, seed=3)(2).seed == 5002  # a given seed wins
    assert not hasattr(attack_store.attack_factory("fgsm", {}, 0.2, seed=3)(1), "seed")
    with pytest.raises(ConfigError):
        attack_store.attack_factory("bim", {"steps": 0}, 0.1, seed=0)
    with pytest.raises(ConfigError, match="detector"):
        attack_store.attack_factory("cw_wb", {}, None, seed=0)
    assert attack_store.probe("cw_wb", {"max_iterations": 5}).max_iterations == 5  # a stand-in term for checks


def test_detector_registry_and_terms(ce_classifier, synthetic, test_batch, tmp_path):
    assert list(REGISTRY) == ["confidence", "non_me", "kd", "kd_bu", "lid", "mahalanobis"]
    assert [m for m, c in REGISTRY.items() if c.in_paper] == ["confidence", "non_me", "kd"]
    x, _ = test_batch
    train = extract(ce_classifier, synthetic.train_images(), synthetic.y_train)
    det = Detector(ce_classifier, "kd", per_class=60, seed=4, attack_per_class=20).fit(train)
    term = det.attack_term()
    assert isinstance(term, KDTerm) and term.density.counts.tolist() == [20] * 4
    assert torch.equal(term.density.kernels, det.kd.subset(20, seed=5).kernels)  # the subset drawn with seed + 1
    assert torch.allclose(term.eta, det.kd.subset(20, seed=5).eta(train.features, train.labels))
    with torch.no_grad():
        view = observe(ce_classifier, x)
    z, logits = view.z, view.logits
    cls = logits.argmax(1)
    assert torch.allclose(term.margin(view, cls), -term.density.log_kd(z, cls) - term.eta[cls])
    # save / load keeps the kernel, the attack subset and η
    det.save(tmp_path / "kd")
    back = Detector.load(tmp_path / "kd", ce_classifier)
    assert torch.equal(back.kd.kernels, det.kd.kernels) and torch.equal(back.attack_term().eta, term.eta.float())
    assert torch.equal(back.attack_term().density.kernels, term.density.kernels)
    assert torch.equal(back.score(x), det.score(x))
    # any calibrated detector gives the generic term score − T
    conf = Detector(ce_classifier, "confidence").fit(None)
    with pytest.raises(NotFittedError, match="calibrate"):
        conf.attack_term()
    conf.calibrate(x, fpr=0.25)
    gen = conf.attack_term()
    assert isinstance(gen, ScoreTerm)
    want = score_features(conf.scorer, ce_classifier, z) - conf.threshold
    assert torch.allclose(gen.margin(view, cls), want)
    assert int((gen.margin(view, cls) > 0).sum()) == int((conf.predict(x) == -1).sum())


def test_one_sigma2_resolver(synthetic, ce_classifier):
    assert resolve_sigma2(None, "ce") == (default_sigma2("ce"), None)
    assert resolve_sigma2(None, "rce")[0] == pytest.approx(0.1 / 0.26)
    assert resolve_sigma2(2, "rce") == (2.0, None)
    train = extract(ce_classifier, synthetic.train_images(), synthetic.y_train)
    s, sel = resolve_sigma2("auto", "ce", train.features, train.labels, 4, per_class=50)
    assert sel is not None and s == sel.sigma2
    for bad in ("wide", -1.0, math.nan):
        with pytest.raises(ConfigError):
            resolve_sigma2(bad, "ce")
    with pytest.raises(ConfigError, match="needs the training features"):
        resolve_sigma2("auto", "ce")


@pytest.mark.parametrize("override, match", [
    ("attacks.fgsm.eps=[nan]", "finite"),
    ("attacks.bim.eps=[-0.1]", ">= 0"),
    ("attacks.fgsm.eps=[]", "non-empty"),
    ("attacks.cw.settings.max_iterations=0", "max_iterations"),
    ("attacks.jsma.images=0", "images"),
    ("detector.sigma2_ce=-1.0", "sigma2_ce"),
    ("detector.per_class=0", "per_class"),
    ("experiment.seed=\"abc\"", "seed"),
    ("experiment.threads=-1", "threads"),
    ("models.ce.role=\"side\"", "role"),
])
def test_bad_settings_are_refused_before_any_stage(override, match):
    with pytest.raises(ConfigError, match=match):
        resolve_config("tiny", [override])


def test_an_attack_pool_without_held_out_images_is_refused_before_training(tmp_path):
    from rcedetect.reproduce import reproduce

    with pytest.raises(ConfigError, match="calibrate"):  # 200 synthetic test images, all in the attack pool
        reproduce("tiny", tmp_path / "run", ["attacks.noise.images=200"], progress=False, echo=lambda s: None)
    assert not (tmp_path / "run" / "models").exists()


@dataclass(frozen=True)
class Shift:
    """A toy attack: x + ε·(a seeded random sign), clipped; registered the way docs/design.md says."""

    eps: float
    seed: int = 0

    def __post_init__(self):
        check_eps(self.eps)

    def passes_per_image(self) -> float:
        return 1.0

    def __call__(self, classifier, x, y=None) -> AttackResult:
        x, y = prepare(classifier, x, y)
        g = torch.Generator().manual_seed(self.seed)
        sign = torch.randint(0, 2, x.shape, generator=g).to(x) * 2 - 1
        x_adv = (x + self.eps * sign).clamp(0, 1)
        with torch.no_grad():
            success = classifier.predict(x_adv) != y
        return AttackResult(x_adv=x_adv, success=success, iterations=torch.ones(len(x), dtype=torch.long), x=x)


def test_a_new_attack_is_one_registered_class_and_a_preset_table(tiny_run, tmp_path):
    """Run the tiny preset plus ``[attacks.shift]`` in a copy of a finished tiny run: the cached stages stay
    cached, the new attack runs and is scored by every registered detector."""
    from rcedetect.reproduce import reproduce
    from rcedetect.training.config import PRESET_DIR

    out = tmp_path / "run"
    shutil.copytree(tiny_run[0], out)
    attacks.register("shift")(Shift)
    try:
        preset = tmp_path / "tiny-shift.toml"
        preset.write_text((PRESET_DIR / "tiny.toml").read_text().replace('name = "tiny"', 'name = "tiny-shift"')
                          + "\n[attacks.shift]\nimages = 16\nbatch = 8\neps = [0.3]\n")
        lines: list[str] = []
        results = reproduce(str(preset), out, progress=False, echo=lines.append)
    finally:
        del attacks.REGISTRY["shift"]
    ran = [line for line in lines if not line.endswith("cached")]
    assert len(ran) == 2 and "attack shift on ce" in ran[0] and "attack shift on rce" in ran[1]
    recs = [r for r in results["attacks"] if r["attack"] == "shift"]
    assert len(recs) == 2 and all(set(r["detection"]) == set(REGISTRY) for r in recs)
    assert all(r["n_images"] == 16 and r["eps"] == 0.3 for r in recs)
