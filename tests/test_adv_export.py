"""Portable adversarial examples: ``rce attack --export``, :mod:`rcedetect.adv_export`, and ``rce detect`` on the
exported file and on the attack folder."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from torch import nn

from rcedetect import InputError, wrap
from rcedetect.attacks import AttackResult
from rcedetect.cli import main
from rcedetect.core.io import save_tensors
from rcedetect.evaluation import adv_export, attack_store
from rcedetect.models import checkpoint

#: the decision threshold of the constructed model: sum of the 4 pixels against 4 · 100.15 / 255
EDGE = 100.15 / 255


def threshold_model():
    """A 1x2x2 two-class model: class 1 exactly where the mean pixel exceeds EDGE (a plain linear head)."""
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    with torch.no_grad():
        net[1].weight.copy_(torch.tensor([[0.0] * 4, [1.0] * 4]))
        net[1].bias.copy_(torch.tensor([0.0, -4 * EDGE]))
    return wrap(net.eval(), head="1", input_shape=(1, 2, 2)).eval()


def images(*levels: float) -> torch.Tensor:
    return torch.tensor(levels, dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 1, 2, 2).contiguous()


def test_success_8bit_on_a_constructed_case(tmp_path):
    clf = threshold_model()
    # 100.3/255 is above the edge, but rounds to 100/255, below it: a success that a PNG would undo
    x_adv = images(100.3 / 255, 110 / 255, 100.3 / 255, 90 / 255)
    y = torch.zeros(4, dtype=torch.long)
    success = torch.tensor([True, True, False, True])
    assert clf.predict(x_adv).tolist() == [1, 1, 1, 0]
    ok8, pred8 = adv_export.success_8bit(clf, x_adv, y, success)
    assert pred8.tolist() == [0, 1, 0, 0] and ok8.tolist() == [False, True, False, False]

    res = AttackResult(x_adv=x_adv, success=success, x=images(*[90 / 255] * 4))
    path = adv_export.export_attack(res, tmp_path / "c.npz", clf, y=y, attack="fgsm", settings={"eps": 0.1})
    with np.load(path, allow_pickle=False) as f:  # plain arrays: NumPy reads them without rcedetect or pickle
        assert f["x_adv"].dtype == np.float32 and f["x_adv"].shape == (4, 1, 2, 2)
        assert f["y"].dtype == np.int64 and f["indices"].tolist() == [-1] * 4
        assert f["success"].dtype == bool and f["success_8bit"].tolist() == [False, True, False, False]
        assert f["attack"].item() == "fgsm" and f["norm"].item() == "linf" and float(f["eps"]) == 0.1
        meta = json.loads(f["meta_json"].item())
        assert meta["format"] == "rcedetect-adversarial" and meta["settings"] == {"eps": 0.1}
    x2, y2, meta = adv_export.load_adversarial(path)
    assert torch.equal(x2, x_adv) and torch.equal(y2, y) and meta["indices"] is None
    assert meta["attack"] == "fgsm" and meta["eps"] == 0.1 and meta["norm"] == "linf" and meta["source"] == "npz"
    assert meta["success_8bit"].tolist() == [False, True, False, False] and torch.equal(meta["success"], success)
    with pytest.raises(InputError, match="y"):
        adv_export.export_attack(res, tmp_path / "d.npz", clf)


def test_norm_of_the_attacks():
    assert adv_export.norm_of("bim", {"eps": 0.1}) == "linf"
    assert adv_export.norm_of("pgd", {"eps": 1.0, "norm": "l2"}) == "l2"
    assert adv_export.norm_of("cw", {}) == ""


def test_reader_refuses_what_is_not_an_export(tmp_path):
    np.savez(tmp_path / "x.npz", x=np.zeros((1, 1, 2, 2), np.float32))
    with pytest.raises(InputError, match="x_adv"):
        adv_export.load_adversarial(tmp_path / "x.npz")
    np.savez(tmp_path / "r.npz", x_adv=np.full((1, 1, 2, 2), 3.0, np.float32))
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        adv_export.load_adversarial(tmp_path / "r.npz")
    np.savez(tmp_path / "y.npz", x_adv=np.zeros((2, 1, 2, 2), np.float32), y=np.zeros(3, np.int64))
    with pytest.raises(InputError, match="y of"):
        adv_export.load_adversarial(tmp_path / "y.npz")
    with pytest.raises(InputError, match="not an rce attack folder"):
        adv_export.load_adversarial(tmp_path)
    with pytest.raises(InputError, match="does not exist"):
        adv_export.load_adversarial(tmp_path / "nothing.npz")


@pytest.fixture()
def run_dir(trained_runs, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(trained_runs["ce"], dst)
    shutil.rmtree(dst / "attacks", ignore_errors=True)  # other tests' attacks on the shared run
    return dst


def detect(run_dir, path, capsys, as_json: bool = True):
    """``rce detect`` with K-density on one input: its parsed JSON, or its text output."""
    capsys.readouterr()
    assert main(["detect", str(run_dir), "--metric", "kd", "--per-class", "100", "--quiet", "--input", str(path),
                 *(["--json"] if as_json else [])]) == 0
    out = capsys.readouterr().out
    return json.loads(out) if as_json else out


def answers(out: dict) -> list[tuple]:
    return [(r["index"], r["label"], not r["accepted"], r["score"]) for r in out["results"]]


def test_export_round_trips_through_detect(run_dir, tmp_path, capsys):
    npz = tmp_path / "fgsm.npz"
    argv = ["attack", str(run_dir), "--attack", "fgsm", "--eps", "0.2", "--n", "16", "--batch-size", "8",
            "--quiet", "--export", str(npz)]
    assert main(argv) == 0
    assert "exported 16 adversarial examples" in capsys.readouterr().out
    (folder,) = sorted((run_dir / "attacks").glob("fgsm-*"))
    res, _, stored = attack_store.load_parts(folder, 16, 8)
    clf = checkpoint.load(run_dir).classifier
    with np.load(npz, allow_pickle=False) as f:
        assert torch.equal(torch.from_numpy(f["x_adv"]), res.x_adv)
        assert torch.equal(torch.from_numpy(f["y"]), stored["y"])
        assert torch.equal(torch.from_numpy(f["indices"]), stored["indices"])
        assert torch.equal(torch.from_numpy(f["success"]), res.success)
        rounded = clf.predict(torch.round(res.x_adv * 255) / 255)
        assert torch.equal(torch.from_numpy(f["success_8bit"]), res.success & (rounded != stored["y"]))
        assert f["attack"].item() == "fgsm" and float(f["eps"]) == 0.2 and f["norm"].item() == "linf"

    # the folder reads back as the file does
    x_dir, y_dir, meta_dir = adv_export.load_adversarial(folder)
    x_npz, y_npz, meta_npz = adv_export.load_adversarial(npz)
    assert torch.equal(x_dir, x_npz) and torch.equal(y_dir, y_npz)
    assert torch.equal(meta_dir["indices"], meta_npz["indices"]) and meta_dir["success_8bit"] is None
    assert meta_dir["attack"] == meta_npz["attack"] == "fgsm" and meta_dir["eps"] == meta_npz["eps"] == 0.2

    # rce detect: the exported file, the same x_adv as a plain tensor file, and the attack folder agree
    save_tensors(tmp_path / "x.safetensors", {"x": res.x_adv})
    on_npz = detect(run_dir, npz, capsys)
    on_tensor = detect(run_dir, tmp_path / "x.safetensors", capsys)
    on_folder = detect(run_dir, folder, capsys)
    assert len(on_npz["results"]) == 16
    assert answers(on_npz) == answers(on_tensor) == answers(on_folder)
    assert [r["y"] for r in on_npz["results"]] == stored["y"].tolist()
    assert [r["test_index"] for r in on_folder["results"]] == stored["indices"].tolist()
    assert "y" not in on_tensor["results"][0] and "summaries" not in on_tensor
    (s,) = on_npz["summaries"]
    assert s["n"] == 16 and s["input"] == str(npz)
    assert {k: v for k, v in s.items() if k != "input"} == {k: v for k, v in on_folder["summaries"][0].items()
                                                             if k != "input"}
    not_sure = sum(not r["accepted"] for r in on_npz["results"])
    right = sum(r["accepted"] and r["label"] == r["y"] for r in on_npz["results"])
    assert s["not_sure_rate"] == not_sure / 16 and s["accuracy_with_rejection"] == (right + not_sure) / 16
    text = detect(run_dir, npz, capsys, as_json=False).strip().splitlines()
    assert len(text) == 1 + 16 + 1 and text[1].startswith(f"{npz}[0]: ") and "accuracy with rejection" in text[-1]

    # a finished attack exports again without recomputing
    stamps = {p: p.stat().st_mtime_ns for p in folder.iterdir()}
    again = tmp_path / "sub" / "again.npz"
    assert main([*argv[:-1], str(again)]) == 0
    assert {p: p.stat().st_mtime_ns for p in folder.iterdir()} == stamps
    with np.load(npz) as a, np.load(again) as b:
        assert all(np.array_equal(a[k], b[k]) for k in adv_export.ARRAYS)
