"""``rce report OUT_DIR``: re-render report.md, report.html and the figures from OUT_DIR/results.json alone."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("report", help="re-render the report of a reproduce run from its results.json (no model)")
    p.add_argument("out_dir", help="output folder of `rce reproduce` (holds results.json)")
    p.set_defaults(run=run)


def run(args) -> int:
    from ..report import load, render, summary

    results = load(args.out_dir)
    md, page = render(args.out_dir, results)
    print(summary(results))
    print(f"report: {page} (and {md})")
    return 0
