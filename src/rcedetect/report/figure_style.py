"""What every figure of the report shares: the Agg backend, the style (no text under 9 pt), the width limit at
the report's resolution (so the page never scales a figure down), the colours of CE and RCE, the panel grid, and
the atomic PNG writing into ``OUT/figures/``. Each ``fig_*`` function draws from the results dict alone and
returns ``(key, file, caption)``, or ``None`` when the results lack its data."""

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


def panels(rows: int, cols: int, width: float, height: float, **kw):
    """A figure of ``rows`` × ``cols`` panels (always a 2-D array of axes) in the constrained layout."""
    return plt.subplots(rows, cols, figsize=(width, height), squeeze=False, layout="constrained", **kw)


def label_grid(axes, n: int, xlabel: str, ylabel: str) -> list:
    """The x label under the bottom row, the y label beside the first column, the panels after the ``n``-th hidden;
    returns the legend handles of the objectives' colours."""
    from matplotlib.lines import Line2D

    for ax in axes[-1]:
        ax.set_xlabel(xlabel)
    for ax in axes[:, 0]:
        ax.set_ylabel(ylabel)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    return [Line2D([], [], color=c, lw=2, label=o.upper()) for o, c in COLORS.items()]


def save_figure(fig, out_dir: Path, name: str) -> str:
    (out_dir / FIGDIR).mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    fig.savefig(buf, dpi=DPI, bbox_inches="tight", pad_inches=0.05, format="png")
    plt.close(fig)
    atomic_write_bytes(out_dir / FIGDIR / name, buf.getvalue())
    return f"{FIGDIR}/{name}"
