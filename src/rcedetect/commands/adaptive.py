"""``rce adaptive RUN_DIR --attack orthogonal_pgd --metric kd --eps 0.1 [--n N] ...``: an attack that knows the
detector, on a user's own trained run.

The run's detector must be calibrated first (``rce calibrate RUN_DIR --metric kd``): its threshold T rejects a
chosen share of clean held-out images (the end of the test split). The attack gets the detector term score − T
(the detector as deployed) and attacks ``N`` test images drawn by a seeded permutation of the images *before*
the calibration ones; the output is the same part files as ``rce attack`` plus ``summary.json`` with the operating
point: SR@N (attacked, clean-correct images that end misclassified AND accepted), TPR, robust accuracy with
rejection and bootstrap intervals (:mod:`rcedetect.stats.operating_point`), and the classifier's robust accuracy alone.

``--attack torchattacks:NAME`` (or ``foolbox:NAME``) runs a library's attack, unchanged and with the true labels, on
the defended K+1-class model (:func:`rcedetect.detectors.defended.defend`, Carlini & Wagner 2017); ``--set on="classifier"``
runs it on the classifier alone (e.g. AutoAttack's robust accuracy); its other ``--set`` settings are the keyword
arguments of the library's class. Success is counted by the detector's verdict, as for every attack here.
"""

from __future__ import annotations

from pathlib import Path

from ..core.settings import int64_arg, seed_arg


def add_parser(sub) -> None:
    p = sub.add_parser("adaptive", help="attack a run's classifier AND its calibrated detector (SR@N, robust acc.)",
                       description=(
                           "Attack a trained run's classifier and its calibrated detector together (an attacker who "
                           "knows the detector) and report, with bootstrap 95 % intervals: SR@5, the attack success "
                           "rate at 5 % FPR = the share of attacked images, correct when clean, that end "
                           "misclassified AND accepted by the detector at the threshold that rejects 5 % of clean "
                           "held-out images (SR@N with another --fpr of rce calibrate); and robust accuracy with "
                           "rejection (Tramèr 2022) = the share of attacked images that are classified right or "
                           "rejected. Calibrate the detector first: rce calibrate RUN_DIR --metric NAME."))
    p.add_argument("run_dir", metavar="RUN_DIR", help="a trained run folder with a calibrated detector (rce calibrate)")
    p.add_argument("--attack", required=True,
                   help="pgd_detector, orthogonal_pgd, selective_pgd, feature_pgd, cw_wb, random_search_detector, or "
                        "a library's attack on the defended K+1-class model: torchattacks:NAME (e.g. "
                        "torchattacks:APGD, torchattacks:AutoAttack), foolbox:NAME")
    p.add_argument("--metric", required=True, help="the calibrated detector to attack (see rce calibrate)")
    p.add_argument("--eps", type=float, help="L∞ budget on the [0, 1] scale (an L2 radius with --set norm=\"l2\")")
    p.add_argument("--n", "--images", dest="n", type=int64_arg, default=500,
                   help="number of test images (default 500; --images under torchrun, whose own options take --n)")
    p.add_argument("--batch-size", type=int64_arg, default=100, help="images per attack batch (one part file each)")
    p.add_argument("--seed", type=seed_arg, default=0, help="seed of the image choice and of each batch's attack")
    p.add_argument("--bootstrap", type=int64_arg, default=1000, help="bootstrap resamples for the intervals (0: none)")
    p.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                   help="an attack setting, e.g. --set steps=200 --set lambdas=[0,10,100]")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N")
    p.add_argument("--force", action="store_true", help="recompute even if the result exists")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def run(args) -> int:
    from tqdm import tqdm

    from .. import attacks, data
    from ..attacks.base import check_eps, check_number
    from ..attacks.thirdparty import attack_norm
    from ..core.device import resolve
    from ..core.errors import ConfigError
    from ..core.io import check_writable_dir, config_hash, versions, write_json
    from ..detectors import Detector, ScoreTerm, check_metric, score_any
    from ..evaluation import attack_store
    from ..evaluation.detector_runs import adaptive_attack
    from ..evaluation.detector_sanity import gradient_status, term_gradients
    from ..models import checkpoint, features
    from ..models.classifier import FINAL
    from .attack import parse_settings

    spec = attacks.spec(args.attack)
    settings = parse_settings(args.settings)
    if args.n < 1 or args.batch_size < 1 or args.bootstrap < 0:
        raise ConfigError(f"--n and --batch-size must be >= 1 and --bootstrap >= 0, got {args.n}, {args.batch_size}, "
                          f"{args.bootstrap}")
    if "eps" in settings:  # one budget, said once: --set eps beside --eps would be overridden yet hashed
        raise ConfigError("give the budget with --eps, not --set eps")
    if "detector" in settings or "detector" not in spec.fields:
        raise ConfigError(f"{args.attack} is not an attack on a detector"
                          if "detector" not in spec.fields else "the detector comes from the run; drop --set detector")
    if args.eps is not None:
        check_eps(check_number(args.eps, "--eps", "> 0"), "--eps", attack_norm(args.attack, settings))
    if spec.takes_eps and args.eps is None:
        raise ConfigError(f"{args.attack} needs --eps")
    attack_store.probe(args.attack, settings, args.eps, args.seed)  # bad settings (λ < 0, ...) fail here

    check_metric(args.metric)  # an unknown name is a clear error, not a missing folder
    run_dir = Path(args.run_dir)
    folder = run_dir / f"detector-{args.metric}"
    if not (folder / "detector.json").is_file():
        raise ConfigError(f"{run_dir} has no calibrated {args.metric} detector; run "
                          f"`rce calibrate {run_dir} --metric {args.metric}` first")
    ckpt = checkpoint.load(run_dir, device=resolve(args.device))
    check_writable_dir(run_dir, "run folder")  # what this command writes goes there: fail before the work
    clf = ckpt.classifier
    det = Detector.load(folder, clf)
    if not det.calibrated or not det.n_calibration:
        raise ConfigError(f"the {args.metric} detector in {folder} has no threshold; run rce calibrate first")
    ds = data.load_for_run(ckpt.config, ckpt.meta.get("dataset"), model=clf)
    n_free = len(ds.x_test) - det.n_calibration  # the calibration images sit at the end of the test split
    indices = attack_store.choose_images(n_free, args.n, args.seed)
    x, y = ds.test_images()[indices], ds.y_test[indices]
    if not bool((clf.predict_batched(x) == y).any()):  # SR@N counts clean-correct images: refuse before the attack
        raise ConfigError(f"none of the {len(indices)} chosen test images is classified correctly, so the attack "
                          "has nothing to measure (SR@N counts clean-correct images); check the run and its data")
    term = ScoreTerm(det.scorer, det.threshold)
    if gradient_status(term_gradients(clf, term, x[: min(8, len(x))])) in ("none", "non_finite"):
        raise ConfigError("this detector's score has no finite, non-zero input gradient; a gradient attack is blind")

    record = {"attack": args.attack, "metric": args.metric, "eps": args.eps, "settings": settings, "n": len(indices),
              "seed": args.seed, "batch_size": args.batch_size, "weights_sha256": ckpt.meta["weights_sha256"],
              "threshold": det.threshold, "fpr": det.fpr, "n_calibration": det.n_calibration, "dataset": ds.name}
    out = run_dir / "adaptive" / f"{args.metric}-{args.attack.replace(':', '-')}-{config_hash(record)}"
    if attack_store.finished_output(out, args.force):
        print(f"{out} already holds this attack (use --force to recompute)")
        return 0
    n, layers = len(indices), [n for n in det.scorer.layers if n != FINAL]
    x_held = ds.test_images()[n_free:]
    heldout = score_any(det.scorer, clf, features.extract(clf, x_held, layers=layers), x_held)
    with tqdm(total=n, unit="img", desc=f"{args.attack} vs {args.metric}", disable=args.quiet) as bar:
        _, seconds, j = adaptive_attack(out, args.attack, settings, args.eps, args.seed, term, clf, x, y,
                                        args.batch_size, heldout=heldout, clean=features.extract(clf, x, y, layers=layers),
                                        fpr=det.fpr, n_boot=args.bootstrap, boot_seed=args.seed, indices=indices,
                                        bar=bar)
    op = j["operating_point"]
    summary = {**record, "operating_point": op, "robust_accuracy": j["robust_accuracy"],  # the classifier alone
               "seconds": seconds, "seconds_per_example": seconds / n, "versions": versions()}
    write_json(out / "summary.json", summary)
    ci = (op.get("bootstrap") or {}).get("attack_success_rate") or [None, None]
    band = f" [{100 * ci[0]:.0f}, {100 * ci[1]:.0f}]" if None not in ci else ""

    def percent(v) -> str:
        return "—" if v is None else f"{100 * v:.1f}%"

    print(f"{args.attack} vs {args.metric} at ε {args.eps}: SR@{100 * det.fpr:g} = "
          f"{percent(op['attack_success_rate'])}{band} of {op['n_clean_correct']} clean-correct images; robust "
          f"accuracy with rejection {percent(op['robust_accuracy_with_rejection'])} -> {out}")
    return 0
