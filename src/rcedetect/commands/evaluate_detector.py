"""``rce evaluate-detector RUN_DIR --detector NAME|module:function --eps E [...]``: any detector of a run's model,
evaluated adaptively in one call, as a detector card (:func:`rcedetect.evaluate_detector`).

The model is the run's (or, with ``--model torchvision:NAME --weights FILE --dataset D``, a model trained elsewhere,
imported into ``RUN_DIR`` first, as ``rce fit-detector`` does). ``--detector`` is a registered metric (fitted on the
run's training images and cached in ``RUN_DIR/detector-<metric>/``, as ``rce calibrate`` does) or ``module:function``,
the user's own ``score(x) -> (n,)`` (higher = more adversarial; a ``classifier`` parameter gets the run's classifier).
The threshold rejects ``--fpr`` of the clean held-out images (the last ``--calibration-size`` of the test split); the
attacked images are ``--n`` of the others, drawn by a seeded permutation. ``card.json`` (versioned schema) and
``card.md`` go to ``--out``, each attack's batches to ``--out/attacks/`` as they finish: a rerun skips those.
"""

from __future__ import annotations

from pathlib import Path

from ..core.settings import int64_arg
from . import add_fit_options, add_import_options


def add_parser(sub) -> None:
    p = sub.add_parser("evaluate-detector", help="any detector (registered or module:function) evaluated adaptively "
                       "in one call: a detector card (SR@5, robust accuracy, sanity checks)",
                       description="Evaluate any detector (a registered metric or module:function) against attacks "
                                   "that know it, in one call: a detector card with SR@5 (attacked images, correct "
                                   "when clean, that end misclassified AND accepted at 5 % FPR), robust accuracy "
                                   "with rejection and the sanity checks of the attacks.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a trained run folder (created from --model and --weights "
                   "when it holds no run)")
    p.add_argument("--detector", required=True, help="a registered metric (kd, non_me, confidence, ...) or your own "
                   "score function as module:function (score(x) -> (n,), higher = more adversarial)")
    p.add_argument("--eps", type=float, action="append", required=True,
                   help="the budget on the [0, 1] scale (L∞, or L2 with --norm l2); repeat for a grid")
    p.add_argument("--norm", default="linf", help="linf (default) or l2")
    p.add_argument("--threshold", type=float, help="use this threshold instead of choosing one at --fpr")
    p.add_argument("--version", default="standard", help="standard (every attack that applies, with restarts; "
                   "default) or fast (PGD on the detector with a λ sweep, PGD on the defended model)")
    p.add_argument("--attacks", help="a custom suite instead of --version: attack names separated by commas, e.g. "
                   "pgd_detector,orthogonal_pgd,torchattacks:Square")
    p.add_argument("--steps", type=int64_arg, help="every attack's number of steps (default: the version's)")
    p.add_argument("--set", dest="settings", action="append", default=[], metavar="ATTACK.KEY=VALUE",
                   help="an attack's setting, e.g. --set pgd_detector.restarts=4")
    p.add_argument("--n", type=int64_arg, default=500, help="number of test images attacked (default 500)")
    p.add_argument("--batch-size", type=int64_arg, default=100, help="images per attack batch (default 100)")
    p.add_argument("--sample", type=int64_arg, default=32, help="images of the sanity checks (default 32)")
    add_fit_options(p, baselines=False, data=False,
                    fpr="share of clean held-out images the threshold rejects, in (0, 1)",
                    seed="seed of the image choice and of the attacks (and of a registered detector's fit)",
                    refit="refit a registered detector instead of using its cache")
    add_import_options(p)
    p.add_argument("--out", help="output folder (default RUN_DIR/detector-card-<detector>-<norm>)")
    p.set_defaults(run=run)


def attack_settings(items: list[str]) -> dict[str, dict]:
    """``--set ATTACK.KEY=VALUE`` -> {attack: {key: value}} (the attack name is everything before the last dot)."""
    from ..core.errors import ConfigError
    from .attack import parse_settings

    out: dict[str, dict] = {}
    for key, value in parse_settings(items).items():
        attack, dot, name = key.rpartition(".")
        if not dot or not attack or not name:
            raise ConfigError(f"--set expects ATTACK.KEY=VALUE (e.g. pgd_detector.steps=50), got {key!r}")
        out.setdefault(attack, {})[name] = value
    return out


def run(args) -> int:
    from .. import data
    from ..core.device import resolve
    from ..core.errors import ConfigError
    from ..core.io import check_writable_dir
    from ..evaluation import attack_store
    from ..evaluation.calibrated import calibrated_detector, calibration_slice
    from ..evaluation.detector_card import evaluate_detector
    from ..evaluation.detector_inputs import check_arguments
    from ..evaluation.user_detector import resolve_callable
    from ..models import checkpoint
    from . import fit_options, import_run

    # everything the options say is checked before anything is loaded or attacked
    version = [a.strip() for a in args.attacks.split(",")] if args.attacks else args.version
    if args.attacks and args.version != "standard":
        raise ConfigError("give either --version or --attacks, not both")
    check_arguments(norm=args.norm, eps=args.eps, fpr=args.fpr, threshold=args.threshold, version=version)
    settings = attack_settings(args.settings)
    for name, v in (("--n", args.n), ("--batch-size", args.batch_size), ("--sample", args.sample)):
        if v < 1:
            raise ConfigError(f"{name} must be >= 1, got {v}")
    user = ":" in args.detector
    if user:
        resolve_callable(args.detector)  # a module that does not import fails here
    opts = fit_options(args, *(() if user else (args.detector,)))
    run_dir = Path(args.run_dir)
    import_run(args)
    out = Path(args.out) if args.out else run_dir / f"detector-card-{args.detector.replace(':', '-')}-{args.norm}"
    ckpt = checkpoint.load(run_dir, device=resolve(args.device))
    out.mkdir(parents=True, exist_ok=True)
    check_writable_dir(out, "output folder")
    clf = ckpt.classifier
    ds = data.load_for_run(ckpt.config, ckpt.meta.get("dataset"), dataset=args.dataset if not args.model else None,
                           data_dir=args.data_dir, data_file=args.data_file, model=clf)
    n_cal = calibration_slice(len(ds.x_test), opts.calibration_size)
    n_free = len(ds.x_test) - n_cal  # the held-out images sit at the end of the test split
    indices = attack_store.choose_images(n_free, args.n, args.seed)
    x, y, x_held = ds.test_images()[indices], ds.y_test[indices], ds.test_images()[n_free:]
    detector = args.detector if user else calibrated_detector(ckpt, run_dir, args.detector, opts)
    card = evaluate_detector(clf, detector, x, y, x_heldout=x_held, norm=args.norm, eps=args.eps, fpr=args.fpr,
                             version=version, threshold=args.threshold, settings=settings or None, steps=args.steps,
                             seed=args.seed, batch_size=args.batch_size, sample=args.sample, out=out,
                             progress=not args.quiet)
    print(f"{card!r} -> {out / 'card.md'}")
    return 0
