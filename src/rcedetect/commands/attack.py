"""``rce attack RUN_DIR --attack NAME [--eps E] [--n N] [--export FILE.npz] ...``: attack a trained run's test
images (protocol §5, §6).

The same attack run as ``rce reproduce`` (:mod:`rcedetect.evaluation.attack_store`): ``N`` test images chosen by a seeded
random permutation of the test set (``--seed``; ``--first`` takes the first N in file order instead), attacked in
batches of ``--batch-size``, one part file per batch, seeded attacks seeded ``seed · 1000 + batch``.

Output, in ``RUN_DIR/attacks/<name>-<hash of the settings>/``:
- ``part-NNNN.safetensors``: x_adv, success, iterations, target (targeted attacks), the attack's extras, the
  labels y and the test-set indices of the batch's images (read them back with
  :func:`rcedetect.evaluation.attack_store.load_parts` or :func:`rcedetect.evaluation.transfer.load_adversarial`);
- ``summary.json``: the scored record of :func:`rcedetect.evaluation.scoring.score_attack` (success rate, clean and
  adversarial accuracy, the pairs of the paper's AUC mask, mean L2 over the pairs, the AUCs of the detectors that
  need no fitting), mean and max L∞, seconds per example, the settings and versions.

``--export FILE.npz`` also writes the examples to one portable file of plain arrays (x_adv, y, indices, success,
success_8bit: whether a success survives rounding to 8 bits; :mod:`rcedetect.evaluation.adv_export`), checked writable
before the attack starts; ``rce detect --input`` reads it, or the folder itself.

Resumable: a rerun of the same command skips the parts that exist.

Attacks that optimise against a detector (``cw_wb``, protocol §6.3) get the run's K-density detector term: the
paper's kernel (1000 per class of the first 50,000 training images, σ² of the run's objective), its seeded
100-per-class subset and η per class (protocol §4.2-4.4), built by :class:`rcedetect.detectors.Detector`.
"""

from __future__ import annotations

import math
from pathlib import Path

from ..core.settings import int64_arg, seed_arg

#: first training images used for the K-density detector (protocol §4.1: the original's 500 batches of 100)
KD_TRAIN_IMAGES = 50_000


class AttackNames:
    """The ``choices`` of ``--attack``: every registered attack (listed in the help), and any ``library:NAME`` of
    :mod:`rcedetect.attacks.thirdparty` (accepted, checked when the attack is built)."""

    def __init__(self) -> None:
        from .. import attacks

        self.names = tuple(attacks.REGISTRY)

    def __contains__(self, name) -> bool:
        return name in self.names or (isinstance(name, str) and ":" in name)

    def __iter__(self):
        return iter(self.names)

    def __call__(self, name: str) -> str:
        """argparse's ``type``: an unknown name is a one-line usage error naming the registered attacks."""
        import argparse

        if name not in self:
            raise argparse.ArgumentTypeError(f"unknown attack {name!r}; choose one of {', '.join(self.names)}")
        return name


def add_parser(sub) -> None:
    names = AttackNames()
    p = sub.add_parser("attack", help="attack the test images of a trained run (FGSM, BIM, ILCM, JSMA, C&W, ...)",
                       description="Craft adversarial examples of a trained run's test images with one attack and "
                                   "save them in RUN_DIR/attacks/, batch by batch (an interrupted run resumes); "
                                   "--export writes them to one portable .npz.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a trained run folder (with checkpoint.json); the attack's "
                   "output goes to RUN_DIR/attacks/<name>-<hash>/")
    p.add_argument("--attack", required=True, type=names, choices=names, metavar="NAME",
                   help="a registered attack: %(choices)s; or torchattacks:NAME / foolbox:NAME")
    p.add_argument("--eps", type=float,
                   help="the attack's budget (or step, for FGSM) ε: an L∞ distance in [0, 1] pixel units, or an L2 "
                        "distance on that scale where the attack's norm setting says l2 (--set norm=\"l2\"); for "
                        "attacks that take one (gradient attacks, PGD variants, JSMA, noise)")
    p.add_argument("--n", "--images", dest="n", type=int64_arg, default=1000,
                   help="number of test images (default 1000, as the paper; --images under torchrun, whose options take --n)")
    p.add_argument("--batch-size", type=int64_arg, default=200, help="images per batch and per part file (default 200)")
    p.add_argument("--seed", type=seed_arg, default=0, help="seed of the image choice and of seeded attacks")
    p.add_argument("--first", action="store_true", help="take the first N test images instead of a seeded subset")
    p.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                   help="an attack setting, e.g. --set steps=20 --set saliency=\"pairwise\"")
    p.add_argument("--export", metavar="FILE.npz",
                   help="also write the adversarial examples to one portable .npz (x_adv, y, indices, success, "
                        "success_8bit, metadata; rcedetect.adv_export), readable by rce detect --input")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N")
    p.add_argument("--force", action="store_true", help="recompute even if the result exists")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def parse_settings(items: list[str]) -> dict:
    from ..core.errors import ConfigError
    from ..training.config import parse_value

    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, text = item.split("=", 1)
        out[key.strip()] = parse_value(text.strip())
    return out


def detector_term(classifier, ds, seed: int, progress: bool):
    """The run's K-density detector term with the paper's settings (protocol §4.2-4.4)."""
    from ..detectors import Detector
    from ..models import features

    m = min(KD_TRAIN_IMAGES, len(ds.x_train))
    bank = features.extract(classifier, ds.train_images()[:m], ds.y_train[:m], progress=progress)
    return Detector(classifier, "kd", seed=seed).fit(bank).attack_term()


def run(args) -> int:
    from tqdm import tqdm

    from .. import attacks, data
    from ..core import distributed
    from ..core.device import resolve
    from ..core.errors import ConfigError
    from ..core.io import check_writable_dir, config_hash, versions, write_json
    from ..detectors import ready_made
    from ..detectors.kd import ATTACK_PER_CLASS, PER_CLASS
    from ..evaluation import attack_store
    from ..evaluation.scoring import score_attack
    from ..models import checkpoint, features

    name = args.attack
    spec = attacks.spec(name)
    if args.n < 1 or args.batch_size < 1:
        raise ConfigError(f"--n and --batch-size must be >= 1, got {args.n} and {args.batch_size}")
    settings = parse_settings(args.settings)
    if args.eps is not None:
        settings["eps"] = args.eps
    if "detector" in settings:
        raise ConfigError(f"{name} builds its detector term from the run itself; do not pass detector with --set")
    attack_store.probe(name, settings, seed=args.seed)  # fail early on bad settings, before loading anything
    if args.export is not None:
        from ..evaluation.adv_export import check_export_path

        check_export_path(args.export)  # a path that cannot take the file fails before the work

    run_dir = Path(args.run_dir)
    ckpt = checkpoint.load(run_dir, device=resolve(args.device))
    check_writable_dir(run_dir, "run folder")  # what this command writes goes there: fail before the work
    clf, cfg = ckpt.classifier, ckpt.config
    ds = data.load_for_run(cfg, ckpt.meta.get("dataset"), model=clf)
    indices = attack_store.choose_images(len(ds.x_test), args.n, args.seed, args.first)
    n = len(indices)
    record = {"attack": name, "settings": settings, "n": n, "seed": args.seed,
              "order": "first" if args.first else "seeded-random", "batch_size": args.batch_size,
              "weights_sha256": ckpt.meta["weights_sha256"], "dataset": ds.name}
    if spec.needs_detector:
        record["detector"] = {"metric": "kd", "train_images": KD_TRAIN_IMAGES, "per_class": PER_CLASS,
                              "attack_per_class": ATTACK_PER_CLASS, "objective": clf.objective}
    out = run_dir / "attacks" / f"{name}-{config_hash(record)}"
    world = distributed.init(clf.device)  # under torchrun the batches are dealt out over the ranks
    distributed.check_shards(math.ceil(n / args.batch_size))
    done = attack_store.finished_output(out, args.force and world.main)
    distributed.barrier()  # a --force deletion happens before any rank writes a part
    if done:
        if world.main:
            print(f"{out} already holds this attack (use --force to recompute)")
            if args.export is not None:
                _export(out, args.export, clf)
        return 0

    x, y = ds.test_images()[indices], ds.y_test[indices]
    if not attack_store.parts_done(out, n, args.batch_size):
        term = detector_term(clf, ds, args.seed, not args.quiet) if spec.needs_detector else None
        factory = attack_store.attack_factory(name, settings, None, args.seed, detector=term)
        with tqdm(total=n, unit="img", desc=f"{name} on {run_dir.name}", disable=args.quiet or not world.main) as bar:
            attack_store.run_parts(out, factory, clf, x, y, args.batch_size, indices=indices, bar=bar)
    if not world.main:
        return 0  # rank 0 reads every part, scores and writes the summary
    res, seconds, stored = attack_store.load_parts(out, n, args.batch_size, x)
    if "indices" not in stored or not stored["indices"].equal(indices):
        raise ConfigError(f"the part files in {out} do not belong to this image selection; use --force")
    scored = score_attack(clf, res, y, features.extract(clf, x, y), ready_made())
    scored.pop("_efficient_l2")
    summary = {"hash": out.name.rsplit("-", 1)[1], **record, "arch": ckpt.meta["arch"], "objective": clf.objective,
               "device": str(clf.device), **scored, "linf_mean": float(res.linf.mean()),
               "linf_max": float(res.linf.max()), "seconds": seconds, "seconds_per_example": seconds / n,
               "versions": versions()}
    write_json(out / "summary.json", summary)
    print(f"{name} on {run_dir.name}: success {summary['success_rate']:.3f}, "
          f"mean L2 over {summary['n_pairs']} pairs {summary['mean_l2'] or float('nan'):.2f}, n={n}, "
          f"{summary['seconds_per_example']:.3g} s/example -> {out}")
    if args.export is not None:
        _export(out, args.export, clf)
    return 0


def _export(out: Path, path: str, classifier) -> None:
    """Write the attack folder ``out`` to the portable ``.npz`` ``path`` and say so in one line."""
    import numpy as np

    from ..evaluation.adv_export import export_attack

    written = export_attack(out, path, classifier)
    with np.load(written, allow_pickle=False) as f:
        n, ok, ok8 = len(f["y"]), int(f["success"].sum()), int(f["success_8bit"].sum())
    print(f"exported {n} adversarial examples ({ok} successes, {ok8} of them survive 8-bit rounding) -> {written}")
