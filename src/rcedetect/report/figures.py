"""The report's figures: :func:`make_all` draws them all. A caption says what the figure shows, on how many images
or pairs, and why a point or bar is missing where one is. Here the ε-grid figures (detection AUC and accuracy
against ε, the paper's Fig. 2a/2b) and the images and feature distributions: C&W-wb examples (the paper's Fig. 3),
the t-SNE of the final hidden vectors (Fig. 1b/c), error under random noise and the log K-density histograms
(Appendix B.3, Figs. 4-6). ROC and the adaptive attacks are in :mod:`.figures_detection`, what they all share in
:mod:`.figure_style`.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.lines import Line2D

from ..core.records import AttackRecord
from ..evaluation import paper_ref
from ..evaluation.paper_ref import EPS_FIGURE_ATTACKS, MIN_DISTORTION_ATTACKS
from ..stats.operating_point import MIN_PAIRS
from .figure_style import COLORS, STYLE, label_grid, panels, save_figure
from .format import attack_records, auc_of, main_models, record

#: the paper's detectors and their line styles
PAPER_METRICS = {"kd": ("K-density", "-"), "non_me": ("non-ME", "--"), "confidence": ("confidence", ":")}
KD_STYLES = {"normal": {"color": "black", "lw": 2.2}, "noisy": {"color": "0.5", "lw": 1.6, "ls": "--"}}


def _grid(results: dict, model: str, attack: str) -> list[AttackRecord]:
    recs = [r for r in attack_records(results) if r.model == model and r.attack == attack and r.eps is not None]
    return sorted(recs, key=lambda r: r.eps)


def _counts(results: dict, attacks: list[str]) -> str:
    """The attacked images per ε of each attack's grid runs: 'FGSM 200, BIM 100'."""
    values = {paper_ref.label(a): {r.n_images for m in main_models(results) for r in _grid(results, m, a)}
              for a in attacks}
    return ", ".join(f"{k} {'/'.join(str(v) for v in sorted(vs))}" for k, vs in values.items() if vs)


def _missing_text(missing: list[str], why: str, what: str = "point", sep: str = "; ") -> str:
    """What a figure lacks and why, for its caption: " No point for A; B: why." ("" where it lacks nothing)."""
    return f" No {what} for {sep.join(missing)}: {why}." if missing else ""


def _auc(r: AttackRecord, metric: str) -> float | None:
    return None if (r.n_pairs or 0) == 0 else auc_of(r, metric)


def fig_auc_vs_eps(results: dict, out_dir: Path):
    """Detection AUC of the paper's three detectors against ε, one panel per gradient attack with an ε grid (a
    single ε is Table 2 already)."""
    attacks = [a for a in EPS_FIGURE_ATTACKS if any(len(_grid(results, m, a)) > 1 for m in main_models(results))]
    if not attacks:
        return None
    cols = 2 if len(attacks) > 1 else 1
    rows = (len(attacks) + cols - 1) // cols
    fig, axes = panels(rows, cols, 3.9 * cols + 2.2, 2.9 * rows, sharey=True)
    pairs, missing = [], []
    for ax, attack in zip(axes.flat, attacks):
        for model, obj in main_models(results).items():
            recs = _grid(results, model, attack)
            for metric, (_, style) in PAPER_METRICS.items():
                pts = [(r.eps, _auc(r, metric), r.n_pairs) for r in recs if _auc(r, metric) is not None]
                ax.plot([e for e, _, _ in pts], [a for _, a, _ in pts], style, color=COLORS.get(obj), lw=1.4)
                few = [(e, a) for e, a, n in pts if n < MIN_PAIRS]
                ax.plot([e for e, _, _ in pts], [a for _, a, _ in pts], "o", ms=3.5, color=COLORS.get(obj))
                ax.plot([e for e, _ in few], [a for _, a in few], "o", ms=5, mfc="white", color=COLORS.get(obj))
            pairs += [r.n_pairs for r in recs]
            empty = [r.eps for r in recs if (r.n_pairs or 0) == 0]
            if empty:  # an empty unclipped artist would break the layout
                ax.plot(empty, [-4] * len(empty), "x", color=COLORS.get(obj), ms=7, clip_on=False)
            missing += [f"{paper_ref.label(attack)} {obj.upper()} at ε {e:g}" for e in empty]
        ax.axhline(50, color="0.6", lw=0.8)
        ax.set_title(paper_ref.label(attack))
        ax.set_ylim(-8, 104)
        ax.grid(alpha=0.3)
    handles = label_grid(axes, len(attacks), "ε", "AUC (×10⁻²)")
    handles += [Line2D([], [], color="k", ls=s, label=lab) for lab, s in PAPER_METRICS.values()]
    if any(0 < n < MIN_PAIRS for n in pairs):
        handles.append(Line2D([], [], ls="", marker="o", mfc="white", color="k", label=f"< {MIN_PAIRS} pairs"))
    if missing:
        handles.append(Line2D([], [], ls="", marker="x", color="k", label="0 pairs: no AUC"))
    handles.append(Line2D([], [], color="0.6", lw=0.8, label="50: chance"))
    fig.legend(handles=handles, loc="outside right upper")
    caption = ("Detection AUC (strict ties) of the paper's three detectors against the attack's ε, CE (blue) vs "
               "RCE (red); ε on pixels in [0, 1] (for JSMA the increase of each changed pixel). The grey line at 50 is chance, and below it a detector ranks the adversarial examples as "
               "more normal than the clean inputs. Each point is over the pairs at that ε (clean image correct, "
               f"adversarial misclassified): {min(pairs, default=0)} to {max(pairs, default=0)} pairs from "
               f"{_counts(results, attacks)} attacked images per ε; hollow points have fewer than {MIN_PAIRS} pairs."
               + _missing_text(missing, "0 pairs (marked ×), the attack never succeeded at that ε"))
    return "auc_vs_eps", save_figure(fig, out_dir, "auc_vs_eps.png"), caption


def fig_2a(results: dict, out_dir: Path):
    attacks = [a for a in EPS_FIGURE_ATTACKS if any(_grid(results, m, a) for m in main_models(results))]
    if not attacks:
        return None
    fig, axes = panels(1, len(attacks), 2.55 * len(attacks), 2.8, sharey=True)
    missing = []
    for ax, attack in zip(axes[0], attacks):
        for model, obj in main_models(results).items():
            recs = _grid(results, model, attack)
            ok = [r for r in recs if r.accuracy is not None]
            ax.plot([r.eps for r in ok], [100 * r.accuracy for r in ok], "o-", ms=3.5, color=COLORS.get(obj),
                    label=obj.upper())
            missing += [f"{paper_ref.label(attack)} {obj.upper()} at ε {r.eps:g}" for r in recs if r.accuracy is None]
        ax.set_title(paper_ref.label(attack))
        ax.set_xlabel("ε")
        ax.set_ylim(-2, 102)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("accuracy (%)")
    axes[0][0].legend()
    caption = ("Classification accuracy on the adversarial images against ε with the detector disabled, CE vs RCE "
               f"(the paper's Fig. 2a); attacked test images per ε and model: {_counts(results, attacks)}."
               + _missing_text(missing, "results.json records no accuracy there"))
    return "fig2a", save_figure(fig, out_dir, "fig2a_accuracy_vs_eps.png"), caption


def fig_2b(results: dict, out_dir: Path):
    bars, missing = [], []
    for attack in MIN_DISTORTION_ATTACKS:
        for model, obj in main_models(results).items():
            r = record(results, model, attack)
            if r is None:
                continue
            cw = r.cw or {}
            bars.append((f"{paper_ref.label(attack)}\n{obj.upper()}", cw.get("mean_min_distortion"), obj,
                         cw.get("n_efficient", 0)))
    if not any(b[1] is not None for b in bars):
        return None
    fig, ax = plt.subplots(figsize=(1.25 * len(bars) + 1.6, 3), layout="constrained")
    top = max(b[1] for b in bars if b[1] is not None)
    for i, (_, v, obj, n) in enumerate(bars):
        if v is None:
            ax.text(i, 0.02 * top, "no success", ha="center", va="bottom", rotation=90, fontsize=9, color="0.3")
            missing.append(bars[i][0].replace("\n", " "))
            continue
        ax.bar(i, v, color=COLORS.get(obj), width=0.7)
        ax.text(i, v, f"n={n}", ha="center", va="bottom", fontsize=9)
    ax.set_xticks(range(len(bars)), [b[0] for b in bars])
    ax.set_ylim(0, 1.15 * top)
    ax.set_ylabel("mean minimal L2 ([0, 255] scale)")
    caption = ("Mean minimal L2 distortion ‖x − x*‖₂/√d on the [0, 255] scale of C&W and C&W-hc (the paper's "
               "Fig. 2b), over the efficient examples: attack succeeded and clean image correct; n on each bar."
               + _missing_text(missing, "no efficient example, so no distortion", "bar", ", "))
    return "fig2b", save_figure(fig, out_dir, "fig2b_min_distortion.png"), caption


def _to_rgb(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img, dtype=np.uint8)  # C,H,W
    return img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0)


def fig_3(results: dict, out_dir: Path):
    fig3 = results.get("figure3") or {}
    models = [(m, o) for m, o in main_models(results).items() if fig3.get(m, {}).get("clean")]
    if not models:
        return None
    n = max(len(fig3[m]["clean"]) for m, _ in models)
    rows = 1 + len(models)
    fig, axes = panels(rows, n, min(1.15 * n + 0.9, 10.8), 1.55 * rows)
    for ax in axes.flat:  # images only: no ticks, no frame
        ax.set_xticks([])
        ax.set_yticks([])
        for s in ax.spines.values():
            s.set_visible(False)
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
               + _missing_text(missing, "0 pairs, the attack never succeeded at this budget", "histogram", ", "))
    return "kd_hist", save_figure(fig, out_dir, "figB3_kd_hist.png"), caption


def make_all(results: dict, out_dir: str | Path) -> list[tuple[str, str, str]]:
    from .figures_detection import fig_adaptive, fig_bottom_line, fig_robust, fig_roc

    out_dir = Path(out_dir)
    fns = (fig_bottom_line, fig_auc_vs_eps, fig_2a, fig_2b, fig_3, fig_tsne, fig_noise, fig_kd_hist, fig_roc, fig_adaptive,
           fig_robust)
    with plt.rc_context(STYLE):
        return [f for f in (fn(results, out_dir) for fn in fns) if f]
