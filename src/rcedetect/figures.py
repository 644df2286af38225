"""The report's figures (matplotlib, Agg backend), drawn from the results dict alone.

Each ``fig_*`` function returns ``(key, file, caption)`` or ``None`` when the results lack its data; files go
to ``OUT/figures/``. Paper references: Fig. 1b/c (t-SNE), Fig. 2a/2b (detector disabled), Fig. 3 (C&W-wb
images), Fig. 4-6 (Appendix B.3: noise and K-density histograms), and an AUC-vs-ε figure over the ε grid.
"""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from . import paper_ref
from .io import atomic_write_bytes
from .paper_ref import EPS_FIGURE_ATTACKS, MIN_DISTORTION_ATTACKS

FIGDIR = "figures"
COLORS = {"ce": "tab:blue", "rce": "tab:red"}


def _models(results: dict) -> list[tuple[str, str]]:
    """[(model name, objective)] of the main models."""
    return [(m, r["objective"]) for m, r in results.get("models", {}).items() if r.get("role") == "main"]


def _grid(results: dict, model: str, attack: str) -> list[dict]:
    recs = [r for r in results.get("attacks", []) if r["model"] == model and r["attack"] == attack
            and r.get("eps") is not None]
    return sorted(recs, key=lambda r: r["eps"])


def _save(fig, out_dir: Path, name: str) -> str:
    (out_dir / FIGDIR).mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    fig.savefig(buf, dpi=90, bbox_inches="tight", format="png")
    plt.close(fig)
    atomic_write_bytes(out_dir / FIGDIR / name, buf.getvalue())
    return f"{FIGDIR}/{name}"


def _attack_eps_panels(results: dict, out_dir: Path, name: str, value, ylabel: str):
    attacks = [a for a in EPS_FIGURE_ATTACKS if any(_grid(results, m, a) for m, _ in _models(results))]
    if not attacks:
        return None
    fig, axes = plt.subplots(1, len(attacks), figsize=(3.2 * len(attacks), 3), squeeze=False)
    for ax, attack in zip(axes[0], attacks):
        for model, obj in _models(results):
            recs = [r for r in _grid(results, model, attack) if value(r) is not None]
            if recs:
                ax.plot([r["eps"] for r in recs], [value(r) for r in recs], "o-", color=COLORS.get(obj),
                        label=f"{obj.upper()}")
        ax.set_title(paper_ref.label(attack))
        ax.set_xlabel("ε")
        ax.set_ylim(-2, 102)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(ylabel)
    axes[0][0].legend()
    return _save(fig, out_dir, name)


def fig_auc_vs_eps(results: dict, out_dir: Path):
    def kd(r):
        v = r.get("detection", {}).get("kd", {}).get("auc_strict")
        return None if v is None or r.get("n_pairs", 0) == 0 else 100 * v

    f = _attack_eps_panels(results, out_dir, "auc_vs_eps.png", kd, "K-density AUC (×10⁻²)")
    return f and ("auc_vs_eps", f, "K-density AUC over the ε grid (strict ties), CE vs RCE.")


def fig_2a(results: dict, out_dir: Path):
    f = _attack_eps_panels(results, out_dir, "fig2a_accuracy_vs_eps.png",
                           lambda r: None if r.get("accuracy") is None else 100 * r["accuracy"], "accuracy (%)")
    return f and ("fig2a", f, "Figure 2a: classification accuracy on adversarial images vs ε (detector disabled).")


def fig_2b(results: dict, out_dir: Path):
    bars = []
    for attack in MIN_DISTORTION_ATTACKS:
        for model, obj in _models(results):
            r = next((r for r in results.get("attacks", []) if r["model"] == model and r["attack"] == attack), None)
            if r and r.get("cw", {}).get("mean_min_distortion") is not None:
                bars.append((f"{paper_ref.label(attack)}\n{obj.upper()}", r["cw"]["mean_min_distortion"], obj))
    if not bars:
        return None
    fig, ax = plt.subplots(figsize=(1.3 * len(bars) + 1.5, 3))
    ax.bar(range(len(bars)), [b[1] for b in bars], color=[COLORS.get(b[2]) for b in bars])
    ax.set_xticks(range(len(bars)), [b[0] for b in bars])
    ax.set_ylabel("mean minimal distortion ([0,255] scale)")
    return "fig2b", _save(fig, out_dir, "fig2b_min_distortion.png"), \
        "Figure 2b: mean minimal L2 distortion of C&W and C&W-hc (successful, clean-correct images)."


def _to_rgb(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img, dtype=np.uint8)  # C,H,W
    return img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0)


def fig_3(results: dict, out_dir: Path):
    fig3 = results.get("figure3") or {}
    models = [(m, o) for m, o in _models(results) if fig3.get(m, {}).get("clean")]
    if not models:
        return None
    n = max(len(fig3[m]["clean"]) for m, _ in models)
    rows = 1 + len(models)
    fig, axes = plt.subplots(rows, n, figsize=(1.2 * n, 1.3 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    first = fig3[models[0][0]]
    for j, img in enumerate(first["clean"]):
        axes[0][j].imshow(_to_rgb(img), cmap="gray", vmin=0, vmax=255)
        axes[0][j].set_title(f"normal {first['labels'][j]}", fontsize=7)
    for i, (m, obj) in enumerate(models, start=1):
        for j, img in enumerate(fig3[m]["adv"]):
            axes[i][j].imshow(_to_rgb(img), cmap="gray", vmin=0, vmax=255)
            ok = fig3[m].get("success", [True] * n)[j]
            axes[i][j].set_title(f"{obj.upper()}→{fig3[m]['targets'][j]} ({fig3[m]['l2'][j]:.0f})"
                                 + ("" if ok else " failed"), fontsize=7)
    return "fig3", _save(fig, out_dir, "fig3_cw_wb_examples.png"), \
        ("Figure 3: clean test images (top) and C&W-wb adversarial versions crafted on each model " \
        "(title: target class and L2 distortion on the [0,255] scale; 'failed' = did not fool both classifier "
         "and detector).")


def fig_tsne(results: dict, out_dir: Path):
    tsne = results.get("tsne") or {}
    models = [(m, o) for m, o in _models(results) if m in tsne]
    if not models:
        return None
    fig, axes = plt.subplots(1, len(models), figsize=(4 * len(models), 4), squeeze=False)
    for ax, (m, obj) in zip(axes[0], models):
        xy, labels = np.asarray(tsne[m]["xy"]), np.asarray(tsne[m]["labels"])
        ax.scatter(xy[:, 0], xy[:, 1], c=labels, cmap="tab10", s=4, vmin=0, vmax=9)
        ax.set_title(f"{obj.upper()} ({tsne[m]['n']} test images)")
        ax.set_xticks([])
        ax.set_yticks([])
    return "tsne", _save(fig, out_dir, "fig1_tsne.png"), \
        "Figure 1b/c: t-SNE (perplexity 30, PCA init) of the final hidden vectors, coloured by true label."


def fig_noise(results: dict, out_dir: Path):
    noise = results.get("noise") or {}
    models = [(m, o) for m, o in _models(results) if m in noise]
    if not models:
        return None
    fig, ax = plt.subplots(figsize=(4, 3))
    x = np.arange(len(models))
    ax.bar(x - 0.2, [noise[m]["clean_error_percent"] for m, _ in models], 0.4, label="clean")
    ax.bar(x + 0.2, [noise[m]["noisy_error_percent"] for m, _ in models], 0.4, label=f"noise ε={noise[models[0][0]]['eps']}")
    ax.set_xticks(x, [o.upper() for _, o in models])
    ax.set_ylabel("test error (%)")
    ax.legend()
    return "noise", _save(fig, out_dir, "figB3_noise_error.png"), "Figure 4: test error on clean and noisy images."


def fig_kd_hist(results: dict, out_dir: Path):
    normal = results.get("log_kd_normal") or {}
    models = [(m, o) for m, o in _models(results) if normal.get(m)]
    if not models:
        return None
    fig, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 3.2), squeeze=False)
    for ax, (m, obj) in zip(axes[0], models):
        series = [("normal", normal[m])]
        if (results.get("noise") or {}).get(m, {}).get("log_kd_noisy"):
            series.append(("noisy", results["noise"][m]["log_kd_noisy"]))
        t2 = results.get("table2_eps")
        for r in results.get("attacks", []):
            if r["model"] == m and r.get("log_kd_adv") and (r.get("eps") is None or abs(r["eps"] - t2) < 1e-9):
                series.append((paper_ref.label(r["attack"]), r["log_kd_adv"]))
        values = np.concatenate([np.asarray(v, dtype=float) for _, v in series])
        values = values[np.isfinite(values)]
        bins = np.linspace(values.min(), values.max(), 30) if len(values) and values.min() < values.max() else 30
        for label, v in series:
            v = np.asarray(v, dtype=float)
            ax.hist(v[np.isfinite(v)], bins=bins, histtype="step", label=label)
        ax.set_title(f"{obj.upper()}: log K-density")
        ax.set_xlabel("log KD (higher = more normal)")
        ax.legend(fontsize=6)
    return "kd_hist", _save(fig, out_dir, "figB3_kd_hist.png"), \
        "Figures 5/6: histograms of log K-density of normal, noisy and adversarial inputs."


FIGURES = (fig_auc_vs_eps, fig_2a, fig_2b, fig_3, fig_tsne, fig_noise, fig_kd_hist)


def make_all(results: dict, out_dir: str | Path) -> list[tuple[str, str, str]]:
    from .figures_detection import fig_adaptive, fig_roc

    out_dir = Path(out_dir)
    return [f for f in (fn(results, out_dir) for fn in (*FIGURES, fig_roc, fig_adaptive)) if f]
