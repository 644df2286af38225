"""The CIFAR-shaped path of `rce reproduce`: a tiny run on synthetic 3-channel images given as a --data-file goes
through every stage (augmented, channels_last + bf16 training, every attack, the adaptive evaluation, transfer to
the targets) with the paper's CIFAR-10 column; the cifar10-cpu preset's ε grids and threat models come from the
preset and are checked before any work; a bad .npz is one line and exit 2 before training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rcedetect.cli import main
from rcedetect.core.errors import ConfigError
from rcedetect.data import make_synthetic
from rcedetect.reproduce import plan, preset_config, reproduce


def _write_npz(path: Path, channels: int = 3, size: int = 16, classes: int = 4, **replace) -> Path:
    ds = make_synthetic(n_train=600, n_test=200, size=size, channels=channels, num_classes=classes, seed=3)
    arrays = {"x_train": ds.x_train.permute(0, 2, 3, 1).numpy(), "y_train": ds.y_train.numpy().astype(np.uint8),
              "x_test": ds.x_test.permute(0, 2, 3, 1).numpy(), "y_test": ds.y_test.numpy().astype(np.uint8)}
    arrays.update(replace)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


#: the tiny preset as a CIFAR-shaped run: 3-channel data, the paper column of CIFAR-10, the CPU fast paths
RGB_OVERRIDES = ["experiment.threads=2", "experiment.channels=3", "experiment.classes=4",
                 'experiment.paper_dataset="cifar10"',
                 *(f"models.{m}.train.{k}" for m in ("ce", "rce", "target_ce", "target_rce")
                   for k in ("augment=true", "channels_last=true", "amp=true"))]


@pytest.fixture(scope="module")
def rgb_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rgb")
    data = _write_npz(tmp / "rgb.npz")
    lines: list[str] = []
    results = reproduce("tiny", tmp / "out", RGB_OVERRIDES, data_file=str(data), progress=False, echo=lines.append)
    return tmp / "out", results, lines


def test_a_cifar_shaped_run_goes_through_every_stage(rgb_run):
    out, results, _ = rgb_run
    assert results["dataset"] == "npz" and results["paper_dataset"] == "cifar10"
    for m in results["models"].values():
        assert m["test_accuracy"] is not None and m["n_test"] == 200
    cfg = results["config"]["models"]["ce"]["train"]
    assert cfg["augment"] and cfg["channels_last"] and cfg["amp"] and cfg["dataset"] == "npz"
    attacked = {(r["model"], r["attack"]) for r in results["attacks"]}
    assert {(m, a) for m in ("ce", "rce") for a in ("fgsm", "bim", "ilcm", "jsma", "cw", "cw_hc", "cw_wb", "noise")
            } <= attacked
    assert all(r["n_images"] > 0 for r in results["attacks"])
    # Table 4: every substitute against every target, on the 3-channel images
    pairs = {(t["substitute"], t["target"]) for t in results["transfer"]}
    assert pairs == {(s, t) for s in ("ce", "rce") for t in ("target_ce", "target_rce")}
    assert all(t["n_images"] == 8 for t in results["transfer"])
    assert results["adaptive"]["records"] and set(results["adaptive"]["sanity"]) == {"ce", "rce"}
    wb = [r["wb"] for r in results["attacks"] if r["attack"] == "cw_wb"]
    assert all(len(w["distortion_interval"]) == 2 for w in wb)
    # the images the attacks returned are 3-channel: the model saw colour
    assert results["figure3"]["ce"]["clean"] and len(results["figure3"]["ce"]["clean"][0]) == 3
    # the report prints the paper's CIFAR-10 column and checks the paper's claims
    md = (out / "report.md").read_text() if (out / "report.md").exists() else None
    if md is None:
        from rcedetect.report import render

        md = render(out, results)[0].read_text()
    assert "the paper column is cifar10" in md
    assert "The paper's claims at this scale" in md and "Fewer than 15 % of C&W-wb examples transfer" in md


def test_the_cifar10_cpu_preset_states_its_grid_and_threat_models():
    cfg = preset_config("cifar10-cpu", data_file="cifar.npz")
    p = plan(cfg)
    assert p.experiment.channels == 3 and p.experiment.classes == 10 and p.experiment.paper_dataset == "cifar10"
    assert all(m.train.dataset == "npz" and m.train.data_file == "cifar.npz" for m in p.models.values())
    # Table 4: shallower substitutes (main) against deeper targets of each objective
    assert {p.models[n].train.arch for n in p.mains} == {"resnet8"}
    assert {(p.models[n].train.arch, p.models[n].train.objective) for n in p.targets} == {
        ("resnet20", "ce"), ("resnet20", "rce")}
    # the paper's ε grid (0.02…0.20 on both datasets) for the oblivious attacks; all eight attacks
    assert set(p.attacks) == {"fgsm", "bim", "ilcm", "jsma", "cw", "cw_hc", "cw_wb", "noise"}
    assert p.attacks["fgsm"].eps == tuple(round(0.02 * k, 2) for k in range(1, 11))
    # the adaptive evaluation at CIFAR budgets: L∞ 2/255, 4/255, 8/255 and L2 0.5, against every detector
    linf = p.adaptive.attacks["pgd_detector"]
    assert [round(e * 255) for e in linf.eps] == [2, 4, 8]
    l2 = p.adaptive.attacks["pgd_detector_l2"]
    assert l2.eps == (0.5,) and l2.settings["norm"] == "l2" and l2.registered == "pgd_detector"
    assert set(p.adaptive.metrics) == {"kd", "non_me", "confidence", "kd_bu", "lid", "mahalanobis"}
    for train in (m.train for m in p.models.values()):
        assert train.augment and train.channels_last and train.amp
    with pytest.raises(ConfigError, match="eps"):  # an L∞ budget above 1 is refused at plan time
        plan(preset_config("cifar10-cpu", ["adaptive.attacks.pgd_detector.eps=[8]"], data_file="cifar.npz"))
    with pytest.raises(ConfigError, match="paper_dataset"):
        plan(preset_config("cifar10-cpu", ['experiment.paper_dataset="imagenet"'], data_file="cifar.npz"))


BAD_FILES = {
    "wrong keys": ({"x_train": None}, "x_train"),
    "float images": ({"x_train": np.zeros((600, 16, 16, 3), np.float32)}, "uint8"),
    "2-D images": ({"x_test": np.zeros((200, 768), np.uint8)}, "shape"),
    "negative labels": ({"y_train": -np.ones(600, np.int64)}, "negative"),
    "labels beyond the classes": ({"y_test": np.full(200, 11, np.int64)}, "classes"),
    "labels of another length": ({"y_test": np.zeros(7, np.uint8)}, "labels"),
    "a 1-channel file": ({"channels": 1}, "channel"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_a_bad_data_file_is_one_line_before_training(case, tmp_path, capsys):
    change, word = BAD_FILES[case]
    kw = {k: v for k, v in change.items() if k == "channels"}
    arrays = {k: v for k, v in change.items() if k != "channels"}
    data = _write_npz(tmp_path / "d.npz", classes=10, **kw, **arrays)
    out = tmp_path / "o"
    code = main(["reproduce", "--preset", "cifar10-cpu", "--data-file", str(data), "--out", str(out), "--quiet",
                 "--set", "experiment.threads=1"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("rce ") and word in err, err
    assert not (out / "models").exists() and not (out / "results.json").exists()
