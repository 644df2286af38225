"""The detector leaderboard: every registered detector on each given model, evaluated adaptively by
``rce evaluate-detector`` (the standard version unless told), one card per (model, detector), one table.

Each cell is the worst case over the version's attacks, per image: SR@5 (the share of attacked images, correct
when clean, that end misclassified AND accepted by a threshold rejecting 5 % of clean held-out images) with its
Wilson 95 % interval and n, then robust accuracy with rejection and the sanity checks passed. Every call resumes
per attack, so an interrupted leaderboard continues where it stopped::

    python benchmarks/leaderboard.py --run runs/demo/models/ce-HASH --run runs/demo/models/rce-HASH \\
        --eps 0.1 --n 64 --out runs/leaderboard --md docs/results/leaderboard-table.md --png leaderboard.png
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

from rcedetect.detectors import names


def budget(text: str) -> float:
    """An ε as typed: a number (0.1) or a fraction of the 8-bit scale (8/255)."""
    return float(Fraction(text))


def eps_label(eps: float) -> str:
    """8/255 for a budget on the 8-bit scale below 0.1 (CIFAR-10's), the number otherwise (MNIST's 0.2)."""
    k = eps * 255
    return f"{round(k)}/255" if eps < 0.1 and abs(k - round(k)) < 1e-6 else f"{eps:g}"


def card_row(card: dict, run: str) -> list[str]:
    rows = []
    for e in card["per_eps"]:
        lo, hi = e["interval"]
        passed = [s for s in card["sanity"] if s.get("passed") is not None]
        rows.append([run, card["detector"], ("L2 " if card["norm"] == "l2" else "") + eps_label(e["eps"]),
                     f"{100 * e['attack_success_rate']:.1f} [{100 * lo:.0f}, {100 * hi:.0f}]",
                     str(card["n_clean_correct"]), f"{100 * e['robust_accuracy_with_rejection']:.1f}",
                     f"{100 * card['clean_accuracy_with_rejection']:.1f}",
                     f"{sum(bool(s['passed']) for s in passed)} / {len(passed)}",
                     max(e["per_attack"], key=lambda a: e["per_attack"][a]["n_fooled"])])
    return rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", action="append", required=True, help="a trained run folder (repeat)")
    ap.add_argument("--detector", action="append", help="a detector (repeat; default: every registered one)")
    ap.add_argument("--eps", action="append", type=budget, required=True, help="a budget, 0.1 or 8/255 (repeat)")
    ap.add_argument("--norm", default="linf", choices=("linf", "l2"))
    ap.add_argument("--n", type=int, default=100, help="attacked test images per card")
    ap.add_argument("--version", default="standard")
    ap.add_argument("--out", required=True, help="folder of the cards")
    ap.add_argument("--md", help="also write the table to this Markdown file")
    ap.add_argument("--png", help="also draw SR@5 per detector and model with its interval into this PNG")
    ap.add_argument("--pairs", help="also write CE beside RCE, one row per budget and detector, to this Markdown file")
    ap.add_argument("--label", default="", help="the first column of --pairs (e.g. the run family)")
    ap.add_argument("--collect", action="store_true", help="only read the cards already in --out; run no attack")
    args = ap.parse_args(argv)
    rows, cards = [], []
    for run in args.run:
        for det in args.detector or names():
            out = Path(args.out) / Path(run).name / det
            cmd = [sys.executable, "-m", "rcedetect.cli", "evaluate-detector", run, "--detector", det,
                   "--n", str(args.n), "--norm", args.norm, "--version", args.version, "--out", str(out), "--quiet"]
            for e in args.eps:
                cmd += ["--eps", str(e)]
            if args.collect and not (out / "card.json").is_file():
                print(f"no card yet: {out}", file=sys.stderr)
                continue
            if not args.collect:
                print("+", " ".join(cmd[2:]), flush=True)
                subprocess.run(cmd, check=True)
            card = json.loads((out / "card.json").read_text())
            rows += card_row(card, Path(run).name)
            cards.append((Path(run).name, card))
    head = ["model", "detector", "ε", "SR@5 % [95 % CI]", "n", "robust acc. w/ rejection %",
            "clean acc. w/ rejection %", "sanity passed", "strongest attack"]
    table = "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
                      + ["| " + " | ".join(r) + " |" for r in rows])
    print(table)
    if args.md:
        Path(args.md).write_text(table + "\n")
    if args.png:
        draw(cards, Path(args.png))
    if args.pairs:
        Path(args.pairs).write_text(pairs_table(cards, args.label) + "\n")


def objective(card: dict) -> str:
    """"CE" or "RCE", from the card's model line ("PreActResNet (rce)")."""
    return card["model"].rsplit("(", 1)[-1].rstrip(")").upper()


def pairs_table(cards: list[tuple[str, dict]], label: str) -> str:
    """One row per (budget, detector): CE's SR@5 beside RCE's, and whether their Wilson intervals are apart."""
    from rcedetect.report.format import detector_label
    from rcedetect.report.verdicts import HIGHER, LOWER, compare

    cells: dict[tuple, dict[str, tuple]] = {}
    for _, card in cards:
        for e in card["per_eps"]:
            threat = (card["norm"], e["eps"])
            checks = [c for c in card["sanity"] if c.get("passed") is not None]
            cells.setdefault((threat, card["detector"]), {})[objective(card)] = (
                e["attack_success_rate"], *e["interval"], card["n_clean_correct"],
                f"{sum(bool(c['passed']) for c in checks)}/{len(checks)}")

    def cell(v):
        return "—" if v is None else f"{100 * v[0]:.1f} [{100 * v[1]:.0f}, {100 * v[2]:.0f}] ({v[3]})"
    words = {HIGHER: "RCE higher, apart", LOWER: "RCE lower, apart"}
    order = {det: k for k, det in enumerate(dict.fromkeys(det for _, det in cells))}
    rows = [f"| {label} | {'L2 ' if norm == 'l2' else ''}{eps_label(eps)} | {detector_label(det)} | {cell(v.get('CE'))} | {cell(v.get('RCE'))} | "
            + (words.get(compare(v["RCE"][1:3], v["CE"][1:3]), "not resolved") if len(v) == 2 else "—")
            + f" | {' / '.join(v[o][4] for o in ('CE', 'RCE') if o in v)} |"
            for ((norm, eps), det), v in sorted(cells.items(), key=lambda kv: (*kv[0][0], order[kv[0][1]]))]
    head = ("| run | ε | detector | CE: SR@5 % [95 % CI] (n) | RCE: SR@5 % [95 % CI] (n) | RCE vs CE "
            "| sanity checks passed (CE / RCE) |")
    return "\n".join([head, "|---|---|---|---|---|---|---|", *rows])


def draw(cards: list[tuple[str, dict]], path: Path) -> None:
    """Grouped bars: one group per detector, one bar per model (and ε), height SR@5 with its Wilson interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rcedetect.report.figure_style import COLORS
    from rcedetect.report.format import detector_label

    detectors = list(dict.fromkeys(c["detector"] for _, c in cards))
    series = list(dict.fromkeys((run, e["eps"]) for run, c in cards for e in c["per_eps"]))
    several_eps = len({eps for _, eps in series}) > 1

    def name(run: str) -> str:  # a run's model folder "ce-0123456789" is called "CE"
        head, _, tail = run.rpartition("-")
        return head.upper() if head and len(tail) == 10 else run
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(1.1 * len(detectors) + 2.5, 3.2), layout="constrained")
    for i, (run, eps) in enumerate(series):
        xs, ys, lo, hi = [], [], [], []
        for j, det in enumerate(detectors):
            for r, c in cards:
                e = next((e for e in c["per_eps"] if e["eps"] == eps), None) if (r, c["detector"]) == (run, det) else None
                if e is not None:
                    xs.append(j + (i - (len(series) - 1) / 2) * width)
                    ys.append(100 * e["attack_success_rate"])
                    lo.append(ys[-1] - 100 * e["interval"][0])
                    hi.append(100 * e["interval"][1] - ys[-1])
        budgets = sorted({e for r, e in series if r == run})  # one colour per model, paler for smaller budgets
        shade = (1 + budgets.index(eps)) / len(budgets)
        ax.bar(xs, ys, width, yerr=[lo, hi], capsize=2, color=COLORS.get(name(run).lower()), alpha=0.3 + 0.7 * shade,
               label=f"{name(run)} ε {eps_label(eps)}" if several_eps else name(run))
    ax.set_xticks(range(len(detectors)), [detector_label(d) for d in detectors])
    ax.set_ylabel("SR@5 (%), worst case")
    ax.set_ylim(0, 103)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="lower right", fontsize=9)
    ns = "/".join(str(n) for n in sorted({c["n_clean_correct"] for _, c in cards}))
    budgets = ", ".join(eps_label(e) for e in sorted({e for _, e in series}))
    ax.set_title(f"{cards[0][1]['norm'].replace('linf', 'L∞').replace('l2', 'L2')} ε {budgets}, "
                 f"{ns} images right when clean", fontsize=10)
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
