"""``rce report OUT_DIR``: re-render report.md, report.html and the figures from OUT_DIR/results.json alone."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("report", help="re-render the report of a reproduce run from its results.json (no model)")
    p.add_argument("out_dir", help="output folder of `rce reproduce` (holds results.json)")
    p.set_defaults(run=run)


def run(args) -> int:
    from pathlib import Path

    from ..io import check_writable_dir
    from ..report import RESULTS, load, render, summary
    from ..schemas import check_results

    results = check_results(load(args.out_dir), Path(args.out_dir) / RESULTS)
    check_writable_dir(args.out_dir, "report folder")
    md, page = render(args.out_dir, results)
    print(summary(results))
    print(f"report: {page} (and {md})")
    return 0
