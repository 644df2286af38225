"""The report renders from a results dict alone: tables carry the paper's numbers, every figure is a valid PNG."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from rcedetect import report
from rcedetect.cli import main
from rcedetect.core.io import write_json
from rcedetect.evaluation import paper_ref

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _detection(auc: float) -> dict:
    rec = {"auc_strict": auc, "auc_half": min(1.0, auc + 0.01), "tpr_at_5fpr": auc / 2, "n_pairs": 40}
    return {"confidence": dict(rec), "non_me": dict(rec), "kd": dict(rec)}


def fake_results() -> dict:
    """A hand-built results dict in the schema the pipeline writes (two main models, two targets)."""
    g = np.random.default_rng(0)
    models = {
        "ce": {"role": "main", "arch": "resnet32", "objective": "ce", "steps": 600, "n_test": 1000,
               "test_error_percent": 1.5, "test_accuracy": 0.985, "train_seconds": 70.0, "dataset": "mnist5k"},
        "rce": {"role": "main", "arch": "resnet32", "objective": "rce", "steps": 600, "n_test": 1000,
                "test_error_percent": 1.2, "test_accuracy": 0.988, "train_seconds": 71.0, "dataset": "mnist5k"},
        "target_ce": {"role": "target", "arch": "resnet56", "objective": "ce", "steps": 600, "n_test": 1000,
                      "test_error_percent": 1.4, "dataset": "mnist5k"},
    }
    attacks = []
    for model, obj in (("ce", "ce"), ("rce", "rce")):
        for attack in ("fgsm", "bim", "ilcm", "jsma"):
            for eps in (0.04, 0.16):
                attacks.append({"model": model, "objective": obj, "attack": attack, "eps": eps, "n_images": 50,
                                "n_pairs": 40, "accuracy": 0.5 - eps, "success_rate": 0.5,
                                "seconds_per_example": 0.01, "detection": _detection(0.9 if obj == "rce" else 0.7),
                                "log_kd_adv": g.normal(-3, 1, 40).tolist()})
        for attack in ("cw", "cw_hc"):
            attacks.append({"model": model, "objective": obj, "attack": attack, "eps": None, "n_images": 10,
                            "n_pairs": 9, "accuracy": 0.0, "seconds_per_example": 2.0,
                            "detection": _detection(0.95), "cw": {"mean_min_distortion": 5.0, "n_efficient": 9}})
        attacks.append({"model": model, "objective": obj, "attack": "cw_wb", "eps": None, "n_images": 10,
                        "n_pairs": 3, "seconds_per_example": 5.0, "detection": _detection(0.6),
                        "wb": {"ratio_f2_positive": 0.4, "mean_distortion": 20.0, "n_reached": 9, "n_efficient": 5}})
    img = g.integers(0, 256, size=(4, 1, 28, 28)).tolist()
    return {
        "format": "rcedetect-results", "format_version": 1, "preset": "hand-built", "dataset": "mnist5k",
        "config_hash": "abc", "seed": 0, "device": "cpu", "versions": {"rcedetect": "0", "torch": "x"},
        "table2_eps": 0.16, "cuts": ["steps 600 instead of 20,000"], "timings": {"total_seconds": 1.0},
        "models": models, "attacks": attacks,
        "transfer": [{"substitute": "ce", "target": "target_ce", "substitute_arch": "resnet32",
                      "substitute_objective": "ce", "target_arch": "resnet56", "target_objective": "ce",
                      "transfer_rate": 0.3, "n_pairs": 3, "detection": {"kd": {"auc_strict": 0.97}}}],
        "tsne": {m: {"n": 30, "xy": g.normal(size=(30, 2)).tolist(), "labels": g.integers(0, 10, 30).tolist()}
                 for m in ("ce", "rce")},
        "figure3": {m: {"clean": img, "adv": img, "labels": [1, 2, 3, 4], "targets": [5, 6, 7, 8],
                        "l2": [1.0, 2.0, 3.0, 4.0]} for m in ("ce", "rce")},
        "noise": {m: {"eps": 0.04, "n": 100, "clean_error_percent": 1.0, "noisy_error_percent": 1.5,
                      "log_kd_noisy": g.normal(-2, 1, 100).tolist()} for m in ("ce", "rce")},
        "log_kd_normal": {m: g.normal(-1, 1, 100).tolist() for m in ("ce", "rce")},
    }


def check_html_figures(out_dir: Path) -> list[str]:
    """Every <img src> of report.html exists and is a PNG that decodes; returns the sources."""
    import matplotlib.image

    page = (out_dir / "report.html").read_text()
    sources = re.findall(r'<img [^>]*src="([^"]+)"', page)
    for src in sources:
        path = out_dir / src
        assert path.is_file(), f"report.html references missing {src}"
        assert path.read_bytes()[:8] == PNG_MAGIC, f"{src} is not a PNG"
        assert matplotlib.image.imread(path).ndim == 3
    return sources


def test_cell_shows_ours_paper_and_difference():
    assert report.cell(97.25, 98.8) == "97.2 (98.8, -1.5)" or report.cell(97.25, 98.8) == "97.3 (98.8, -1.5)"
    assert report.cell(1.0, None) == "1.0"
    assert report.cell(None, 5.0) == "— (5.0)"


def test_paper_lookups_match_the_published_tables():
    assert paper_ref.auc("fgsm", "ce", "kd", "mnist") == 98.8
    assert paper_ref.auc("cw_hc", "rce", "confidence", "cifar10") == 0.2
    assert paper_ref.test_error("resnet56", "rce", "cifar10") == 6.6
    assert paper_ref.cw_wb("rce", "mnist") == (0.77, 31.59)
    assert paper_ref.transfer_auc("ce", "rce", "cifar10") == 90.8
    assert paper_ref.transfer_auc("ce", "rce", "mnist") is None
    assert paper_ref.seconds_per_example("cw_wb", "rce") == 1300
    assert paper_ref.column("mnist5k") == "mnist" and paper_ref.column("synthetic") is None
    assert paper_ref.test_error_nearest("resnet56", "ce", "mnist", "target") == (0.36, "resnet56")
    assert paper_ref.test_error_nearest("resnet8", "rce", "mnist") == (0.29, "resnet32")
    assert paper_ref.test_error_nearest("resnet8", "rce", None) == (None, None)


def test_rce_report_renders_every_table_and_figure_from_results_json(tmp_path, capsys):
    write_json(tmp_path / "results.json", fake_results())
    assert main(["report", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "report.html" in out and "FGSM" in out
    sources = check_html_figures(tmp_path)
    assert len(sources) == 7  # auc-vs-eps, 2a, 2b, 3, t-SNE, noise, KD histograms
    text = (tmp_path / "report.md").read_text()
    for heading in ("Table 1", "Table 2", "Table 3", "Table 4", "Table 5", "t-SNE", "Appendix B.3"):
        assert heading in text
    # ours beside the paper: Table 2 FGSM CE K-density = 70.0 vs the paper's 98.8 on MNIST
    assert "70.0 (98.8, -28.8)" in text
    assert "Where ours disagrees" in text and "steps 600 instead of 20,000" in text


def test_report_of_a_folder_without_results_fails_cleanly(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "results" in capsys.readouterr().err


def test_partial_results_render_without_missing_figures(tmp_path):
    results = fake_results()
    for key in ("tsne", "figure3", "noise", "log_kd_normal", "transfer"):
        results.pop(key)
    results["attacks"] = [r for r in results["attacks"] if r["attack"] == "fgsm"]
    report.render(tmp_path, results)
    sources = check_html_figures(tmp_path)
    assert sources and all("tsne" not in s for s in sources)


@pytest.mark.parametrize("bad", [{"format": "other"}, [1, 2]])
def test_foreign_results_file_is_refused(tmp_path, bad):
    from rcedetect.core.errors import CheckpointError

    write_json(tmp_path / "results.json", bad)
    with pytest.raises(CheckpointError):
        report.load(tmp_path)


def test_cells_with_too_few_pairs_are_shown_but_never_compared():
    """A 4-pair cell far from the paper is marked "too few pairs (4)" and is neither a disagreement nor a
    reversal of the paper's claims; the same cell with 40 pairs is both."""
    from rcedetect.report.table2 import disagreements, table2

    results = fake_results()
    rce_jsma = next(r for r in results["attacks"] if r["model"] == "rce" and r["attack"] == "jsma"
                    and r["eps"] == results["table2_eps"])
    ce_jsma = next(r for r in results["attacks"] if r["model"] == "ce" and r["attack"] == "jsma"
                   and r["eps"] == results["table2_eps"])
    for m in ("confidence", "non_me", "kd"):
        rce_jsma["detection"][m]["auc_strict"] = 0.30  # far below the paper and below CE's 0.7
    col = paper_ref.column(results["dataset"])
    listed = " ".join(disagreements(results, col)[-1][1])
    assert "JSMA RCE K-density" in listed and "under JSMA is lower for RCE" in listed
    rce_jsma["n_pairs"] = 4
    blocks = table2(results, col, {})
    table = next(b for b in blocks if b[0] == "table")
    row = next(r for r in table[2] if r[0] == "JSMA" and r[1] == "RCE")
    assert row[2] == "30.0¹"
    notes = next(b[1] for b in blocks if b[0] == "notes")
    assert notes[0].startswith("¹ too few pairs (fewer than 30")
    blocks = disagreements(results, col)
    text = " ".join(b[1] if isinstance(b[1], str) else " ".join(b[1]) for b in blocks[1:])
    assert "JSMA RCE" not in text and "under JSMA" not in text
    assert ce_jsma["n_pairs"] == 40
