"""``rce report OUT_DIR``: re-render report.md, report.html and the figures from OUT_DIR/results.json alone."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("report", help="re-render the report of a reproduce run from its results.json (no model)")
    p.add_argument("out_dir", help="output folder of `rce reproduce` (holds results.json)")
    p.set_defaults(run=run)


def run(args) -> int:
    from pathlib import Path

    from ..core.errors import CheckpointError
    from ..core.io import check_writable_dir
    from ..core.schemas import check_results
    from ..report import RESULTS, load, render, summary

    path = Path(args.out_dir) / RESULTS
    results = check_results(load(args.out_dir), path)
    check_writable_dir(args.out_dir, "report folder")
    try:
        md, page = render(args.out_dir, results)
        line = summary(results)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, ZeroDivisionError) as e:
        # the schema checks what every report needs; a value deeper inside that is not what rcedetect writes ends here
        raise CheckpointError(f"results file {path} holds a value this rcedetect does not write "
                              f"({type(e).__name__}: {e}); re-run rce reproduce to rewrite it") from e
    print(line)
    print(f"report: {page} (and {md})")
    return 0
