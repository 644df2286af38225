"""``rce reproduce --preset NAME [--out DIR] [--set key=value] [--force] [--device D] [--data-dir DIR] [--data-file F]``: the paper end to end.

Trains the CE and RCE models, extracts features, fits the detectors, runs every attack, scores them and writes
``results.json``, ``report.md`` and ``report.html`` (with PNG figures) in the output folder. Every stage is
cached there: run the same command again after a crash and it resumes where it stopped. The output folder is
locked while a run writes in it (``.rce.lock``): a second run into the same folder waits for the first, then finds
every stage done.
"""

from __future__ import annotations

from pathlib import Path


def add_parser(sub) -> None:
    from . import preset_names

    p = sub.add_parser("reproduce", help="run the paper's experiments end to end (cached, resumable)",
                       description="Run the paper's experiments end to end from a reproduce preset: train, fit the "
                                   "detectors, attack, score, and write results.json, report.md and report.html "
                                   "into RUN_DIR. Every stage is cached: the same command resumes after a crash.")
    p.add_argument("--preset", required=True,
                   help=f"a reproduce preset ({', '.join(preset_names('reproduce'))}) or a .toml file")
    p.add_argument("--out", metavar="RUN_DIR", help="output folder (default runs/<preset>)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting, e.g. --set attacks.cw.images=50 --set models.ce.train.steps=2000")
    p.add_argument("--force", action="store_true", help="recompute every stage even if its artifact exists")
    p.add_argument("--device", help="auto (default), cpu, cuda, cuda:N")
    p.add_argument("--data-dir", help="folder with MNIST / CIFAR-10 in torchvision's layout (paper presets)")
    p.add_argument("--data-file", help="one .npz with uint8 x_train, y_train, x_test, y_test (NHW or NHWC) that "
                                       "every model of the preset trains and is tested on, e.g. a CIFAR-10 subset")
    p.add_argument("--quiet", action="store_true", help="no progress bars (stage lines are still printed)")
    p.set_defaults(run=run)


def run(args) -> int:
    from ..core.distributed import world
    from ..report import render, summary
    from ..reproduce import check_writable, output_lock, preset_config
    from ..reproduce import run as run_recipe

    cfg = preset_config(args.preset, args.overrides, args.device, args.data_dir, args.data_file)  # bad settings: before any wait
    out = check_writable(args.out or f"runs/{Path(args.preset).stem}")
    with output_lock(out):  # the run and its report: one run at a time in a folder
        results = run_recipe(cfg, out, force=args.force, progress=not args.quiet)
        if not world().main:
            return 0  # under torchrun rank 0 writes the report
        md, page = render(out, results)
    print(summary(results))
    t = results["timings"]
    spent = (f"total {t['total_seconds']:.0f} s" if t.get("stages_measured_now") == len(t["stage_seconds"]) else
             f"this invocation {t['total_seconds']:.0f} s, the whole run's stages {t['stage_seconds_total']:.0f} s")
    print(f"{spent}; report: {page} (markdown: {md})")
    return 0
