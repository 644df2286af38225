"""The report's figures: :func:`make_all` draws them all. A caption says what the figure shows, on how many images
or pairs, and why a point or bar is missing where one is. Here the ε-grid figures (detection AUC and accuracy
against ε, the paper's Fig. 2a/2b); the images and feature distributions are in :mod:`.figures_samples`, ROC and
the adaptive attacks in :mod:`.figures_detection`, what they all share in :mod:`.figure_style`.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.lines import Line2D

from ..core.records import AttackRecord
from ..evaluation import paper_ref
from ..evaluation.paper_ref import EPS_FIGURE_ATTACKS, MIN_DISTORTION_ATTACKS
from ..stats.operating_point import MIN_PAIRS
from .figure_style import COLORS, STYLE, label_grid, panels, save_figure
from .format import attack_records, auc_of, main_models, record

#: the paper's detectors and their line styles
PAPER_METRICS = {"kd": ("K-density", "-"), "non_me": ("non-ME", "--"), "confidence": ("confidence", ":")}


def _grid(results: dict, model: str, attack: str) -> list[AttackRecord]:
    recs = [r for r in attack_records(results) if r.model == model and r.attack == attack and r.eps is not None]
    return sorted(recs, key=lambda r: r.eps)


def _counts(results: dict, attacks: list[str]) -> str:
    """The attacked images per ε of each attack's grid runs: 'FGSM 200, BIM 100'."""
    values = {paper_ref.label(a): {r.n_images for m in main_models(results) for r in _grid(results, m, a)}
              for a in attacks}
    return ", ".join(f"{k} {'/'.join(str(v) for v in sorted(vs))}" for k, vs in values.items() if vs)


def _missing_text(missing: list[str], why: str) -> str:
    return f" No point for {'; '.join(missing)}: {why}." if missing else ""


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
               + (f" No bar for {', '.join(missing)}: no efficient example, so no distortion." if missing else ""))
    return "fig2b", save_figure(fig, out_dir, "fig2b_min_distortion.png"), caption


def make_all(results: dict, out_dir: str | Path) -> list[tuple[str, str, str]]:
    from .figures_detection import fig_adaptive, fig_bottom_line, fig_robust, fig_roc
    from .figures_samples import fig_3, fig_kd_hist, fig_noise, fig_tsne

    out_dir = Path(out_dir)
    fns = (fig_bottom_line, fig_auc_vs_eps, fig_2a, fig_2b, fig_3, fig_tsne, fig_noise, fig_kd_hist, fig_roc, fig_adaptive,
           fig_robust)
    with plt.rc_context(STYLE):
        return [f for f in (fn(results, out_dir) for fn in fns) if f]
