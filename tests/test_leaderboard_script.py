"""benchmarks/leaderboard.py: budgets typed as fractions, their labels, and the CE-beside-RCE table, whose verdict
must come from the Wilson intervals (apart only when one lies wholly below the other), on hand-built cards."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "leaderboard.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("leaderboard", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def card(objective, detector, per_eps, norm="linf", n=30):
    sanity = [{"passed": True}, {"passed": objective == "ce"}, {"passed": None}]  # RCE fails one; one not run
    return {"model": f"PreActResNet ({objective})", "detector": detector, "norm": norm, "n_clean_correct": n,
            "sanity": sanity,
            "per_eps": [{"eps": e, "attack_success_rate": r, "interval": iv} for e, r, iv in per_eps]}


def test_budgets_and_labels(bench):
    assert bench.budget("8/255") == pytest.approx(8 / 255) and bench.budget("0.3") == 0.3
    assert bench.eps_label(8 / 255) == "8/255" and bench.eps_label(2 / 255) == "2/255"
    # 0.2 * 255 = 51 is a whole number, but MNIST's budget reads as the number it was typed as
    assert bench.eps_label(0.2) == "0.2" and bench.eps_label(0.05) == "0.05"


def test_pairs_table_verdicts_sorting_and_missing(bench):
    cards = [("ce-x", card("ce", "kd", [(0.3, 1.0, (0.9, 1.0)), (0.1, 0.9, (0.8, 0.95))])),
             ("ce-x", card("ce", "lid", [(0.1, 0.5, (0.4, 0.6))])),
             ("rce-y", card("rce", "kd", [(0.3, 0.5, (0.3, 0.7)), (0.1, 0.8, (0.7, 0.9))])),
             ("rce-y", card("rce", "lid", [(0.1, 0.8, (0.65, 0.9))]))]
    lines = bench.pairs_table(cards, "demo").splitlines()
    assert lines[0].startswith("| run | ε | detector | CE")
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
    # sorted by budget, then by detector in the order first seen; 0.1 before 0.3
    assert [(r[1], r[2]) for r in rows] == [("0.1", "K-density"), ("0.1", "LID"), ("0.3", "K-density")]
    assert rows[0][3] == "90.0 [80, 95] (30)" and rows[0][5] == "not resolved"  # 0.8-0.95 and 0.7-0.9 overlap
    assert rows[0][6] == "2/2 / 1/2"  # checks not run are not counted
    assert rows[1][5] == "RCE higher, apart"  # RCE 0.65-0.9 wholly above CE 0.4-0.6
    assert rows[2][5] == "RCE lower, apart"  # RCE 0.3-0.7 wholly below CE 0.9-1.0
    # a detector run on one model only: its other cell is empty and no verdict is given
    lone = bench.pairs_table([("ce-x", card("ce", "kd", [(0.1, 0.9, (0.8, 0.95))], norm="l2"))], "c")
    assert lone.splitlines()[2] == "| c | L2 0.1 | K-density | 90.0 [80, 95] (30) | — | — | 2/2 |"
