"""RCE against CE at equal steps: test accuracy over training, what makes RCE RCE, and time to accuracy.

Each variant is a training preset plus ``--set``-style overrides; every variant is trained once per seed and
measured the same way:

- ``test_accuracy`` at the end and at every ``eval_every`` step (the curve behind time to accuracy);
- ``non_me``: the clean test images' mean non-maximal entropy (paper eq. 1), near log(L - 1) for an RCE model;
- ``kd_auc``: the K-density AUC (paper §3.3; σ² the paper's value for the objective) of FGSM and BIM examples at
  ``--eps`` on ``--attack-images`` clean-correct test images (pairs as in protocol §4.6);
- ``steps_to`` / ``seconds_to``: the first evaluated step (and its share of the training time) at which the
  variant reaches the reference variant's final accuracy minus ``--margin`` (protocol §21).

Prints one JSON line per trained model and a summary table (mean over seeds, min and max; steps and seconds to
the target, and their ratio to the reference's); ``--out`` keeps the records. ``--suite`` runs the comparison of
protocol §22 at a preset's budget (CE, RCE with the recipe, RCE at the paper's rates)::

    python benchmarks/rce_recipe.py --suite mnist5k --seeds 0 1 2          # the demo's budget, embedded data
    python benchmarks/rce_recipe.py --suite mnist --data-dir DIR            # mnist-cpu's budget, DIR/MNIST/raw
    python benchmarks/rce_recipe.py --suite cifar10 --data-file F.npz       # cifar10-cpu's budget
    python benchmarks/rce_recipe.py --suite classes100 --seeds 0 1 2       # the generated 100-class set (§16.5)
    python benchmarks/rce_recipe.py --write-classes100 many100.npz          # that set, to train on yourself

or any variants by hand (the first is the reference)::

    python benchmarks/rce_recipe.py --preset cpu-mnist5k-ce --variant ce:objective=ce \\
        --variant rce3:objective=rce,rce_lr_scale=3
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from rcedetect import attacks, data
from rcedetect.core.errors import TrainingError
from rcedetect.detectors.baselines import non_me
from rcedetect.detectors.threshold import Detector
from rcedetect.stats import metrics
from rcedetect.training import fit
from rcedetect.training.config import train_config_from_preset


def parse_variant(text: str) -> tuple[str, list[str]]:
    """``name:key=value,key=value`` (a value may be a TOML list with commas inside brackets)."""
    name, _, rest = text.partition(":")
    overrides, depth, cur = [], 0, ""
    for ch in rest:
        depth += ch == "["
        depth -= ch == "]"
        if ch == "," and depth == 0:
            overrides.append(cur)
            cur = ""
        else:
            cur += ch
    if cur:
        overrides.append(cur)
    return name, overrides


def detection_aucs(classifier, ds, eps: float, n: int, per_class: int) -> dict[str, float]:
    """K-density AUC of FGSM and BIM at ``eps`` on the first ``n`` test images."""
    det = Detector(classifier, "kd", per_class=per_class).fit(data.to_float(ds.x_train), ds.y_train)
    x, y = data.to_float(ds.x_test[:n]), ds.y_test[:n]
    clean_pred = classifier.predict(x)
    s_clean = det.score(x)
    out = {}
    for name in ("fgsm", "bim"):
        res = attacks.create(name, eps=eps)(classifier, x, y)
        mask = metrics.pair_mask(y.numpy(), clean_pred.cpu().numpy(), classifier.predict(res.x_adv).cpu().numpy())
        s_adv = det.score(res.x_adv)
        out[name] = round(metrics.auc(s_clean.numpy()[mask], s_adv.numpy()[mask]), 4) if mask.any() else math.nan
        out[f"{name}_pairs"] = int(mask.sum())
    return out


def train_one(preset: str, overrides: list[str], seed: int, args) -> dict:
    cfg = train_config_from_preset(preset, [*args.set, *overrides, f"seed={seed}", f"eval_every={args.eval_every}"])
    ds = data.load(cfg.dataset, data_dir=cfg.data_dir or None, data_file=cfg.data_file or None)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        try:
            clf = fit(cfg, tmp, dataset=ds, progress=False)
        except TrainingError as e:  # a diverged variant is a result: accuracy 0, said so
            print(f"{cfg.objective} seed {seed} {' '.join(overrides)}: {e}", file=sys.stderr)
            return {"objective": cfg.objective, "seed": seed, "steps": cfg.steps, "test_accuracy": 0.0, "curve": [],
                    "diverged": True, "seconds": round(time.perf_counter() - t0, 1)}
        seconds = time.perf_counter() - t0
        log = json.loads((Path(tmp) / "checkpoint.json").read_text())["metrics"]["log"] \
            if (Path(tmp) / "checkpoint.json").exists() else []
    with torch.no_grad():
        xs = data.to_float(ds.x_test[:2000])
        ent = non_me(clf.logits(xs)).mean().item()
    rec = {"objective": cfg.objective, "seed": seed, "steps": cfg.steps, "seconds": round(seconds, 1),
           "test_accuracy": log[-1]["test_accuracy"] if log else None,
           "curve": [(e["step"], round(e["test_accuracy"], 4)) for e in log],
           "non_me": round(ent, 4), "non_me_max": round(math.log(clf.num_classes - 1), 4)}
    if args.attack_images:
        rec["kd_auc"] = detection_aucs(clf, ds, args.eps, args.attack_images, args.per_class)
    return rec


def non_me_cell(rs: list[dict]) -> str:
    ok = [r["non_me"] for r in rs if "non_me" in r]
    diverged = len(rs) - len(ok)
    return (f"{statistics.mean(ok):.3f}" if ok else "—") + (f" ({diverged} diverged)" if diverged else "")


def steps_to(curve, target: float):
    return next((s for s, a in curve if a >= target), None)


#: the comparisons of protocol §22: (training preset, settings for every variant, eval_every)
SUITES = {
    "mnist5k": ("cpu-mnist5k-ce", [], 100),
    "mnist": ("cpu-mnist5k-ce", ["dataset=mnist", "steps=3000", "batch_size=128", "lr_boundaries=[2000,2600]"], 250),
    "cifar10": ("cpu-cifar10-ce", [], 500),
    "classes100": ("cpu-mnist5k-ce", ["steps=400", "batch_size=64", "lr_boundaries=[240,340]"], 50),
}


def many_classes(path: Path, classes: int = 100, train: int = 40, test: int = 10, side: int = 16,
                 noise: float = 100.0, seed: int = 0) -> Path:
    """The generated set of protocol §16.5 as a ``.npz``: one random binary ``side`` × ``side`` pattern per class
    (grey levels 48 and 208) plus Gaussian noise of ``noise`` grey levels, clipped to uint8; ``train`` and ``test``
    images per class, shuffled. The same ``seed`` gives the same file."""
    g = np.random.default_rng(seed)
    protos = g.uniform(0, 1, size=(classes, side, side)) > 0.5

    def draw(per_class: int):
        y = np.repeat(np.arange(classes), per_class)
        g.shuffle(y)
        x = protos[y] * 160.0 + 48.0 + g.normal(0, noise, size=(len(y), side, side))
        return np.clip(x, 0, 255).astype(np.uint8), y

    (x_train, y_train), (x_test, y_test) = draw(train), draw(test)
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return path
SUITE_VARIANTS = ["ce:objective=ce", "rce:objective=rce", "rce_paper:objective=rce,rce_lr_scale=1"]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", choices=sorted(SUITES), help="CE vs RCE (recipe) vs RCE (paper rates) at a budget")
    p.add_argument("--preset", help="the training preset every variant starts from")
    p.add_argument("--variant", action="append", default=[], help="name:key=value,... (first = reference)")
    p.add_argument("--data-dir", default="", help="dataset folder (torchvision layout)")
    p.add_argument("--data-file", default="", help=".npz dataset (dataset=npz)")
    p.add_argument("--set", action="append", default=[], help="overrides for every variant")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--eps", type=float, default=0.1)
    p.add_argument("--attack-images", type=int, default=200, help="0 = no detection AUCs")
    p.add_argument("--per-class", type=int, default=1000)
    p.add_argument("--margin", type=float, default=0.01, help="time to the reference's final accuracy minus this")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", default="")
    p.add_argument("--write-classes100", metavar="FILE.npz", help="write the generated 100-class set and stop")
    args = p.parse_args(argv)
    if args.write_classes100:
        print(many_classes(Path(args.write_classes100)))
        return
    if args.suite:
        args.preset, extra, every = SUITES[args.suite]
        args.set = [*extra, *args.set]
        args.variant = args.variant or SUITE_VARIANTS
        args.eval_every = every if args.eval_every == 100 else args.eval_every
    if not args.preset or not args.variant:
        p.error("give --suite, or --preset and at least one --variant")
    if args.suite == "classes100" and not args.data_file:
        args.data_file = str(many_classes(Path(tempfile.mkdtemp()) / "classes100.npz"))
    if args.data_dir:
        args.set.append(f"data_dir={args.data_dir}")
    if args.data_file:
        args.set += ["dataset=npz", f"data_file={args.data_file}"]
    if args.threads:
        torch.set_num_threads(args.threads)
    records = []
    for text in args.variant:
        name, overrides = parse_variant(text)
        for seed in args.seeds:
            rec = {"variant": name, "overrides": overrides, **train_one(args.preset, overrides, seed, args)}
            records.append(rec)
            print(json.dumps(rec), flush=True)
            if args.out:
                Path(args.out).write_text(json.dumps(records, indent=1))
    ref = args.variant and parse_variant(args.variant[0])[0]
    ref_acc = statistics.mean(r["test_accuracy"] for r in records if r["variant"] == ref)
    target = ref_acc - args.margin
    print(f"\nreference {ref}: mean final accuracy {ref_acc:.4f}; target {target:.4f}", file=sys.stderr)
    print("| variant | seeds | test acc % (mean [min, max]) | non-ME | KD AUC FGSM | KD AUC BIM | steps to target | "
          "seconds to target | s/step |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|")
    names = list(dict.fromkeys(r["variant"] for r in records))
    ref_steps = ref_secs = None
    for name in names:
        rs = [r for r in records if r["variant"] == name]
        acc = [100 * r["test_accuracy"] for r in rs]
        st = [steps_to(r["curve"], target) for r in rs]
        reached = [s for s in st if s is not None]
        med_steps = statistics.median(reached) if len(reached) == len(st) else None
        secs = [s * r["seconds"] / r["steps"] for s, r in zip(st, rs) if s is not None]
        med_secs = statistics.median(secs) if len(secs) == len(st) else None
        if name == ref:
            ref_steps, ref_secs = med_steps, med_secs
        ratio = f" ({med_steps / ref_steps:.2f}×)" if med_steps and ref_steps else ""
        sratio = f"{med_secs:.0f} ({med_secs / ref_secs:.2f}×)" if med_secs and ref_secs else "not reached"
        kd = {k: [r["kd_auc"][k] for r in rs if "kd_auc" in r] for k in ("fgsm", "bim")}
        cell = {k: f"{100 * statistics.mean(v):.1f}" if v else "—" for k, v in kd.items()}
        print(f"| {name} | {len(rs)} | {statistics.mean(acc):.2f} [{min(acc):.2f}, {max(acc):.2f}] | "
              f"{non_me_cell(rs)} | {cell['fgsm']} | {cell['bim']} | "
              f"{med_steps if med_steps else 'not reached'}{ratio} | {sratio} | "
              f"{statistics.mean(r['seconds'] / r['steps'] for r in rs):.3f} |")


if __name__ == "__main__":
    main()
