"""The paper's published numbers (Tables 1-6 of Pang et al., NeurIPS 2018) from the package data file
``paper_numbers.json`` (beside this module).


Lookups return ``None`` where the paper has no value, so the report can show "ours" alone there.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

#: our attack names -> the paper's labels
ATTACK_LABELS = {"fgsm": "FGSM", "bim": "BIM", "ilcm": "ILCM", "jsma": "JSMA", "cw": "C&W", "cw_hc": "C&W-hc",
                 "cw_wb": "C&W-wb", "noise": "RAND"}
#: attacks of Table 2 (detection AUC), in the paper's row order; a gradient attack's row is its run at table2_eps
TABLE2_ATTACKS = ("fgsm", "bim", "ilcm", "jsma", "cw", "cw_hc")
#: attacks of Figure 2a (accuracy over the ε grid) and of the AUC-vs-ε figure
EPS_FIGURE_ATTACKS = ("fgsm", "bim", "ilcm", "jsma")
#: attacks of Table 5 (seconds per example)
TABLE5_ATTACKS = ("fgsm", "bim", "ilcm", "jsma", "cw", "cw_hc", "cw_wb")
#: attacks whose minimal distortion Figure 2b plots
MIN_DISTORTION_ATTACKS = ("cw", "cw_hc")
#: the white-box attack of Table 3 and Figure 3, whose images Table 4 transfers
WHITEBOX_ATTACK = "cw_wb"
#: the random-noise baseline of Appendix B.3 (Figures 4-6)
NOISE_ATTACK = "noise"
#: our detector names -> the paper's metric keys
METRIC_KEYS = {"confidence": "confidence", "non_me": "non_me", "kd": "kernel_density"}


def label(attack: str) -> str:
    """The paper's name of an attack (our name where the paper has none)."""
    return ATTACK_LABELS.get(attack, attack)


@lru_cache(maxsize=1)
def numbers() -> dict[str, Any]:
    return json.loads((Path(__file__).parent / "paper_numbers.json").read_text())


def _row(table: str, **match: Any) -> dict[str, Any] | None:
    """The first row of ``table`` whose fields equal ``match`` (compared in order), None when none does."""
    return next((row for row in numbers()[table] if all(row[k] == v for k, v in match.items())), None)


def column(dataset: str | None) -> str | None:
    """The paper column our dataset is compared with: mnist5k and mnist -> 'mnist', cifar10 -> 'cifar10'."""
    return {"mnist": "mnist", "mnist5k": "mnist", "cifar10": "cifar10"}.get(dataset)


def test_error(arch: str, objective: str, col: str | None) -> float | None:
    """Table 1: test error in percent."""
    row = _row("table1_test_error_percent", model=arch, objective=objective.upper()) if col else None
    return row.get(col) if row else None


def test_error_nearest(arch: str, objective: str, col: str | None, role: str = "main"
                       ) -> tuple[float | None, str | None]:
    """Table 1 beside a model of ours: (paper's test error %, the paper's model it is).

    The paper trains ResNet-32 (its main models) and ResNet-56 (the targets of Table 4). A model of ours with the
    same architecture is compared with that row; any other main model with the ResNet-32 row and any other target
    with the ResNet-56 row (the model it stands in for). ``(None, None)`` where the paper has no column."""
    if col is None:
        return None, None
    paper_archs = {row["model"] for row in numbers()["table1_test_error_percent"]}
    ref = arch if arch in paper_archs else ("resnet56" if role == "target" else "resnet32")
    return test_error(ref, objective, col), ref


def auc(attack: str, objective: str, metric: str, col: str | None) -> float | None:
    """Table 2: AUC x 100 of ``metric`` (confidence / non_me / kd) for ``attack`` on ResNet-32."""
    row = _row("table2_auc", dataset=col, attack=ATTACK_LABELS.get(attack), objective=objective.upper(),
               metric=METRIC_KEYS.get(metric))
    return row["auc_percent"] if row else None


def cw_wb(objective: str, col: str | None) -> tuple[float | None, float | None]:
    """Table 3: (ratio of f2 > 0, mean distortion on the [0, 255] scale)."""
    row = _row("table3_cw_wb", objective=objective.upper()) if col else None
    return (row[f"{col}_ratio_f2_positive"], row[f"{col}_distortion"]) if row else (None, None)


def transfer_auc(target_objective: str, substitute_objective: str, col: str | None) -> float | None:
    """Table 4 (CIFAR-10 only): K-density AUC x 100, target ResNet-56, substitute ResNet-32."""
    row = _row("table4_blackbox_cifar10_auc_percent", target=f"resnet56-{target_objective.upper()}",
               substitute=f"resnet32-{substitute_objective.upper()}") if col == "cifar10" else None
    return row["auc"] if row else None


def seconds_per_example(attack: str, objective: str) -> float | None:
    """Table 5: seconds per adversarial example on a P100 (ResNet-32, mean of MNIST and CIFAR-10)."""
    row = _row("table5_seconds_per_example_p100", attack=ATTACK_LABELS.get(attack))
    return row.get(objective.upper()) if row else None
