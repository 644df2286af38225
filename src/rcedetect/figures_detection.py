"""Figures of detection beyond the paper: ROC curves per attack, and attack success at a fixed FPR against ε.

Drawn from the results dict alone, like :mod:`rcedetect.figures` (whose helpers they use); each returns
``(key, file, caption)`` or ``None`` when the results lack its data.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from . import paper_ref
from .figures import COLORS, _save

METRIC_STYLES = {"kd": "-", "non_me": "--", "confidence": ":"}


def fig_roc(results: dict, out_dir: Path):
    """One panel per Table-2 attack: the ROC curve over the pairs, CE vs RCE (colour), metric by metric (line)."""
    panels = []
    for attack in paper_ref.TABLE2_ATTACKS:
        recs = [r for r in results.get("attacks", []) if r["attack"] == attack
                and (r.get("eps") is None or abs(r["eps"] - results.get("table2_eps", 0)) < 1e-9)
                and any((d.get("roc") or None) for d in r.get("detection", {}).values())]
        if recs:
            panels.append((attack, recs))
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(3.0 * len(panels), 3.0), squeeze=False)
    for ax, (attack, recs) in zip(axes[0], panels):
        for r in recs:
            for metric, d in r["detection"].items():
                if d.get("roc"):
                    ax.plot(d["roc"]["fpr"], d["roc"]["tpr"], METRIC_STYLES.get(metric, "-."),
                            color=COLORS.get(r["objective"]), lw=1.2, label=f"{r['objective'].upper()} {metric}")
        ax.plot([0, 1], [0, 1], color="0.8", lw=0.8)
        pairs = " / ".join(f"{r['objective'].upper()} {r['n_pairs']}" for r in recs)
        ax.set_title(f"{paper_ref.label(attack)} (pairs {pairs})", fontsize=8)
        ax.set_xlabel("FPR (clean rejected)", fontsize=8)
        ax.set_aspect("equal")
    axes[0][0].set_ylabel("TPR (adversarial detected)", fontsize=8)
    axes[0][0].legend(fontsize=6)
    return "roc", _save(fig, out_dir, "roc.png"), \
        "ROC curves over the pairs at the Table-2 ε: CE (blue) and RCE (red), one line style per detector."


def fig_adaptive(results: dict, out_dir: Path):
    """SR@N against ε: one panel per model × detector, a line per adaptive attack and the worst case over them."""
    ad = results.get("adaptive") or {}
    recs = [r for r in ad.get("records", []) if r.get("eps") is not None and r.get("norm", "linf") == "linf"]
    panels = sorted({(r["model"], r["objective"], r["metric"]) for r in recs},
                    key=lambda p: (p[1] != "ce", p[0], p[2] != "kd", p[2]))
    if not panels:
        return None
    fpr = ad.get("fpr", 0.05)
    fig, axes = plt.subplots(1, len(panels), figsize=(3.0 * len(panels), 3.0), squeeze=False, sharey=True)
    for ax, (model, obj, metric) in zip(axes[0], panels):
        mine = [r for r in recs if r["model"] == model and r["metric"] == metric]
        for attack in dict.fromkeys(r["attack"] for r in mine):
            pts = sorted((r["eps"], r["operating_point"]["attack_success_rate"]) for r in mine
                         if r["attack"] == attack and r["operating_point"]["attack_success_rate"] is not None)
            ax.plot([e for e, _ in pts], [100 * s for _, s in pts], "o-", ms=3, lw=1, label=paper_ref.label(attack))
        worst = sorted((w["eps"], w["attack_success_rate"]) for w in ad.get("worst_case", [])
                       if w["model"] == model and w["metric"] == metric and w.get("norm", "linf") == "linf"
                       and w["attack_success_rate"] is not None)
        ax.plot([e for e, _ in worst], [100 * s for _, s in worst], "k-", lw=2.2, label="worst case")
        ax.set_title(f"{obj.upper()} + {metric}", fontsize=9)
        ax.set_xlabel("ε (L∞)")
        ax.set_ylim(-3, 103)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"SR@{100 * fpr:g} (%)")
    axes[0][0].legend(fontsize=6)
    return "adaptive", _save(fig, out_dir, "adaptive_sr_vs_eps.png"), \
        (f"Adaptive attacks: the share of attacked, clean-correct images that end misclassified AND accepted by the "
         f"detector at its {100 * fpr:g} % FPR threshold (SR@{100 * fpr:g}), against ε.")
