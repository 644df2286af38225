"""What every figure of the report shares: the Agg backend, the style (no text under 9 pt), the width limit at
the report's resolution, the colours of CE and RCE, the main models of a results dict, and the atomic PNG
writing into ``OUT/figures/``."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from ..core.io import atomic_write_bytes

FIGDIR = "figures"
COLORS = {"ce": "tab:blue", "rce": "tab:red"}
DPI = 100
MAX_WIDTH_PX = 1100
MIN_FONT_PT = 9
STYLE = {"font.size": 10, "axes.titlesize": 10.5, "axes.labelsize": 10, "xtick.labelsize": 9, "ytick.labelsize": 9,
         "legend.fontsize": 9, "legend.title_fontsize": 9, "figure.titlesize": 11}


def main_models(results: dict) -> list[tuple[str, str]]:
    """[(model name, objective)] of the main models."""
    return [(m, r["objective"]) for m, r in results.get("models", {}).items() if r.get("role") == "main"]


def save_figure(fig, out_dir: Path, name: str) -> str:
    (out_dir / FIGDIR).mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    fig.savefig(buf, dpi=DPI, bbox_inches="tight", pad_inches=0.05, format="png")
    plt.close(fig)
    atomic_write_bytes(out_dir / FIGDIR / name, buf.getvalue())
    return f"{FIGDIR}/{name}"
