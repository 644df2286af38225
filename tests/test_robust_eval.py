"""Robust accuracy (protocol §20): the cascade on a linear model whose L∞ answer is known, the detector rows of
robust accuracy with rejection, the "Detection or robust training?" report section with each of Tramèr's verdicts,
the robust presets' plans, bad [robust] settings and roles, and a small run of the whole pipeline with a robust
model."""

from __future__ import annotations

import itertools

import pytest
import torch
from tiny_nets import LinearNet

from rcedetect import report
from rcedetect.cli import main
from rcedetect.core.errors import ConfigError
from rcedetect.core.io import write_json
from rcedetect.evaluation import attack_store
from rcedetect.evaluation.robust import cascade
from rcedetect.models.classifier import Classifier
from rcedetect.report.robust import CONSISTENT, UNRESOLVED, WEAK, robust_blocks, tramer_verdict
from rcedetect.reproduce import plan, resolve_config
from rcedetect.reproduce.robust import detector_rows
from rcedetect.stats.metrics import wilson_interval


# ----------------------------------------------------------------------------------------------- the cascade
def linear_problem(n: int = 200, d: int = 16, seed: int = 0):
    """A 2-class linear classifier on 1×4×4 images in [0.3, 0.7], and each image's exact L∞ distance to the
    decision boundary: margin / ‖w_y − w_other‖₁ (the box [0, 1] never binds for ε ≤ 0.25)."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(d, generator=g)
    weight = torch.stack([w / 2, -w / 2])
    bias = torch.tensor([0.3, -0.3])
    clf = Classifier(LinearNet(weight, bias), "ce").eval()
    x = 0.3 + 0.4 * torch.rand(n, 1, 4, 4, generator=g)
    y = torch.randint(0, 2, (n,), generator=g)
    logits = clf.logits(x).detach()
    margin = logits.gather(1, y[:, None]).squeeze(1) - logits.gather(1, (1 - y)[:, None]).squeeze(1)
    return clf, x, y, margin / w.abs().sum()  # < 0: misclassified clean


def pgd(loss: str, steps: int = 5, restarts: int = 1):
    settings = {"steps": steps, "restarts": restarts, "loss": loss, "label": "true"}
    return loss, lambda eps: attack_store.attack_factory("pgd", settings, eps, 0)


def test_cascade_on_a_linear_model_finds_the_known_l_inf_answer():
    clf, x, y, distance = linear_problem()
    grid = [0.02, 0.05, 0.1, 0.2]
    rec = cascade(clf, x, y, grid, [pgd("ce"), pgd("margin")], batch=64)
    assert rec["eps"] == grid and rec["n_images"] == len(x)
    assert rec["clean_correct"] == (distance > 0).tolist()
    for row, eps in zip(rec["robust"], grid):
        expected = int((distance > eps).sum())
        assert row["n_robust"] == expected, (eps, row)
        assert row["interval"] == list(wilson_interval(expected, len(x)))
        assert row["interval"][0] <= row["robust_accuracy"] <= row["interval"][1]
    # each image broken at the first grid ε above its distance, by the first attack (the optimum of a linear model)
    for d, at, by in zip(distance.tolist(), rec["broken_at"], rec["broken_by"]):
        first = next((e for e in grid if e > d), None) if d > 0 else 0.0
        assert at == first and (by == "clean" if d <= 0 else (by == "ce" if first else by is None))
    # the second attack attacks only what the first left standing, and finds nothing more
    assert all(s["n_broken"] == 0 for s in rec["steps"] if s["attack"] == "margin")
    first, second = rec["steps"][:2]
    assert first["n_attacked"] == int((distance > 0).sum()) and first["n_broken"] > 0
    assert second["n_attacked"] == first["n_attacked"] - first["n_broken"]


def test_torchattacks_apgd_in_the_cascade_agrees_with_the_known_answer():
    pytest.importorskip("torchattacks")
    clf, x, y, distance = linear_problem(n=64)
    apgd = ("apgd", lambda eps: attack_store.attack_factory("torchattacks:APGD", {"steps": 10}, eps, 0))
    rec = cascade(clf, x, y, [0.05, 0.1], [apgd], batch=64)
    assert [r["n_robust"] for r in rec["robust"]] == [int((distance > e).sum()) for e in (0.05, 0.1)]


class Overshoot:
    """A bad attack: moves every image 10·ε along the worst-case direction, far outside the ε-ball."""

    def __init__(self, eps, direction):
        self.eps, self.direction = eps, direction

    def __call__(self, classifier, x, y):
        from rcedetect.attacks.base import AttackResult

        sign = torch.where(y[:, None, None, None] == 0, -1.0, 1.0) * self.direction
        return AttackResult(x_adv=x + 10 * self.eps * sign, success=torch.ones(len(x), dtype=torch.bool), x=x)


def test_an_attack_output_outside_the_ball_is_put_back_before_it_counts():
    clf, x, y, distance = linear_problem()
    direction = clf.net.fc.weight[0].detach().sign().view(1, 1, 4, 4)
    bad = ("overshoot", lambda eps: (lambda b: Overshoot(eps, direction)))
    rec = cascade(clf, x, y, [0.05, 0.1], [bad], batch=50)
    # unprojected, every image would be misclassified; put back on the ball it is the exact L∞ answer
    assert [r["n_robust"] for r in rec["robust"]] == [int((distance > e).sum()) for e in (0.05, 0.1)]


class Memory:
    def __init__(self):
        self.steps = {}

    def load(self, index, eps, attack):
        return self.steps.get((index, eps, attack))

    def save(self, index, eps, attack, step):
        self.steps[(index, eps, attack)] = step


def test_a_resumed_cascade_reuses_its_steps():
    clf, x, y, _ = linear_problem(n=40)
    calls = []

    def counting(eps):
        factory = attack_store.attack_factory("pgd", {"steps": 5, "label": "true"}, eps, 0)
        return lambda b: (calls.append(eps), factory(b))[1]

    store = Memory()
    first = cascade(clf, x, y, [0.05, 0.1], [("ce", counting)], batch=40, store=store)
    n_calls = len(calls)
    again = cascade(clf, x, y, [0.05, 0.1], [("ce", counting)], batch=40, store=store)
    assert len(calls) == n_calls and again["robust"] == first["robust"]
    store.steps.pop(max(store.steps))  # a run killed before its last step recomputes that step alone
    cascade(clf, x, y, [0.05, 0.1], [("ce", counting)], batch=40, store=store)
    assert len(calls) == n_calls + 1


# ----------------------------------------------------------------------------------------------- detectors
def test_detector_rows_count_clean_correct_accepted_and_never_fooled():
    model = {"model": "ce", "arch": "resnet8", "objective": "ce"}
    recs = [{"eps": 0.1, "attack": "pgd_detector", "fooled": [True, False, False, False, False]},
            {"eps": 0.2, "attack": "orthogonal_pgd", "fooled": [False, True, False, False, False]},
            {"eps": None, "attack": "cw_wb", "fooled": [True, True, True, True, True]},  # no ε: not in the grid
            {"eps": 1.0, "attack": "pgd_detector_l2", "norm": "l2", "fooled": [True] * 5}]  # another norm
    rows = detector_rows(model, "kd", recs, [True, True, True, True, False], [True, True, True, False, True],
                         [0.05, 0.1, 0.2])
    assert [r["n_robust"] for r in rows] == [3, 2, 1]
    assert [r["eps_attacked"] for r in rows] == [None, 0.1, 0.2]
    assert rows[2]["attacks"] == ["orthogonal_pgd", "pgd_detector"]
    assert all(r["n_clean_rejected"] == 1 and r["clean_rejection_rate"] == 0.2 and r["n_images"] == 5 for r in rows)
    assert rows[1]["interval"] == list(wilson_interval(2, 5))


# ----------------------------------------------------------------------------------------------- the report
def test_tramer_verdicts():
    assert tramer_verdict((0.3, 0.2, 0.4), (0.6, 0.5, 0.7)) == CONSISTENT
    assert tramer_verdict((0.6, 0.5, 0.7), (0.6, 0.5, 0.7)) == CONSISTENT  # equal is no excess
    assert tramer_verdict((0.9, 0.8, 0.95), (0.6, 0.5, 0.7)) == WEAK
    assert tramer_verdict((0.65, 0.55, 0.74), (0.6, 0.5, 0.7)) == UNRESOLVED
    assert tramer_verdict(None, (0.6, 0.5, 0.7)) == "" and tramer_verdict((0.3, 0.2, 0.4), None) == ""


def _row(k: int, n: int, **kw) -> dict:
    return {**kw, "n_images": n, "interval": list(wilson_interval(k, n))}


def robust_results() -> dict:
    """A hand-built results dict: a standard CE model with three detectors, a PGD-AT model, ε 0.1 and its half."""
    n = 100
    models = {"ce": {"role": "main", "arch": "resnet8", "objective": "ce", "test_accuracy": 0.99, "n_test": 1000},
              "pgd_at": {"role": "robust", "arch": "resnet8", "objective": "ce", "test_accuracy": 0.95,
                         "n_test": 1000, "training": {"kind": "pgd-at", "eps": 0.3, "norm": "linf", "steps": 7}}}
    info = {"arch": "resnet8", "objective": "ce"}
    classifiers = [_row(k, n, model=m, role=models[m]["role"], eps=e, robust_accuracy=k / n, n_robust=k, **info,
                        **({"training": models[m]["training"]} if m == "pgd_at" else {}))
                   for m, e, k in (("ce", 0.05, 30), ("ce", 0.1, 2), ("pgd_at", 0.05, 60), ("pgd_at", 0.1, 55))]
    # claims at ε 0.1 against PGD-AT's 60 [50, 69] at ε/2: below it, far above it, above it within the intervals
    detectors = [_row(k, n, model="ce", role="main", metric=metric, eps=e, eps_attacked=e if e == 0.1 else None,
                      robust_accuracy_with_rejection=k / n, n_robust=k, clean_rejection_rate=0.05,
                      clean_rejection_interval=list(wilson_interval(5, n)), **info)
                 for metric, claim in (("kd", 30), ("non_me", 90), ("confidence", 65))
                 for e, k in ((0.05, 95), (0.1, claim))]
    return {"format": "rcedetect-results", "models": models, "attacks": [],
            "robust": {"eps": [0.05, 0.1], "adaptive_eps": [0.1], "fpr": 0.05, "images": n,
                       "attacks": [{"name": "pgd_ce", "attack": "pgd", "settings": {}}],
                       "classifiers": classifiers, "detectors": detectors,
                       "records": {"ce": {"broken_by": ["clean"] + ["pgd_ce"] * 97 + [None] * 2}}}}


def test_report_section_from_hand_built_results_says_each_tramer_verdict(tmp_path):
    results = robust_results()
    md = report.to_markdown(robust_blocks(results))
    assert "## Detection or robust training?" in md
    assert "ResNet-8 CE, PGD-AT ε 0.3 (7 steps)" in md and "pgd_ce 97" in md
    lines = {line.split("|")[3].strip(): line for line in md.splitlines() if line.startswith("| 0.1 | ResNet-8 CE |")}
    assert f"{CONSISTENT} (best at ε/2: CE PGD-AT 60)" in lines["K-density"]
    assert WEAK in lines["non-ME"] and UNRESOLVED in lines["confidence"]
    assert "90.0 [83, 94]" in lines["non-ME"] and "5.0 [2, 11]" in lines["non-ME"]  # claim and clean rejected
    assert "no adaptive attack ran at or below ε/2" in md  # ε/2 = 0.05 is below the adaptive grid
    words = md.split("In plain words:")[1]
    assert "At ε 0.1, robust training keeps the most: CE PGD-AT 55.0" not in words  # non-ME claims 90 there
    assert "At ε 0.1, detection keeps the most: CE + non-ME 90.0 [83, 94]" in words
    assert "Tramèr's check flags CE + non-ME at ε 0.1 (a sign of a weak attack" in words
    # the whole report renders with the section, and Table 1 has no paper value for the PGD-AT model
    from test_report import fake_results

    full = {**fake_results(), "robust": results["robust"]}
    full["models"]["pgd_at"] = {**results["models"]["pgd_at"], "steps": 800, "test_error_percent": 5.0,
                                "dataset": "mnist5k"}
    write_json(tmp_path / "results.json", full)
    md_path, _ = report.render(tmp_path)
    text = md_path.read_text()
    assert "Detection or robust training?" in text and "figures/robust_accuracy_vs_eps.png" in text
    assert (tmp_path / "figures" / "robust_accuracy_vs_eps.png").stat().st_size > 1000
    table1 = next(line for line in text.splitlines() if line.startswith("| ResNet-8 CE, PGD-AT"))
    assert "—" in table1


def test_robust_figure_draws_each_model_alone_and_each_detector_only_where_it_was_attacked(tmp_path, monkeypatch):
    from rcedetect.report import figures_detection

    drawn = {}

    def keep(fig, out_dir, name):
        drawn["axes"] = [ax for ax in fig.axes if ax.get_visible()]
        return name

    monkeypatch.setattr(figures_detection, "save_figure", keep)
    key, _, caption = figures_detection.fig_robust(robust_results(), tmp_path)
    assert key == "robust" and "100 attacked test images" in caption
    ce, at = drawn["axes"]
    assert ce.get_title() == "ResNet-8 CE" and at.get_title() == "ResNet-8 CE, PGD-AT ε 0.3 (7 steps)"
    lines = {tuple(line.get_xdata()): list(line.get_ydata()) for line in ce.get_lines()}
    assert lines[(0.05, 0.1)] == [30.0, 2.0]  # the classifier alone, every ε of the grid
    detector_lines = [list(line.get_ydata()) for line in ce.get_lines() if tuple(line.get_xdata()) == (0.1,)]
    assert sorted(detector_lines) == [[30.0], [65.0], [90.0]]  # ε 0.05 was not attacked: no point there
    assert not [line for line in at.get_lines() if tuple(line.get_xdata()) == (0.1,)]  # no detector on PGD-AT
    assert figures_detection.fig_robust({"models": {}}, tmp_path) is None


def test_cascade_words_count_what_the_later_attacks_found_and_flag_a_gradient_free_win():
    results = robust_results()
    rb = results["robust"]
    rb["attacks"] = [{"name": "pgd_ce", "attack": "pgd", "settings": {}},
                     {"name": "apgd", "attack": "torchattacks:APGD", "settings": {}},
                     {"name": "square", "attack": "torchattacks:Square", "settings": {}}]
    rb["records"] = {  # 100 images each: PGD-AT loses 10 to PGD, 6 to APGD and 4 to Square, at ε up to 0.1
        "pgd_at": {"broken_by": ["clean"] * 5 + ["pgd_ce"] * 10 + ["apgd"] * 6 + ["square"] * 4 + [None] * 75,
                   "broken_at": [0.0] * 5 + [0.05] * 10 + [0.05] * 6 + [0.1] * 4 + [None] * 75},
        "ce": {"broken_by": ["clean"] + ["pgd_ce"] * 97 + [None] * 2, "broken_at": [0.0] + [0.05] * 97 + [None] * 2}}
    md = report.to_markdown(robust_blocks(results))
    words = md.split("What the cascade says of the evaluation:")[1].split("###")[0]
    at = next(line for line in words.splitlines() if line.startswith("- CE PGD-AT:"))
    assert "broke 10 of the 100 images that pgd_ce left standing" in at and "(apgd 6, square 4)" in at, at
    assert "at ε up to 0.1" in at and "overstate robust accuracy by up to 10.0 points" in at, at
    assert "4 of them fell only to the gradient-free square" in at and "gradient masking" in at, at
    assert "- CE: every image broken was broken first by pgd_ce" in words, words
    rb["records"]["pgd_at"]["broken_by"] = ["clean"] * 5 + ["pgd_ce"] * 10 + ["apgd"] * 10 + [None] * 75
    md = report.to_markdown(robust_blocks(results))
    assert "gradient masking" not in md and "(apgd 10)" in md  # no gradient-free success: no flag


def test_plain_words_set_detectors_on_a_robust_model_against_the_model_alone():
    results = robust_results()
    rb, n = results["robust"], 100
    info = {"arch": "resnet8", "objective": "ce", "training": results["models"]["pgd_at"]["training"]}
    rb["detectors"] += [_row(k, n, model="pgd_at", role="robust", metric=metric, eps=0.1, eps_attacked=0.1,
                             robust_accuracy_with_rejection=k / n, n_robust=k, clean_rejection_rate=0.05,
                             clean_rejection_interval=list(wilson_interval(5, n)), **info)
                        for metric, k in (("kd", 50), ("confidence", 53))]  # the model alone: 55 at ε 0.1
    words = report.to_markdown(robust_blocks(results)).split("In plain words:")[1]
    assert ("A detector on CE PGD-AT: at best -2.0 points over the model alone (confidence at ε 0.1: 53.0 [43, 62] "
            "against 55.0 [45, 64]); no detector adds") in words, words
    # the ε line weighs classifiers alone against detectors on standard models, not on the robust one
    assert "At ε 0.1, detection keeps the most: CE + non-ME 90.0" in words
    rb["detectors"][-1]["robust_accuracy_with_rejection"] = 0.60
    words = report.to_markdown(robust_blocks(results)).split("In plain words:")[1]
    assert "at best +5.0 points over the model alone" in words and "not resolved" in words.split("A detector on")[1]


def test_section_is_absent_without_robust_results():
    assert robust_blocks({"models": {}}) == []


# ----------------------------------------------------------------------------------------------- presets
def test_robust_demo_plan_and_stages(tmp_path):
    from rcedetect.reproduce.inputs import Inputs
    from rcedetect.reproduce.layout import Layout
    from rcedetect.reproduce.recipe import stage_list

    p = plan(resolve_config("robust-demo"))
    assert p.mains == ["ce", "rce"] and p.robusts == ["pgd_at", "rce_at", "trades"]
    assert p.robust_evaluated == ["ce", "rce", "pgd_at", "rce_at", "trades"]
    assert p.detected == ["ce", "rce", "pgd_at", "rce_at"]  # TRADES: robust accuracy alone
    at, tr = p.models["pgd_at"].train, p.models["trades"].train
    rat = p.models["rce_at"].train
    assert (rat.objective, rat.adversarial.eps, rat.steps, rat.arch) == ("rce", 0.3, 600, "resnet8")
    assert (at.adversarial.eps, at.adversarial.norm, at.adversarial.steps, at.trades_beta) == (0.3, "linf", 7, None)
    assert (tr.adversarial.eps, tr.trades_beta, tr.objective, at.arch) == (0.3, 6.0, "ce", "resnet8")
    assert p.robust.eps == (0.015, 0.03, 0.05, 0.06, 0.08, 0.1, 0.16, 0.3)  # grid, halves, training ε
    assert p.robust.adaptive_eps == (0.03, 0.06, 0.1, 0.16) and p.robust.images == 48
    assert [a.name for a in p.robust.attacks] == ["pgd_ce", "pgd_margin", "apgd_ce", "apgd_dlr", "square"]
    assert p.robust.attacks[0].settings["label"] == "true" and "label" not in p.robust.attacks[2].settings
    inp = Inputs(Layout(p, tmp_path, lambda: 1000))
    names = [s.name for s in stage_list(inp, False, lambda e: None)]
    assert {"train pgd_at", "train rce_at", "train trades"} <= {n.split(" (")[0] for n in names}
    assert not [n for n in names if n.startswith(("features trades", "detector trades")) or " on trades " in n]
    for m in ("pgd_at", "rce_at"):  # detect = true: the detectors and every adaptive attack on them
        assert {f"features {m}", f"detector {m}"} <= set(names)
        assert len([n for n in names if n.startswith("adaptive") and f" on {m} " in n]) == 4 * 3
    assert [n.split(" (")[0] for n in names if n.startswith("robust")] == [
        f"robust accuracy {m}" for m in ("ce", "rce", "pgd_at", "rce_at", "trades")]
    assert inp.layout.pool_size() == 48


@pytest.mark.parametrize("preset, arch, eps", [("mnist-cpu-adaptive", "resnet8", 0.3),
                                                ("paper-mnist", "resnet32", 0.3),
                                                ("paper-cifar10", "resnet32", 0.03137)])
def test_presets_evaluate_a_pgd_at_model_on_the_main_backbone(preset, arch, eps):
    p = plan(resolve_config(preset))
    assert p.robusts == ["pgd_at"]
    tc = p.models["pgd_at"].train
    assert tc.adversarial.eps == eps and tc.trades_beta is None and tc.objective == "ce"
    assert tc.arch == arch == p.models["ce"].train.arch and tc.dataset == p.models["ce"].train.dataset
    grid = p.robust.eps
    for e in p.robust.adaptive_eps:  # every adaptive ε and its half, for Tramèr's check
        assert any(abs(g - e) <= 1e-3 * e for g in grid) and any(abs(g - e / 2) <= 1e-3 * e for g in grid)
    assert all(b > a * (1 + 1e-3) for a, b in itertools.pairwise(grid))  # no budget twice (8/255 halves to 4/255)
    assert eps in grid and p.robust.images == max(a.images for a in p.adaptive.attacks.values())


def test_a_like_model_follows_the_other_after_the_overrides_but_for_its_own_settings():
    cfg = resolve_config("robust-demo", ["models.ce.train.batch_size=32", "models.ce.train.arch=\"resnet14\""])
    ce, at = cfg["models"]["ce"]["train"], cfg["models"]["pgd_at"]["train"]
    assert (at["batch_size"], at["arch"], at["objective"], at["dataset"]) == (32, "resnet14", "ce", "mnist5k")
    assert at["adversarial"] == {"eps": 0.3, "steps": 7} and ce["adversarial"] is None
    assert (ce["steps"], at["steps"], at["lr_boundaries"]) == (800, 600, [400, 520])  # its own table wins
    cfg = resolve_config("robust-demo", ["models.pgd_at.train.steps=50", "models.ce.train.seed=3"])
    ce, at = cfg["models"]["ce"]["train"], cfg["models"]["pgd_at"]["train"]
    assert (ce["steps"], at["steps"], at["seed"], cfg["models"]["trades"]["train"]["seed"]) == (800, 50, 3, 3)
    p = plan(cfg)  # the hash names the training it does
    from rcedetect.reproduce.layout import Layout

    lay = Layout(p, "o", lambda: 1000)
    assert lay.model_hash("pgd_at") != lay.model_hash("ce") != lay.model_hash("trades")


def test_presets_without_robust_models_are_unchanged():
    for preset in ("demo", "tiny"):
        cfg = resolve_config(preset)
        assert "robust" not in cfg and plan(cfg).robust is None and plan(cfg).robust_evaluated == []


# ----------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("setting, word", [
    ("models.pgd_at.role=\"boss\"", "role must be"),
    ("models.ce.role=\"robust\"", "needs adversarial training"),
    ("robust.attacks.pgd_ce.attack=\"cw\"", "takes no ε"),
    ("robust.eps=[2.0]", "(0, 1]"),
    ("robust.images=-1", "robust.images"),
    ("robust.attacks.apgd_ce.settings.on=\"defended\"", "classifier alone"),
    ("robust.attacks.pgd_ce.settings.norm=\"l2\"", "L∞"),
    ("robust.attacks.pgd_ce.settings.eps=0.1", "drop eps"),
    ("robust.attacks.pgd_ce.settings.stepz=3", "stepz"),
    ("models.pgd_at.like=\"nobody\"", "like must name"),
    ("models.pgd_at.like=\"trades\"", "like must name"),
])
def test_bad_robust_setting_is_one_line_and_exit_2(setting, word, tmp_path, capsys):
    out = tmp_path / "o"
    assert main(["reproduce", "--preset", "robust-demo", "--out", str(out), "--quiet", "--set",
                 "experiment.threads=1", "--set", setting]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("rce reproduce: error:") and word in err, err
    assert not (out / "results.json").exists() and not (out / "models").exists()


@pytest.mark.parametrize("model, key, value, word", [
    ("ce", "detect", True, "only a model with role"),
    ("ce", "detect", False, "only a model with role"),
    ("pgd_at", "detect", "yes", "true or false"),
    ("trades", "detekt", True, "unknown models.trades setting"),
])
def test_bad_detect_setting_is_refused(model, key, value, word):
    cfg = resolve_config("robust-demo")
    cfg["models"][model][key] = value
    with pytest.raises(ConfigError, match=word):
        plan(cfg)


def test_detect_on_a_main_model_in_a_preset_file_is_one_line_and_exit_2(tmp_path, capsys):
    preset = tmp_path / "p.toml"
    preset.write_text(SMALL.replace('[models.ce]\npreset = "cpu-mnist5k-ce"', '[models.ce]\npreset = "cpu-mnist5k-ce"\n'
                                    'detect = false'))
    out = tmp_path / "o"
    assert main(["reproduce", "--preset", str(preset), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "models.ce.detect" in err and not out.exists(), err


def test_a_robust_model_needs_a_robust_section():
    cfg = resolve_config("robust-demo")
    del cfg["robust"]
    with pytest.raises(ConfigError, match=r"need a \[robust\] section"):
        plan(cfg)


# ----------------------------------------------------------------------------------------------- the pipeline
SMALL = """
[experiment]
name = "robust-small"
train_feature_images = 300
tsne_images = 0
figure3_images = 4
table2_eps = 0.3
calibration_images = 100
threads = 1

[models.ce]
preset = "cpu-mnist5k-ce"
[models.ce.train]
dataset = "synthetic"
steps = 30
batch_size = 32
lr_boundaries = [20]
lr_values = [0.05, 0.005]
eval_every = 30
checkpoint_every = 30

[models.at]
preset = "cpu-mnist5k-ce"
role = "robust"
[models.at.train]
dataset = "synthetic"
steps = 30
batch_size = 32
lr_boundaries = [20]
lr_values = [0.05, 0.005]
eval_every = 30
checkpoint_every = 30
adversarial = { eps = 0.1, steps = 2 }

[models.rce_at]
like = "at"
role = "robust"
detect = true
[models.rce_at.train]
objective = "rce"

[detector]
per_class = 50
attack_per_class = 10
baselines = []

[adaptive]
metrics = ["kd", "confidence"]
images = 8
batch = 8
bootstrap = 50
sanity = false

[adaptive.attacks.pgd_detector]
eps = [0.1, 0.2]
settings = { steps = 3, lambdas = [0.0, 10.0] }

[robust]
[robust.attacks.pgd_ce]
attack = "pgd"
settings = { steps = 3 }
"""


class Killed(Exception):
    pass


def test_pipeline_with_a_robust_model_resumes_and_reports(tmp_path):
    from rcedetect.reproduce import reproduce

    preset = tmp_path / "robust-small.toml"
    preset.write_text(SMALL)
    out = tmp_path / "run"

    def kill(event):
        if event == "robust:at:0.1:pgd_ce":
            raise Killed

    with pytest.raises(Killed):
        reproduce(str(preset), out, progress=False, hook=kill, echo=lambda line: None)
    lines: list[str] = []
    results = reproduce(str(preset), out, progress=False, echo=lines.append)
    assert not any(line.split(": ")[0].endswith(("features at", "detector at")) for line in lines)
    assert any(line.split(": ")[0].endswith("detector rce_at") for line in lines)
    rb = results["robust"]
    assert rb["eps"] == [0.05, 0.1, 0.2] and rb["adaptive_eps"] == [0.1, 0.2]
    assert {(r["model"], r["eps"]) for r in rb["classifiers"]} == {(m, e) for m in ("ce", "at", "rce_at")
                                                                   for e in rb["eps"]}
    assert {(r["model"], r["metric"], r["eps"]) for r in rb["detectors"]} == {
        (d, m, e) for d in ("ce", "rce_at") for m in ("kd", "confidence") for e in rb["eps"]}
    assert all(r["n_images"] == 8 for r in rb["detectors"])
    assert {r["role"] for r in rb["detectors"] if r["model"] == "rce_at"} == {"robust"}
    assert "at" not in results["detectors"] and results["models"]["at"]["training"]["kind"] == "pgd-at"
    assert "rce_at" in results["detectors"] and results["models"]["rce_at"]["objective"] == "rce"
    assert {r["model"] for r in results["adaptive"]["records"]} == {"ce", "rce_at"}
    for rows in (rb["classifiers"], rb["detectors"]):  # robust accuracy never grows with ε
        for m in {(r["model"], r.get("metric")) for r in rows}:
            k = [r["n_robust"] for r in rows if (r["model"], r.get("metric")) == m]
            assert k == sorted(k, reverse=True)
    # the killed stage reused its finished steps; a third invocation has nothing left to do
    assert len(list((out / "robust").glob("at-*/step-*.json"))) == len(rb["eps"])
    again: list[str] = []
    reproduce(str(preset), out, progress=False, echo=again.append)
    assert all(line.endswith(": cached") for line in again)
    md, _ = report.render(out)
    text = md.read_text()
    assert "Detection or robust training?" in text
    adaptive_rows = [line for line in text.splitlines() if line.startswith("| RCE PGD-AT | K-density |")]
    assert len(adaptive_rows) == len(rb["adaptive_eps"]), text  # its own rows in the adaptive table
    assert "| ResNet-8 RCE, PGD-AT ε 0.1 (2 steps) | K-density |" in text  # and in the side-by-side table
