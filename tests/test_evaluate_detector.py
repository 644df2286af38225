"""``rcedetect.evaluate_detector`` and ``rce evaluate-detector``: any detector, the user's own included, evaluated
adaptively in one call; a masking detector fails its sanity checks loudly; a detector that rejects everything
claims nothing; bad input is refused before any attack runs."""

from __future__ import annotations

import json
import sys
import warnings

import pytest
import torch
from torch import nn

import rcedetect
from rcedetect import data
from rcedetect.core.errors import ConfigError, InputError
from rcedetect.evaluation import detector_runs
from rcedetect.evaluation.card import FORMAT, DetectorCard, SanityWarning

TINY = {"steps": 3, "sample": 8, "batch_size": 16}


@pytest.fixture(scope="module")
def setup():
    """A small MLP trained 60 steps on the synthetic set (12x12, 4 classes), wrapped; test images."""
    torch.manual_seed(0)
    ds = data.load("synthetic")
    xtr, ytr = ds.train_images(), ds.y_train
    net = nn.Sequential(nn.Flatten(), nn.Linear(144, 16), nn.ReLU(), nn.Linear(16, 4))
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    for _ in range(60):
        idx = torch.randint(0, len(xtr), (64,))
        loss = nn.functional.cross_entropy(net(xtr[idx]), ytr[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    clf = rcedetect.wrap(net, input_shape=(1, 12, 12))
    x, y = ds.test_images(), ds.y_test
    return {"net": net, "clf": clf, "x": x[:12], "y": y[:12], "held": x[-60:], "xtr": xtr[:200], "ytr": ytr[:200]}


def feature_norm(clf):
    """A detector defined only here: the norm of the final hidden vector (higher = more adversarial)."""
    return lambda x: clf.features(x).norm(dim=1)


def test_a_detector_of_ones_own_is_evaluated(setup):
    clf = setup["clf"]
    card = rcedetect.evaluate_detector(clf, feature_norm(clf), setup["x"], setup["y"], x_heldout=setup["held"],
                                       eps=[0.1, 0.3], **TINY)
    assert isinstance(card, DetectorCard) and card.threshold_source == "heldout" and card.gradient == "ok"
    assert {"pgd_detector", "selective_pgd", "orthogonal_pgd", "pgd_defended"} <= set(card.attacks)
    assert "feature_pgd" not in card.attacks  # no kernel: it does not apply
    assert card.n_images == 12 and 0 <= card.clean_rejection <= 1 and card.clean_accuracy > 0.5
    assert [p["eps"] for p in card.per_eps] == [0.1, 0.3]
    lo, hi = card.interval
    assert lo <= card.sr <= hi
    first = card.per_eps[-1]["first_found"]
    assert len(first) == 12 and card.per_eps[-1]["n_fooled"] == sum(f in card.attacks for f in first)
    # worst case over attacks: at least every single attack, and grows with ε
    assert all(card.sr >= a["attack_success_rate"] for a in card.per_eps[-1]["per_attack"].values())
    assert card.per_eps[1]["n_fooled"] >= card.per_eps[0]["n_fooled"]
    checks = {c["check"]: c for c in card.sanity}
    assert set(checks) == {"gradient", "large_eps", "more_iterations", "lambda_zero", "monotone_eps", "gradient_free"}
    assert checks["lambda_zero"]["passed"] and checks["gradient"]["passed"] and checks["large_eps"]["passed"]
    doc = json.loads(json.dumps(card.to_json()))
    assert doc["format"] == FORMAT and doc["format_version"] == 1
    assert DetectorCard.from_json(doc).to_json() == doc
    md = card.to_markdown()
    assert md.startswith("# Detector card") and "SR@5" in md and "Sanity checks" in md
    assert "\n" not in repr(card) and len(repr(card)) < 300


def test_an_mlp_on_the_logits_with_its_own_threshold(setup):
    clf = setup["clf"]
    torch.manual_seed(1)
    mlp = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))

    def score(x):
        return mlp(clf.logits(x)).squeeze(1)

    card = rcedetect.evaluate_detector(clf, score, setup["x"], setup["y"], threshold=0.0, version="fast", eps=0.2,
                                       **TINY)
    assert card.threshold == 0.0 and card.threshold_source == "given" and card.attacks == ["pgd_detector",
                                                                                           "pgd_defended"]


def test_a_masking_detector_fails_its_checks_loudly(setup):
    clf = setup["clf"]

    def rounded(x):  # a step function of the feature norm: no gradient anywhere
        return (clf.features(x).norm(dim=1) > 12.0).float() + torch.round(clf.logits(x).max(1).values) * 0

    with pytest.warns(SanityWarning, match="masking gradients"):
        card = rcedetect.evaluate_detector(clf, rounded, setup["x"], setup["y"], x_heldout=setup["held"],
                                           version="fast", eps=0.2, **TINY)
    assert card.gradient == "none" and not card.sanity_passed and "gradient" in card.failed_checks
    assert "random_search_detector" in card.attacks  # the gradient-free attack carries it
    assert any("gradient-free" in n for n in card.notes) and card.verdict != "measured"
    assert "sanity checks failed" in card.to_markdown()


def test_a_non_finite_gradient_leaves_the_gradient_free_attacks(setup):
    clf = setup["clf"]

    def nan_gradient(x):  # finite scores, NaN gradients (sqrt at 0)
        return clf.features(x).norm(dim=1) + torch.sqrt(x.flatten(1) * 0).sum(1)

    with pytest.warns(SanityWarning, match="upper bounds"):
        card = rcedetect.evaluate_detector(clf, nan_gradient, setup["x"], setup["y"], x_heldout=setup["held"],
                                           version="fast", eps=0.2, **TINY)
    assert card.gradient == "non_finite" and set(card.attacks) <= {"random_search_detector", "torchattacks:Square"}
    assert "random_search_detector" in card.attacks
    assert {c["check"]: c["passed"] for c in card.sanity}["large_eps"] is None


def test_a_detector_that_rejects_everything_claims_nothing(setup):
    clf = setup["clf"]

    def everything(x):
        return torch.ones(len(x)) + 0 * x.flatten(1).sum(1)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SanityWarning)
        card = rcedetect.evaluate_detector(clf, everything, setup["x"], setup["y"], threshold=0.5,
                                           x_heldout=setup["held"], version=["pgd_detector"], eps=0.2, **TINY)
    assert card.clean_rejection == 1.0 and card.heldout_rejection == 1.0 and card.clean_accuracy_with_rejection == 0
    assert card.sr == 0 and card.robust_accuracy_with_rejection == 1.0
    assert card.verdict == "vacuous" and "No claim" in card.to_markdown() and "vacuous" in repr(card)


def test_a_torchvision_model_is_wrapped_on_the_fly(setup):
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=4)  # random weights, no download
    assert model.training
    card = rcedetect.evaluate_detector(model, "confidence", setup["x"][:4], setup["y"][:4], x_heldout=setup["held"][:20],
                                       version=["pgd_detector"], eps=0.1, steps=2, sample=4)
    assert card.model.startswith("ResNet") and card.detector == "confidence" and card.n_images == 4
    assert model.training  # its mode is given back


def test_kd_by_name_is_fitted_and_gets_the_feature_attack(setup):
    clf = setup["clf"]
    with pytest.raises(InputError, match="x_train"):
        rcedetect.evaluate_detector(clf, "kd", setup["x"], setup["y"], x_heldout=setup["held"])
    card = rcedetect.evaluate_detector(clf, "kd", setup["x"][:6], setup["y"][:6], x_heldout=setup["held"],
                                       x_train=setup["xtr"], y_train=setup["ytr"], detector_settings={"per_class": 20},
                                       version=["pgd_detector", "feature_pgd"], eps=0.2, steps=2, sample=4)
    assert card.attacks == ["pgd_detector", "feature_pgd"] and card.detector == "kd"


def test_a_rerun_resumes_per_attack(setup, tmp_path):
    clf = setup["clf"]
    kw = dict(x_heldout=setup["held"], version="fast", eps=0.2, out=tmp_path, **TINY)
    card = rcedetect.evaluate_detector(clf, feature_norm(clf), setup["x"], setup["y"], **kw)
    files = sorted((tmp_path / "attacks").glob("*/part-*.safetensors"))
    assert len(files) == 2 and (tmp_path / "card.md").is_file()
    assert json.loads((tmp_path / "card.json").read_text())["format"] == FORMAT
    files[1].unlink()  # as if it crashed during the second attack
    before = files[0].stat().st_mtime_ns
    again = rcedetect.evaluate_detector(clf, feature_norm(clf), setup["x"], setup["y"], **kw)
    assert files[0].stat().st_mtime_ns == before and files[1].is_file()
    assert again.per_eps[0]["n_fooled"] == card.per_eps[0]["n_fooled"]


class TupleNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(144, 4)

    def forward(self, x):
        return self.fc(x.flatten(1)).unsqueeze(2)  # (n, 4, 1): not logits


def _bad_cases(setup):
    clf, x, y, held = setup["clf"], setup["x"], setup["y"], setup["held"]
    ok = feature_norm(clf)
    return {
        "score of wrong shape": (InputError, {"detector": lambda v: torch.zeros(len(v), 1)}),
        "score of wrong dtype": (InputError, {"detector": lambda v: torch.zeros(len(v), dtype=torch.long)}),
        "NaN scores": (InputError, {"detector": lambda v: torch.full((len(v),), float("nan"))}),
        "fpr 0": (ConfigError, {"fpr": 0.0}),
        "fpr 1": (ConfigError, {"fpr": 1.0}),
        "fpr NaN": (ConfigError, {"fpr": float("nan")}),
        "eps 0": (ConfigError, {"eps": 0.0}),
        "eps negative": (ConfigError, {"eps": -0.1}),
        "eps NaN": (ConfigError, {"eps": float("nan")}),
        "x outside [0, 1]": (InputError, {"x": x * 2 + 0.5}),
        "x of the wrong size": (InputError, {"x": x[:, :, :10, :10]}),
        "labels of the wrong length": (InputError, {"y": y[:5]}),
        "a model not returning logits": (InputError, {"model": TupleNet()}),
        "unknown attack": (ConfigError, {"version": ["nosuch"]}),
        "unknown version": (ConfigError, {"version": "slow"}),
        "module:function that does not import": (ConfigError, {"detector": "no_such_module_xyz:score"}),
        "no threshold": (ConfigError, {"x_heldout": None}),
        "unknown metric": (ConfigError, {"detector": "lda"}),
    }, {"model": clf, "detector": ok, "x": x, "y": y, "x_heldout": held}


BAD = ["score of wrong shape", "score of wrong dtype", "NaN scores", "fpr 0", "fpr 1", "fpr NaN", "eps 0",
       "eps negative", "eps NaN", "x outside [0, 1]", "x of the wrong size", "labels of the wrong length",
       "a model not returning logits", "unknown attack", "unknown version", "module:function that does not import",
       "no threshold", "unknown metric"]


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_refused_before_any_attack(setup, monkeypatch, case):
    def no_attack(*a, **k):
        raise AssertionError("an attack ran before the input was checked")

    monkeypatch.setattr(detector_runs, "attack_parts", no_attack)
    monkeypatch.setattr(detector_runs, "build", no_attack)
    cases, base = _bad_cases(setup)
    error, change = cases[case]
    kw = {**base, **change}
    with pytest.raises(error):
        rcedetect.evaluate_detector(kw.pop("model"), kw.pop("detector"), kw.pop("x"), kw.pop("y"), **kw)


def test_the_command_line_refuses_bad_input_in_one_line(tmp_path, capsys):
    from rcedetect.cli import main

    for argv, match in [(["--detector", "no_such_module_xyz:score", "--eps", "0.1"], "cannot import"),
                        (["--detector", "confidence", "--eps", "0.1", "--fpr", "1.5"], "fpr"),
                        (["--detector", "confidence", "--eps", "0"], "eps"),
                        (["--detector", "confidence", "--eps", "0.1", "--attacks", "nosuch"], "unknown attack")]:
        assert main(["evaluate-detector", str(tmp_path / "run"), *argv]) == 2
        err = capsys.readouterr().err
        assert match in err and err.count("\n") == 1
    assert not (tmp_path / "run").exists()


def test_the_command_line_writes_the_card_and_resumes(tmp_path, capsys, monkeypatch, synthetic):
    from conftest import tiny_train_config

    from rcedetect.cli import main
    from rcedetect.training import fit

    run = tmp_path / "run"
    fit(tiny_train_config("ce", steps=30, eval_every=30, checkpoint_every=30, lr_boundaries=(20,)), run,
        dataset=synthetic, progress=False)
    mod = tmp_path / "mydet.py"
    mod.write_text("def score(x, classifier):\n    return classifier.features(x).norm(dim=1)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("mydet", None)
    out = tmp_path / "card"
    argv = ["evaluate-detector", str(run), "--detector", "mydet:score", "--eps", "0.1", "--version", "fast",
            "--steps", "2", "--n", "8", "--calibration-size", "40", "--sample", "4", "--out", str(out), "--quiet"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SanityWarning)
        assert main(argv) == 0
        assert "DetectorCard(" in capsys.readouterr().out
        doc = json.loads((out / "card.json").read_text())
        assert doc["detector"] == "mydet:score" and doc["n_images"] == 8 and (out / "card.md").is_file()
        stamps = {p.relative_to(out): p.stat().st_mtime_ns for p in (out / "attacks").glob("*/part-*.safetensors")}
        assert len(stamps) == 2
        assert main(argv) == 0  # resumed: no attack recomputed
    assert {p.relative_to(out): p.stat().st_mtime_ns for p in (out / "attacks").glob("*/part-*.safetensors")} == stamps
