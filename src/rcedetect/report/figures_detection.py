"""Figures of detection beyond the paper: ROC curves per attack, and attack success at a fixed FPR against ε."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.lines import Line2D

from .. import detectors
from ..evaluation import paper_ref
from .bottom_line_numbers import adaptive_metrics, model_by_objective, n_seeds, worst_case_curve
from .figure_style import COLORS, label_grid, panels, save_figure
from .format import adaptive_records, attack_records, detector_label, model_short, worst_cases

METRIC_STYLES = {"kd": "-", "non_me": "--", "confidence": ":", "kd_bu": "-.", "lid": (0, (5, 1, 1, 1, 1, 1)),
                 "mahalanobis": (0, (8, 3))}


def fig_roc(results: dict, out_dir: Path):
    """One panel per Table-2 attack: the ROC curve over the pairs, CE vs RCE (colour), detector by detector (line)."""
    shown = []
    for attack in paper_ref.TABLE2_ATTACKS:
        recs = [r for r in attack_records(results) if r.attack == attack
                and (r.eps is None or abs(r.eps - results.get("table2_eps", 0)) < 1e-9)]
        if any(d.get("roc") for r in recs for d in r.detection.values()):
            shown.append((attack, recs))
    if not shown:
        return None
    cols = min(len(shown), 3)
    rows = (len(shown) + cols - 1) // cols
    fig, axes = panels(rows, cols, 2.75 * cols + 1.9, 2.75 * rows, sharex=True, sharey=True)
    metrics, empty = set(), []
    for ax, (attack, recs) in zip(axes.flat, shown):
        for r in recs:
            rocs = {metric: d["roc"] for metric, d in r.detection.items() if d.get("roc")}
            metrics |= set(rocs)
            for metric, roc in rocs.items():
                ax.plot(roc["fpr"], roc["tpr"], ls=METRIC_STYLES.get(metric, "-."), color=COLORS.get(r.objective),
                        lw=1.2)
            if not rocs:
                empty.append(f"{paper_ref.label(attack)} {r.objective.upper()} ({r.n_pairs} pairs)")
        ax.plot([0, 1], [0, 1], color="0.75", lw=0.8)
        pairs = " / ".join(f"{r.objective.upper()} {r.n_pairs}" for r in recs)
        ax.set_title(f"{paper_ref.label(attack)}: pairs {pairs}")
        ax.set_aspect("equal")
    handles = label_grid(axes, len(shown), "FPR (clean rejected)", "TPR (adversarial rejected)")
    handles += [Line2D([], [], color="k", lw=1.2, ls=METRIC_STYLES.get(m, "-."), label=detector_label(m))
                for m in detectors.names() if m in metrics]
    fig.legend(handles=handles, loc="outside right upper")
    t2 = results.get("table2_eps")
    caption = (f"ROC curves over the pairs at the Table-2 budget (FGSM, BIM, ILCM, JSMA at ε = {t2}; C&W and "
               "C&W-hc at their one budget): CE (blue) and RCE (red), one line style per detector; pairs per model "
               "in each title; the grey diagonal is chance. A curve below it is the ROC of an AUC below 50."
               + (f" No curve for {', '.join(empty)}: no pairs to score." if empty else ""))
    return "roc", save_figure(fig, out_dir, "roc.png"), caption


def fig_adaptive(results: dict, out_dir: Path):
    """SR@N against ε: one panel per model × detector, a line per adaptive attack and the worst case over them."""
    ad = results.get("adaptive") or {}
    recs = [r for r in adaptive_records(results) if r.eps is not None and (r.norm or "linf") == "linf"]
    objs = sorted({(r.objective, r.model) for r in recs},
                  key=lambda p: ("training" in results.get("models", {}).get(p[1], {}), p[0] != "ce", p[1]))
    names = {m: model_short(results, m, {"objective": o}) for o, m in objs}
    order = {m: i for i, m in enumerate(detectors.names())}
    metrics = sorted({r.metric for r in recs}, key=lambda m: order.get(m, len(order)))
    if not objs:
        return None
    fpr = ad.get("fpr", 0.05)
    attacks = list(dict.fromkeys(r.attack for r in recs))
    colors = {a: plt.get_cmap("tab10")(i) for i, a in enumerate(attacks)}
    fig, axes = panels(len(objs), len(metrics), min(1.65 * len(metrics) + 1.2, 10.8), 1.9 * len(objs) + 0.9,
                       sharex=True, sharey=True)
    missing, n_images = [], {}
    for i, (obj, model) in enumerate(objs):
        for j, metric in enumerate(metrics):
            ax, mine = axes[i][j], [r for r in recs if r.model == model and r.metric == metric]
            for attack in attacks:
                pts = sorted((r.eps, r.operating_point["attack_success_rate"]) for r in mine
                             if r.attack == attack and r.operating_point["attack_success_rate"] is not None)
                ax.plot([e for e, _ in pts], [100 * s for _, s in pts], "o-", ms=2.5, lw=1, color=colors[attack])
            worst = [w for w in worst_cases(results, "linf") if w.model == model and w.metric == metric]
            n_images.setdefault(names[model], set()).update(w.n_clean_correct for w in worst)
            pts = sorted((w.eps, w.attack_success_rate) for w in worst if w.attack_success_rate is not None)
            missing += [f"{names[model]} + {detector_label(metric)} at ε {w.eps:g}" for w in worst
                        if w.attack_success_rate is None]
            ax.plot([e for e, _ in pts], [100 * s for _, s in pts], "k-", lw=2.2)
            if not mine:
                ax.text(0.5, 0.5, "not attacked", ha="center", va="center", transform=ax.transAxes, color="0.4")
            ax.set_ylim(-3, 103)
            ax.grid(alpha=0.3)
            if i == 0:
                ax.set_title(detector_label(metric))
            if i == len(objs) - 1:
                ax.set_xlabel("ε (L∞)")
        axes[i][0].set_ylabel(f"{names[model]}: SR@{100 * fpr:g} (%)")
    handles = [Line2D([], [], color=colors[a], marker="o", ms=3, lw=1, label=a) for a in attacks]
    handles.append(Line2D([], [], color="k", lw=2.2, label="worst case"))
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles))
    n = ", ".join(f"{o} {'/'.join(str(v) for v in sorted(vs))}" for o, vs in n_images.items())
    caption = (f"Adaptive attacks, one panel per model (row) and detector (column): SR@{100 * fpr:g}, the share "
               f"of the attacked, clean-correct images ({n}) that end misclassified AND accepted by the detector at its "
               f"{100 * fpr:g} % FPR threshold, against ε; thin lines per attack, the thick black line the worst case "
               "over them (an image fooled at a smaller ε counts at every larger ε)."
               + (f" No point for {'; '.join(missing)}: no clean-correct image, so no rate." if missing else ""))
    return "adaptive", save_figure(fig, out_dir, "adaptive_sr_vs_eps.png"), caption


#: one colour per detector in the bottom line's figure (CE solid, RCE dashed)
DETECTOR_COLORS = {"kd": "tab:blue", "non_me": "tab:orange", "confidence": "tab:green", "kd_bu": "tab:purple",
                   "lid": "tab:brown", "mahalanobis": "tab:gray"}


def fig_bottom_line(results: dict, out_dir: Path):
    """The bottom line's figure: worst-case SR@N against ε under the adaptive attacks, every detector in one panel
    (a colour each), CE solid and RCE dashed; across-seed means where there are several seeds."""
    objs = model_by_objective(results)
    curves = [(o, m, worst_case_curve(results, objs[o], m)) for m in adaptive_metrics(results)
              for o in ("ce", "rce") if o in objs]
    curves = [c for c in curves if c[2]]
    if not curves:
        return None
    fpr = 100 * (results.get("adaptive") or {}).get("fpr", 0.05)
    fig, ax = plt.subplots(figsize=(6.6, 3.1), layout="constrained")
    cmap = plt.get_cmap("tab10")
    colors = {m: DETECTOR_COLORS.get(m, cmap(i)) for i, m in enumerate(dict.fromkeys(m for _, m, _ in curves))}
    for k, (obj, metric, pts) in enumerate(curves):  # the first detectors (K-density) drawn on top, widest
        ax.plot([e for e, _ in pts], [100 * s.value for _, s in pts], "-" if obj == "ce" else "--", marker="o",
                ms=3, lw=2.4 if metric == "kd" else 1.5, color=colors[metric], zorder=3 + len(curves) - k)
    for level in (50, 90):
        ax.axhline(level, color="0.6", lw=0.8, ls=":")
    ax.set_ylim(-3, 103)
    ax.set_xlabel("ε (L∞, pixels in [0, 1])")
    ax.set_ylabel(f"worst-case SR@{fpr:g} (%)")
    ax.grid(alpha=0.3)
    handles = [Line2D([], [], color=c, lw=2, label=detector_label(m)) for m, c in colors.items()]
    handles += [Line2D([], [], color="k", lw=1.6, ls=s, label=o) for o, s in (("CE", "-"), ("RCE", "--"))]
    fig.legend(handles=handles, loc="outside right upper")
    ns = sorted({str(s.n) for _, _, pts in curves for _, s in pts})
    seeds = n_seeds(results)
    caption = (f"Worst-case SR@{fpr:g} against ε under the attacks that know the detector: the share of attacked, "
               f"clean-correct images ({'/'.join(ns)} per model"
               + (f" and seed, mean over {seeds} seeds" if seeds > 1 else "")
               + f") that end misclassified AND accepted at the detector's {fpr:g} % FPR threshold; one colour per "
               "detector, CE solid, RCE dashed; dotted lines at 50 % and 90 %.")
    return "bottom_line", save_figure(fig, out_dir, "bottom_line_sr_vs_eps.png"), caption


def fig_robust(results: dict, out_dir: Path):
    """Detection or robust training at a glance: robust accuracy against ε, one panel per model; the classifier alone
    (black, with its Wilson band) and behind each detector, robust accuracy with rejection (Tramèr, ICML 2022)."""
    from .robust import model_label

    rb = results.get("robust") or {}
    alone, behind = rb.get("classifiers") or [], rb.get("detectors") or []
    models = list(dict.fromkeys(r["model"] for r in alone + behind))
    if not models:
        return None
    cols = min(len(models), 3)
    rows = (len(models) + cols - 1) // cols
    fig, axes = panels(rows, cols, 3.3 * cols + 1.6, 2.6 * rows + 0.4, sharex=True, sharey=True)
    cmap = plt.get_cmap("tab10")
    order = [m for m in detectors.names() if any(r["metric"] == m for r in behind)]
    colors = {m: DETECTOR_COLORS.get(m, cmap(i)) for i, m in enumerate(order)}
    ns = set()
    for ax, model in zip(axes.flat, models):
        mine = sorted((r for r in alone if r["model"] == model), key=lambda r: r["eps"])
        if mine:
            eps = [r["eps"] for r in mine]
            ax.fill_between(eps, [100 * r["interval"][0] for r in mine], [100 * r["interval"][1] for r in mine],
                            color="0.85", lw=0)
            ax.plot(eps, [100 * r["robust_accuracy"] for r in mine], "k-o", ms=3, lw=2.2, zorder=5)
        for metric in order:
            pts = sorted((r["eps"], r["robust_accuracy_with_rejection"]) for r in behind
                         if r["model"] == model and r["metric"] == metric and r.get("eps_attacked") == r["eps"])
            ax.plot([e for e, _ in pts], [100 * v for _, v in pts], "-o", ms=2.5, lw=1.3, color=colors[metric])
        ns |= {r["n_images"] for r in mine + [r for r in behind if r["model"] == model]}
        ax.set_title(model_label(results["models"].get(model, {"objective": model})), fontsize=9.5)
        ax.set_ylim(-3, 103)
        ax.grid(alpha=0.3)
    label_grid(axes, len(models), "ε (L∞)", "robust accuracy (%)")
    for ax in axes[-2, len(models) - cols * (rows - 1):] if rows > 1 else []:  # above a hidden panel
        ax.xaxis.set_tick_params(labelbottom=True)
        ax.set_xlabel("ε (L∞)")
    handles = [Line2D([], [], color="k", marker="o", ms=3, lw=2.2, label="no detector")]
    handles += [Line2D([], [], color=c, marker="o", ms=3, lw=1.3, label=detector_label(m)) for m, c in colors.items()]
    fig.legend(handles=handles, loc="outside right upper")
    fpr = 100 * rb.get("fpr", 0.05)
    caption = (f"Robust accuracy against ε, one panel per model, on {'/'.join(str(n) for n in sorted(ns))} attacked "
               "test images: the classifier alone under the robust-accuracy attacks (black; grey, its 95 % Wilson "
               "band), and behind each detector the robust accuracy with rejection under the adaptive attacks "
               f"(clean image right and accepted at the {fpr:g} % FPR threshold, and no attack at ε or below made it "
               "misclassified and accepted), drawn at the ε the adaptive attacks ran at.")
    return "robust", save_figure(fig, out_dir, "robust_accuracy_vs_eps.png"), caption
