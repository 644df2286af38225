"""Your own model and data: a torchvision ResNet-18 on a folder of PNGs, trained with RCE, defended post hoc,
attacked and reported, all through the command line; bad models and folders are one line and exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rcedetect import data
from rcedetect.cli import main

SIZE, CLASSES, PER_CLASS = 16, 3, 16
SMALL = ["--set", "steps=20", "--set", "batch_size=16", "--set", "eval_every=10", "--set", "checkpoint_every=20",
         "--set", "lr_boundaries=[15]", "--set", "lr_values=[0.05, 0.005]", "--device", "cpu", "--quiet"]


def make_folder(root: Path, classes: int = CLASSES, per_class: int = PER_CLASS, size: int = SIZE,
                mode: str = "RGB") -> Path:
    """PNGs of a fixed random pattern per class plus noise, in ImageFolder layout (root/<class>/<i>.png)."""
    g = np.random.default_rng(0)
    shape = (size, size, 3) if mode == "RGB" else (size, size)
    for c in range(classes):
        proto = g.uniform(0, 255, size=shape)
        folder = root / f"class_{c:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = np.clip(proto + g.normal(0, 30, size=shape), 0, 255).astype(np.uint8)
            Image.fromarray(img, mode).save(folder / f"{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return make_folder(tmp_path_factory.mktemp("pngs") / "shapes")


@pytest.fixture(scope="module")
def rce_run(tmp_path_factory, folder) -> Path:
    run = tmp_path_factory.mktemp("own") / "rce"
    argv = ["train", "--objective", "rce", "--model", "torchvision:resnet18", "--dataset", f"imagefolder:{folder}",
            "--out", str(run), *SMALL]
    assert main(argv) == 0
    return run


def test_image_folder_split_shape_and_classes(folder, tmp_path):
    ds = data.load(f"imagefolder:{folder}")
    assert ds.image_shape == (3, SIZE, SIZE) and ds.num_classes == CLASSES and ds.name == "shapes"
    assert len(ds.x_test) == CLASSES * round(0.2 * PER_CLASS) and len(ds.x_train) + len(ds.x_test) == 48
    assert ds.classes == ("class_000", "class_001", "class_002")
    grey = make_folder(tmp_path / "grey", mode="L")
    for part in ("train", "test"):  # an explicit split: train/ and test/
        make_folder(tmp_path / "split" / part, per_class=4 if part == "test" else 8, mode="L")
    assert data.load(f"imagefolder:{grey}").image_shape == (1, SIZE, SIZE)
    split = data.load(f"imagefolder:{tmp_path / 'split'}")
    assert len(split.x_train) == 24 and len(split.x_test) == 12 and split.channels == 1


def test_train_detect_attack_evaluate(rce_run, capsys):
    meta = json.loads((rce_run / "checkpoint.json").read_text())
    assert meta["arch"] == "torchvision:resnet18" and meta["objective"] == "rce" and meta["step"] == 20
    assert meta["model"]["head"] == "fc" and meta["input_shape"] == [3, SIZE, SIZE]
    assert meta["config"]["augment"] is True  # colour 16x16: the paper's CIFAR augmentation
    assert main(["fit-detector", str(rce_run), "--calibration-size", "4", "--per-class", "all", "--quiet"]) == 0
    assert "kd detector" in capsys.readouterr().out and (rce_run / "detector-kd" / "detector.json").is_file()
    for attack in (["--attack", "fgsm", "--eps", "0.2"],
                   ["--attack", "cw", "--set", "binary_search_steps=1", "--set", "max_iterations=10"]):
        assert main(["attack", str(rce_run), *attack, "--first", "--n", "5", "--device", "cpu", "--quiet"]) == 0
    dirs = sorted(str(p) for p in (rce_run / "attacks").iterdir())
    assert main(["fit-detector", str(rce_run), "--calibration-size", "4", "--per-class", "all", "--quiet",
                 "--evaluate", *dirs, "--bootstrap", "50"]) == 0
    out = capsys.readouterr().out
    assert "kd: AUC" in out and "TPR at 5% FPR" in out
    record = json.loads((rce_run / "detector-evaluation.json").read_text())
    assert [e["attack"] for e in record["evaluations"]] == ["cw", "fgsm"]
    assert set(record["evaluations"][0]["detectors"]) == {"kd", "non_me", "confidence"}


def test_posthoc_import_of_local_weights(rce_run, folder, tmp_path, capsys):
    from rcedetect.models import checkpoint

    weights = tmp_path / "mine.safetensors"
    from safetensors.torch import save_file

    save_file(checkpoint.load(rce_run).classifier.net.model.state_dict(), weights)
    run = tmp_path / "imported"
    assert main(["fit-detector", str(run), "--model", "torchvision:resnet18", "--weights", str(weights),
                 "--dataset", f"imagefolder:{folder}", "--metric", "kd", "--calibration-size", "4",
                 "--per-class", "all", "--device", "cpu", "--quiet"]) == 0
    meta = json.loads((run / "checkpoint.json").read_text())
    assert meta["step"] == 0 and meta["metrics"]["imported"] and meta["objective"] == "ce"
    assert "kd detector" in capsys.readouterr().out


def test_reproduce_reports_on_your_own_model(folder, tmp_path):
    preset = tmp_path / "mine.toml"
    preset.write_text(f"""
[experiment]
name = "mine"
train_feature_images = 36
tsne_images = 0
figure3_images = 2
table2_eps = 0.2
calibration_images = 4
threads = 1
[models.rce]
preset = "cpu-mnist5k-rce"
[models.rce.train]
arch = "torchvision:resnet18"
dataset = "imagefolder:{folder}"
steps = 20
batch_size = 16
lr_boundaries = [15]
lr_values = [0.05, 0.005]
eval_every = 20
checkpoint_every = 20
[detector]
per_class = "all"
attack_per_class = 4
baselines = []
[attacks.fgsm]
images = 6
batch = 6
eps = [0.2]
[attacks.cw]
images = 4
batch = 4
settings = {{ binary_search_steps = 1, max_iterations = 10 }}
""")
    assert main(["reproduce", "--preset", str(preset), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["models"]["rce"]["arch"] == "torchvision:resnet18"
    assert {r["attack"] for r in results["attacks"]} == {"fgsm", "cw"}
    assert "torchvision:resnet18" in (tmp_path / "out" / "report.html").read_text()


@pytest.mark.parametrize("case,needle", [
    ("no-linear-head", "no linear layer"),
    ("no-such-head", "has no module 'nope'"),
    ("one-class", "at least 2"),
    ("mixed-sizes", "mixes image sizes"),
    ("no-such-model", "torchvision has no classification model"),
])
def test_bad_models_and_folders_are_one_line(case, needle, folder, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    dataset, extra = f"imagefolder:{folder}", []
    model = {"no-linear-head": "torchvision:squeezenet1_0", "no-such-model": "torchvision:resnet19"}.get(
        case, "torchvision:resnet18")
    if case == "no-such-head":
        extra = ["--set", 'head="nope"']
    if case == "one-class":
        dataset = f"imagefolder:{make_folder(tmp_path / 'one', classes=1, per_class=3)}"
    if case == "mixed-sizes":
        root = make_folder(tmp_path / "mixed", classes=2, per_class=2)
        Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(root / "class_001" / "big.png")
        dataset = f"imagefolder:{root}"
    assert main(["train", "--model", model, "--dataset", dataset, "--out", "X", *extra, *SMALL]) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1
    assert not (tmp_path / "X" / "checkpoint.json").exists()
