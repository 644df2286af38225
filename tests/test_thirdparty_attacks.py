"""Attacks of other libraries (torchattacks, foolbox) on the defended K+1-class model: they run unchanged, their
success is re-counted by the one rule on the real detector's verdict, and `rce adaptive` / `rce reproduce` record
them like the attacks of this package; bad input is one line on stderr, exit 2, before any work."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import torch

from rcedetect import attacks
from rcedetect.cli import main
from rcedetect.core.errors import ConfigError
from rcedetect.detectors import NOT_SURE, Detector
from rcedetect.detectors.defended import defend
from rcedetect.evaluation import attack_store
from rcedetect.models import checkpoint
from rcedetect.stats.operating_point import fpr_key, operating_points

torchattacks = pytest.importorskip("torchattacks")

EPS = 0.3  # the tiny synthetic models need a large budget before anything gets through


@pytest.fixture(scope="module")
def setting(ce_classifier, synthetic):
    """(classifier, non-ME detector calibrated on the last 80 test images, 48 attacked test images, labels)."""
    clf = ce_classifier.eval()
    det = Detector(clf, "non_me").fit(None).calibrate(synthetic.test_images()[-80:], fpr=0.05)
    return clf, det, synthetic.test_images()[:48], synthetic.y_test[:48]


def _hand_count(det, x, x_adv, y) -> tuple[torch.Tensor, torch.Tensor]:
    """(fooled per image, clean-correct per image), counted by hand from Detector.predict: the adversarial
    verdict is a label other than y and not NOT SURE, and the clean image is classified right."""
    v = det.predict(x_adv)
    cc = det.classifier.predict_batched(x) == y
    return (v != y) & (v != NOT_SURE) & cc, cc


def _sr(det, heldout, x, x_adv, y) -> dict:
    clf = det.classifier
    return operating_points(heldout, det.score(x), det.score(x_adv), y, clf.predict_batched(x),
                            clf.predict_batched(x_adv), fprs=(0.05,), n_boot=100,
                            resample_heldout=False)[fpr_key(0.05)]


def test_torchattacks_pgd_runs_unchanged_on_the_defended_model(setting, synthetic):
    clf, det, x, y = setting
    model = defend(clf, det)
    torch.manual_seed(7)
    direct = torchattacks.PGD(model, eps=EPS, alpha=0.1, steps=10)(x, y)  # the library, as its users call it
    res = attacks.create("torchattacks:PGD", eps=EPS, alpha=0.1, steps=10, detector=det, seed=7)(clf, x, y)
    assert torch.equal(res.x_adv, direct)  # the same images: nothing changed in the library's run
    fooled, cc = _hand_count(det, x, res.x_adv, y)
    assert 0 < int(fooled.sum()) < int(cc.sum())  # a count that could be wrong either way
    assert torch.equal(res.success & cc, fooled)  # the attack's own success = the rule on the detector's verdict
    op = _sr(det, det.score(synthetic.test_images()[-80:]), x, res.x_adv, y)
    assert op["attack_success_rate"] == pytest.approx(int(fooled.sum()) / int(cc.sum()), abs=1e-6)
    # the library's own notion (argmax ≠ y) also counts the rejected images: it is not the rule
    with torch.no_grad():
        library_success = model(res.x_adv).argmax(1) != y
    assert int((library_success & cc).sum()) > int(fooled.sum())


def test_a_seed_gives_the_same_images(setting):
    clf, det, x, y = setting
    a = attacks.create("torchattacks:APGD", eps=EPS, steps=5, detector=det, seed=3)
    assert torch.equal(a(clf, x[:8], y[:8]).x_adv, a(clf, x[:8], y[:8]).x_adv)


@pytest.mark.parametrize("name, settings", [
    ("torchattacks:AutoAttack", {}),  # the standard version: APGD-CE, APGD-T, FAB-T, Square
    ("torchattacks:APGDT", {"steps": 5}),  # a cut of it: APGD-T alone, few steps
    ("torchattacks:PGD", {"steps": 10, "alpha": 0.1, "targeted": "random"}),  # C&W's targeted attack on K+1
])
def test_autoattack_and_its_parts_on_the_defended_model(setting, name, settings):
    clf, det, x, y = setting
    res = attacks.create(name, eps=EPS, detector=det, **settings)(clf, x[:24], y[:24])
    fooled, cc = _hand_count(det, x[:24], res.x_adv, y[:24])
    assert torch.equal(res.success & cc, fooled)
    assert (res.x_adv - x[:24]).abs().amax() <= EPS + 1e-6 and res.x_adv.min() >= 0 and res.x_adv.max() <= 1
    if settings.get("targeted"):
        assert res.target is not None and bool((res.target != y[:24]).all()) and int(res.target.max()) < 4


def test_autoattack_on_the_classifier_alone_gives_robust_accuracy(setting):
    clf, det, x, y = setting
    a = attacks.create("torchattacks:AutoAttack", eps=EPS, detector=det, on="classifier")
    assert a.build(clf, clf.num_classes)._autoattack.attacks[1].n_target_classes == clf.num_classes - 1  # APGD-T, K
    res = a(clf, x[:24], y[:24])
    robust = float((clf.predict(res.x_adv) == y[:24]).float().mean())
    clean = float((clf.predict(x[:24]) == y[:24]).float().mean())
    assert robust < clean  # the undefended classifier falls at this budget
    assert torch.equal(res.success, clf.predict(res.x_adv) != y[:24])  # no detector: misclassified is success
    defended = attacks.create("torchattacks:AutoAttack", eps=EPS, detector=det)
    assert defended.build(defend(clf, det), clf.num_classes + 1)._autoattack.attacks[1].n_target_classes == clf.num_classes


@pytest.mark.parametrize("name, settings, match", [
    ("torchattacks:NoSuchAttack", {"eps": 0.1}, "unknown attack 'torchattacks:NoSuchAttack'"),
    ("torchattacks:MultiAttack", {"eps": 0.1}, "unknown attack"),
    ("torchattacks:LGV", {}, "needs the setting trainloader"),
    ("torchattacks:APGD", {"eps": 0.1, "stepz": 5}, "takes no setting 'stepz'"),
    ("torchattacks:APGD", {"eps": 0.1, "targeted": "random"}, "no targeted mode"),
    ("torchattacks:APGD", {"eps": 0.1, "targeted": "all"}, "targeted must be"),
    ("torchattacks:AutoAttack", {"eps": 0.1, "version": "fast"}, "Not valid version"),
    ("torchattacks:APGD", {}, "needs eps"),
    ("torchattacks:APGD", {"eps": 2.0}, "eps"),
    ("torchattacks:APGD", {"eps": 0.1, "on": "both"}, "on must be"),
    ("torchattacks:APGD", {"eps": 0.1, "reject_scale": 0}, "reject_scale"),
    ("nolib:PGD", {"eps": 0.1}, "unknown attack library"),
])
def test_bad_settings_fail_when_the_attack_is_built(name, settings, match):
    with pytest.raises(ConfigError, match=match):
        attacks.spec(name).create(**settings)


@pytest.mark.skipif(importlib.util.find_spec("foolbox") is not None, reason="foolbox is installed")
def test_foolbox_not_installed_names_the_extra():
    with pytest.raises(ConfigError, match=r"foolbox is not installed.*rcedetect\[peers\]"):
        attacks.spec("foolbox:LinfPGD")


def test_the_defended_model_needs_a_detector(setting):
    clf, _, x, y = setting
    with pytest.raises(ConfigError, match="needs a detector"):
        attacks.create("torchattacks:PGD", eps=EPS, on="defended")(clf, x[:4], y[:4])


# -- the command line ---------------------------------------------------------------------------------------------
@pytest.fixture
def calibrated_run(trained_runs, tmp_path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(trained_runs["ce"], run)
    shutil.rmtree(run / "adaptive", ignore_errors=True)
    assert main(["calibrate", str(run), "--metric", "non_me", "--calibration-size", "80", "--quiet"]) == 0
    return run


def test_rce_adaptive_with_a_torchattacks_attack(calibrated_run, synthetic, capsys):
    run = calibrated_run
    argv = ["adaptive", str(run), "--attack", "torchattacks:PGD", "--metric", "non_me", "--eps", str(EPS),
            "--n", "24", "--batch-size", "12", "--set", "steps=10", "--set", "alpha=0.1", "--bootstrap", "100",
            "--quiet"]
    assert main(argv) == 0
    assert "SR@5" in capsys.readouterr().out
    (out,) = (run / "adaptive").glob("non_me-torchattacks-PGD-*")  # no ':' in a folder name
    summary = json.loads((out / "summary.json").read_text())
    op = summary["operating_point"]
    clf = checkpoint.load(run).classifier
    det = Detector.load(run / "detector-non_me", clf)
    res, _, stored = attack_store.load_parts(out, 24, 12)
    x = synthetic.test_images()[stored["indices"]]
    fooled, cc = _hand_count(det, x, res.x_adv, stored["y"])
    assert op["attack_success_rate"] == pytest.approx(int(fooled.sum()) / int(cc.sum()), abs=1e-6)
    assert int(fooled.sum()) > 0 and op["bootstrap"]["attack_success_rate"][0] is not None
    assert summary["robust_accuracy"] == pytest.approx(float((clf.predict(res.x_adv) == stored["y"]).float().mean()))
    assert 0 <= op["robust_accuracy_with_rejection"] <= 1


@pytest.mark.parametrize("extra, match", [
    (["--attack", "torchattacks:NoSuchAttack", "--eps", "0.1"], "unknown attack 'torchattacks:NoSuchAttack'"),
    (["--attack", "torchattacks:LGV"], "needs the setting trainloader"),
    (["--attack", "torchattacks:APGD", "--eps", "0.1", "--set", "stepz=3"], "takes no setting 'stepz'"),
    (["--attack", "torchattacks:APGD", "--eps", "0.1", "--set", 'targeted="random"'], "no targeted mode"),
    (["--attack", "torchattacks:APGD"], "needs --eps"),
    (["--attack", "torchattacks:APGD", "--eps", "5"], "--eps"),
    (["--attack", "torchattacks:APGD", "--eps", "0.1", "--set", 'on="both"'], "on must be"),
])
def test_bad_cli_input_exits_2_before_any_work(trained_runs, tmp_path, capsys, extra, match):
    run = tmp_path / "run"
    shutil.copytree(trained_runs["ce"], run)
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    assert main(["adaptive", str(run), "--metric", "non_me", *extra]) == 2
    err = capsys.readouterr().err
    assert match in err and err.count("\n") == 1
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == before


def test_an_uncalibrated_detector_is_refused_before_any_work(trained_runs, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained_runs["ce"], run)
    shutil.rmtree(run / "detector-non_me", ignore_errors=True)
    assert main(["adaptive", str(run), "--metric", "non_me", "--attack", "torchattacks:APGD", "--eps", "0.1"]) == 2
    err = capsys.readouterr().err
    assert "rce calibrate" in err and err.count("\n") == 1
    assert not (run / "adaptive").exists()


# -- rce reproduce ------------------------------------------------------------------------------------------------
MINI = """
[experiment]
name = "mini"
seed = 0
train_feature_images = 600
tsne_images = 20
figure3_images = 2
table2_eps = 0.3
batch_size = 200
calibration_images = 80

[models.ce]
preset = "cpu-mnist5k-ce"
role = "main"
[models.ce.train]
dataset = "synthetic"
steps = 60
batch_size = 32
lr_boundaries = [40]
lr_values = [0.05, 0.005]
eval_every = 30
checkpoint_every = 30

[detector]
per_class = 100
attack_per_class = 20
baselines = []

[attacks.fgsm]
images = 8
batch = 8
eps = [0.3]

[adaptive]
metrics = ["non_me"]
images = 16
batch = 16
fpr = 0.05
bootstrap = 50
sanity = false

[adaptive.attacks.pgd_detector]
eps = [0.3]
settings = { steps = 3, lambdas = [0.0, 10.0] }

[adaptive.attacks.pgd_ta]
attack = "torchattacks:PGD"
eps = [0.3]
settings = { steps = 10, alpha = 0.1 }

[adaptive.attacks.autoattack_clf]
attack = "torchattacks:AutoAttack"
eps = [0.3]
settings = { on = "classifier" }
"""


def test_reproduce_runs_a_torchattacks_table_beside_the_own_attacks(tmp_path):
    from rcedetect.reproduce import reproduce

    preset = tmp_path / "mini.toml"
    preset.write_text(MINI)
    results = reproduce(str(preset), tmp_path / "out", ["experiment.threads=1"], progress=False, echo=lambda s: None)
    ad = results["adaptive"]
    recs = {r["attack"]: r for r in ad["records"]}
    assert set(recs) == {"pgd_detector", "pgd_ta", "autoattack_clf"}
    ta = recs["pgd_ta"]
    assert ta["registered"] == "torchattacks:PGD" and ta["norm"] == "linf" and ta["eps"] == 0.3
    op = ta["operating_point"]
    assert sum(ta["fooled"]) / op["n_clean_correct"] == pytest.approx(op["attack_success_rate"], abs=1e-6)
    assert op["bootstrap"]["attack_success_rate"] is not None and "robust_accuracy" in ta
    (worst,) = ad["worst_case"]  # one norm, one ε: the union over all three attacks
    assert worst["attacks"] == ["autoattack_clf", "pgd_detector", "pgd_ta"]
    union = [any(r["fooled"][i] for r in recs.values()) for i in range(16)]
    assert worst["n_fooled"] == sum(union) and worst["n_fooled"] >= sum(ta["fooled"])
    assert main(["report", str(tmp_path / "out")]) == 0
    report = (tmp_path / "out" / "report.md").read_text()
    assert "pgd_ta" in report and "autoattack_clf" in report  # beside the attacks of this package


def test_reproduce_refuses_a_bad_library_table_before_training(tmp_path):
    from rcedetect.reproduce.config import plan, resolve_config

    preset = tmp_path / "mini.toml"
    preset.write_text(MINI.replace('attack = "torchattacks:PGD"', 'attack = "torchattacks:PGDD"'))
    with pytest.raises(ConfigError, match="unknown attack 'torchattacks:PGDD'"):
        plan(resolve_config(str(preset)))
    preset.write_text(MINI.replace("settings = { steps = 10, alpha = 0.1 }", "settings = { stepz = 10 }"))
    with pytest.raises(ConfigError, match="takes no setting 'stepz'"):
        plan(resolve_config(str(preset)))


def test_query_attack_cost_counts_its_queries():
    """Square makes one forward pass per query: its cost is n_queries × restarts units, not the 3 × 10 of a
    gradient attack's default steps; a gradient attack keeps 3 units per step."""
    assert attacks.create("torchattacks:Square", eps=0.1, n_queries=1000).passes_per_image() == 1000.0
    assert attacks.create("torchattacks:Square", eps=0.1, n_queries=200, n_restarts=3).passes_per_image() == 600.0
    assert attacks.create("torchattacks:PGD", eps=0.1, steps=7).passes_per_image() == 21.0
