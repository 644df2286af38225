"""Figures of images and feature distributions: C&W-wb examples (the paper's Fig. 3), the t-SNE of the final
hidden vectors (Fig. 1b/c), error under random noise and the log K-density histograms (Appendix B.3, Figs. 4-6).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.lines import Line2D

from ..evaluation import paper_ref
from ..stats.operating_point import MIN_PAIRS
from .figure_style import panels, save_figure
from .format import attack_records, main_models

KD_STYLES = {"normal": {"color": "black", "lw": 2.2}, "noisy": {"color": "0.5", "lw": 1.6, "ls": "--"}}


def _to_rgb(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img, dtype=np.uint8)  # C,H,W
    return img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0)


def _blank(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for s in ax.spines.values():
        s.set_visible(False)


def fig_3(results: dict, out_dir: Path):
    fig3 = results.get("figure3") or {}
    models = [(m, o) for m, o in main_models(results).items() if fig3.get(m, {}).get("clean")]
    if not models:
        return None
    n = max(len(fig3[m]["clean"]) for m, _ in models)
    rows = 1 + len(models)
    fig, axes = panels(rows, n, min(1.15 * n + 0.9, 10.8), 1.55 * rows)
    for ax in axes.flat:
        _blank(ax)
    first = fig3[models[0][0]]
    for j, img in enumerate(first["clean"]):
        axes[0][j].imshow(_to_rgb(img), cmap="gray", vmin=0, vmax=255)
        axes[0][j].set_title(f"label {first['labels'][j]}", fontsize=9)
    axes[0][0].set_ylabel("clean", fontsize=10)
    n_failed = 0
    for i, (m, obj) in enumerate(models, start=1):
        ok_all = fig3[m].get("success", [True] * n)
        for j, img in enumerate(fig3[m]["adv"]):
            axes[i][j].imshow(_to_rgb(img), cmap="gray", vmin=0, vmax=255)
            ok = ok_all[j]
            n_failed += not ok
            axes[i][j].set_title(f"→{fig3[m]['targets'][j]}  L2 {fig3[m]['l2'][j]:.0f}" + ("" if ok else "\nfailed"),
                                 fontsize=9, color="black" if ok else "tab:red")
        axes[i][0].set_ylabel(f"{obj.upper()}\nC&W-wb", fontsize=10)
    caption = (f"{n} clean test images (top row, true label above) and their C&W-wb adversarial versions crafted on "
               "each model (the paper's Fig. 3); above each: the target class and the L2 distortion on the [0, 255] "
               "scale. 'failed' (red) = the attack did not fool both classifier and detector"
               + (f" ({n_failed} of {n * len(models)} images)." if n_failed else "; none failed."))
    return "fig3", save_figure(fig, out_dir, "fig3_cw_wb_examples.png"), caption


def fig_tsne(results: dict, out_dir: Path):
    tsne = results.get("tsne") or {}
    models = [(m, o) for m, o in main_models(results).items() if m in tsne]
    if not models:
        return None
    fig, axes = panels(1, len(models), 3.9 * len(models) + 1.4, 3.9)
    cmap = plt.get_cmap("tab10")
    for ax, (m, obj) in zip(axes[0], models):
        xy, labels = np.asarray(tsne[m]["xy"]), np.asarray(tsne[m]["labels"])
        ax.scatter(xy[:, 0], xy[:, 1], c=labels, cmap="tab10", s=7, vmin=-0.5, vmax=9.5, marker="o", lw=0)
        ax.set_title(f"{obj.upper()} ({tsne[m]['n']} clean test images)")
        ax.set_xticks([])
        ax.set_yticks([])
    classes = sorted({int(c) for m, _ in models for c in tsne[m]["labels"]})
    handles = [Line2D([], [], ls="", marker="o", ms=6, color=cmap(c), label=str(c)) for c in classes]
    fig.legend(handles=handles, title="true class", loc="outside right upper")
    perplexity = tsne[models[0][0]].get("perplexity", 30)
    sizes = ", ".join(f"{o.upper()} n = {tsne[m]['n']}" for m, o in models)
    caption = (f"t-SNE (perplexity {perplexity:g}, PCA init) of the final hidden vectors of clean test images "
               f"({sizes}), one colour per true class "
               "(legend); no adversarial example is embedded (the paper's Fig. 1b/c). The axes of t-SNE carry no "
               "unit; what reads is how tight and separated the classes are.")
    return "tsne", save_figure(fig, out_dir, "fig1_tsne.png"), caption


def fig_noise(results: dict, out_dir: Path):
    noise = results.get("noise") or {}
    models = [(m, o) for m, o in main_models(results).items() if m in noise]
    if not models:
        return None
    fig, ax = plt.subplots(figsize=(4.2, 3), layout="constrained")
    x = np.arange(len(models))
    eps = noise[models[0][0]]["eps"]
    ax.bar(x - 0.2, [noise[m]["clean_error_percent"] for m, _ in models], 0.4, label="clean", color="0.55")
    ax.bar(x + 0.2, [noise[m]["noisy_error_percent"] for m, _ in models], 0.4, label=f"noise ε = {eps}",
           color="tab:orange")
    ax.set_xticks(x, [o.upper() for _, o in models])
    ax.set_ylabel("test error (%)")
    ax.legend()
    n = ", ".join(f"{o.upper()} {noise[m]['n']}" for m, o in models)
    caption = (f"Test error on clean images and under uniform noise U(−ε, ε), ε = {eps} (the paper's Fig. 4); "
               f"images: {n}.")
    return "noise", save_figure(fig, out_dir, "figB3_noise_error.png"), caption


def _kd_series(results: dict, m: str) -> tuple[list[tuple[str, np.ndarray]], list[str]]:
    """[(label, log KD values)] of one model: normal, noisy, each attack at the Table-2 ε; and the attacks without
    values (0 pairs)."""
    series = [("normal", np.asarray(results["log_kd_normal"][m], dtype=float))]
    if (results.get("noise") or {}).get(m, {}).get("log_kd_noisy"):
        series.append(("noisy", np.asarray(results["noise"][m]["log_kd_noisy"], dtype=float)))
    t2, empty = results.get("table2_eps"), []
    for r in attack_records(results):
        if r.model != m or r.attack == paper_ref.NOISE_ATTACK:
            continue
        if r.eps is not None and (t2 is None or abs(r.eps - t2) > 1e-9):
            continue
        if r.log_kd_adv:
            series.append((paper_ref.label(r.attack), np.asarray(r.log_kd_adv, dtype=float)))
        elif (r.n_pairs or 0) == 0:
            empty.append(paper_ref.label(r.attack))
    return [(k, v[np.isfinite(v)]) for k, v in series], empty


def fig_kd_hist(results: dict, out_dir: Path):
    """Histograms of the K-density detector's score −log KD on a log axis: the normal images sit within a few units
    of zero while attacks reach hundreds, so a linear axis would put every normal image in one bin."""
    normal = results.get("log_kd_normal") or {}
    models = [(m, o) for m, o in main_models(results).items() if normal.get(m)]
    if not models:
        return None
    fig, axes = plt.subplots(len(models), 1, figsize=(10.4, 2.9 * len(models) + 0.6), squeeze=False, sharex=True)
    fig.subplots_adjust(left=0.08, right=0.73, hspace=0.3)  # room for the legends, the same axes width per model
    all_series = {m: _kd_series(results, m) for m, _ in models}
    scores = np.concatenate([-v for s, _ in all_series.values() for _, v in s])
    lo, hi = (scores.min(), scores.max()) if len(scores) else (0, 0)
    positive = len(scores) > 0 and lo > 0
    bins = (np.geomspace if positive else np.linspace)(lo, hi, 60) if lo < hi else 30
    cmap, missing = plt.get_cmap("tab10"), []
    for ax, (m, obj) in zip(axes[:, 0], models):
        series, empty = all_series[m]
        missing += [f"{a} on {obj.upper()}" for a in empty]
        weights = [np.full(len(v), 100 / max(len(v), 1)) for _, v in series]
        peaks = [float(np.max(np.histogram(-v, bins=bins, weights=w)[0], initial=0))
                 for (_, v), w in zip(series, weights)]
        few = [0 < len(v) < MIN_PAIRS and label not in KD_STYLES for label, v in series]
        top = 1.08 * max([p for p, f in zip(peaks, few) if not f], default=0) or None
        for i, ((label, v), w, p, f) in enumerate(zip(series, weights, peaks, few)):
            clipped = f and top is not None and p > top
            ax.hist(-v, bins=bins, weights=w, histtype="step", label=f"{label} (n = {len(v)}"
                    + (", clipped)" if clipped else ")"), **KD_STYLES.get(label, {"color": cmap(i % 10), "lw": 1.3}))
        ax.set_ylim(0, top)
        if positive:
            ax.set_xscale("log")
        ax.set_title(f"{obj.upper()}: K-density detector score", loc="left")
        ax.set_ylabel("% of the group per bin")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
        ax.grid(alpha=0.3)
    axes[-1][0].set_xlabel("−log K-density of the predicted class" + (" (log axis)" if positive else "")
                           + "; right = less like the training images of that class")
    eps = results.get("table2_eps")
    caption = ("Histograms of the K-density detector's score, −log K-density of the predicted class, for normal "
               "(clean, correctly classified), noisy and adversarial inputs (the paper's Figs. 5/6, which plot log "
               f"K-density: the same axis mirrored); gradient attacks at ε = {eps}, adversarial inputs = the pairs; "
               f"n in the legend; a group of fewer than {MIN_PAIRS} can pile up in one bin, so its bars are clipped "
               "at the top of the axis (marked 'clipped'). Each group is normalised to 100 % so groups of different sizes compare, and the "
               "x axis is logarithmic: normal images score within a few units while attacks reach hundreds. The "
               "detector rejects inputs on the right."
               + (f" No histogram for {', '.join(missing)}: 0 pairs, the attack never succeeded at this budget."
                  if missing else ""))
    return "kd_hist", save_figure(fig, out_dir, "figB3_kd_hist.png"), caption
