"""``rce detect`` on the tiny trained run: .npz, PNG and .safetensors inputs, caching, bad input."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from rcedetect.cli import main
from rcedetect.core.io import save_tensors
from rcedetect.models import checkpoint


@pytest.fixture()
def run_dir(trained_runs, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(trained_runs["ce"], dst)
    return dst


@pytest.fixture()
def inputs(synthetic, tmp_path):
    x = synthetic.x_test[:5, 0].numpy()  # uint8 NHW
    np.savez(tmp_path / "batch.npz", x=x)
    Image.fromarray(x[0]).save(tmp_path / "first.png")
    return tmp_path / "batch.npz", tmp_path / "first.png"


def test_npz_and_png_inputs_json(run_dir, inputs, capsys, synthetic):
    npz, png = inputs
    assert main(["detect", str(run_dir), "--metric", "kd", "--input", str(npz), str(png), "--json", "--quiet",
                 "--per-class", "100"]) == 0
    out = json.loads(capsys.readouterr().out)
    res = out["results"]
    assert len(res) == 6 and out["metric"] == "kd" and out["fpr"] == 0.05
    assert out["sigma2"] == pytest.approx(1 / 0.26) and "last 100 images" in out["calibration"]
    assert out["sigma2_auto"] > 0  # the automatic choice, reported beside the paper's
    assert [r["index"] for r in res] == [0, 1, 2, 3, 4, None]
    assert res[5]["score"] == pytest.approx(res[0]["score"], abs=1e-5) and res[5]["label"] == res[0]["label"]
    clf = checkpoint.load(run_dir).classifier
    with torch.no_grad():
        pred = clf.predict(synthetic.test_images()[:5]).tolist()
    for r, p in zip(res, pred):
        assert r["label"] == (None if not r["accepted"] else p) and r["predicted"] == p
        assert (r["score"] > out["threshold"]) == (not r["accepted"])
    assert (run_dir / "detector-kd" / "detector.json").is_file()


def test_cached_detector_is_reused_and_text_output(run_dir, inputs, capsys, tmp_path, synthetic):
    _, png = inputs
    args = ["detect", str(run_dir), "--metric", "non_me", "--input", str(png), "--quiet"]
    assert main(args) == 0
    first = capsys.readouterr().out
    stamp = (run_dir / "detector-non_me" / "detector.json").stat().st_mtime_ns
    assert main(args) == 0
    assert capsys.readouterr().out == first
    assert (run_dir / "detector-non_me" / "detector.json").stat().st_mtime_ns == stamp
    lines = first.strip().splitlines()
    assert lines[0].startswith("non_me detector: threshold") and lines[1].startswith(f"{png}: ")
    assert "(score " in lines[1]
    # a float NCHW batch in .safetensors gives the same answer as the PNG
    save_tensors(tmp_path / "b.safetensors", {"x": synthetic.test_images()[:1]})
    assert main(["detect", str(run_dir), "--metric", "non_me", "--input", str(tmp_path / "b.safetensors"),
                 "--quiet"]) == 0
    assert capsys.readouterr().out.splitlines()[1].split(": ", 1)[1] == lines[1].split(": ", 1)[1]


@pytest.mark.parametrize("case", ["missing", "size", "no_x", "suffix", "range", "sigma2"])
def test_bad_input_is_one_line_and_exit_2(run_dir, tmp_path, capsys, case):
    if case == "missing":
        path = tmp_path / "nope.png"
    elif case == "size":
        path = tmp_path / "small.png"
        Image.fromarray(np.zeros((10, 10), np.uint8)).save(path)
    elif case == "no_x":
        path = tmp_path / "y.npz"
        np.savez(path, y=np.zeros(3))
    elif case == "suffix":
        path = tmp_path / "a.txt"
        path.write_text("hello")
    else:
        path = tmp_path / "r.npz"
        np.savez(path, x=np.full((1, 1, 12, 12), 3.0, np.float32))
    extra = []
    if case == "sigma2":
        path, extra = tmp_path / "nope.png", ["--sigma2", "wide"]
    code = main(["detect", str(run_dir), "--metric", "confidence", "--input", str(path), "--quiet", *extra])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("rce detect: error:") and len(err.strip().splitlines()) == 1
    assert case != "sigma2" or "--sigma2" in err


@pytest.mark.parametrize("metric", ["lid", "mahalanobis", "kd_bu"])
def test_the_baselines_work_like_kd(metric, run_dir, inputs, capsys):
    npz, _ = inputs
    args = ["detect", str(run_dir), "--metric", metric, "--input", str(npz), "--json", "--quiet",
            "--fit-images", "150", "--fit-eps", "0.3", "--per-class", "100"]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["metric"] == metric and len(out["results"]) == 5
    assert all((r["score"] > out["threshold"]) == (not r["accepted"]) for r in out["results"])
    saved = json.loads((run_dir / f"detector-{metric}" / "detector.json").read_text())
    assert saved["state"]["fit_split"]["attack"] == "fgsm" and saved["state"]["fit_split"]["n_images"] == 150
    assert main([*args[:-6], "--fit-on", "cw_wb"]) == 2  # an attack that needs a detector cannot fit one
    assert "needs a detector" in capsys.readouterr().err
