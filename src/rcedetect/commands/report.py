"""``rce report OUT_DIR``: re-render report.md, report.html and the figures from OUT_DIR/results.json alone."""

from __future__ import annotations

from contextlib import contextmanager


def add_parser(sub) -> None:
    p = sub.add_parser("report", help="re-render the report of a reproduce run from its results.json (no model)",
                       description="Write report.md, report.html and figures/ again from RUN_DIR/results.json "
                                   "alone (no model is loaded).")
    p.add_argument("out_dir", metavar="RUN_DIR", help="output folder of `rce reproduce` (holds results.json)")
    p.set_defaults(run=run)


def run(args) -> int:
    from pathlib import Path

    from ..core.errors import CheckpointError
    from ..core.io import check_writable_dir
    from ..core.schemas import check_result_values, check_results
    from ..report import RESULTS, load, render, summary

    path = Path(args.out_dir) / RESULTS
    results = check_result_values(check_results(load(args.out_dir), path), path)
    out = check_writable_dir(args.out_dir, "report folder")
    try:
        with staged(out) as staging:  # drawn aside, moved in only when the whole report is drawn
            md, page = render(staging, results)
            line = summary(results)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, ZeroDivisionError) as e:
        # the schema checks what every report needs; a value deeper inside that is not what rcedetect writes ends here
        raise CheckpointError(f"results file {path} holds a value this rcedetect does not write "
                              f"({type(e).__name__}: {e}); re-run rce reproduce to rewrite it") from e
    print(line)
    print(f"report: {out / page.name} (and {out / md.name})")
    return 0


@contextmanager
def staged(out):
    """A hidden folder inside ``out`` to write into; on success its files replace their namesakes in ``out`` (each by
    one rename), on any error it is removed: a refused report writes nothing."""
    import os
    import shutil
    import tempfile
    from pathlib import Path

    staging = Path(tempfile.mkdtemp(prefix=".report-", dir=out))
    try:
        yield staging
        for f in sorted(p for p in staging.rglob("*") if p.is_file()):
            target = out / f.relative_to(staging)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(f, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
