"""Attack speed (the paper's Table 5) on one small MNIST model, side by side with the peers in one run.

Trains (once, cached in ``--run-dir``) a ResNet-8 on the embedded ``mnist5k`` with the ``cpu-mnist5k-ce`` preset,
then on the same test images times every registered attack (seconds per example, mean L2 distortion on the
paper's [0, 255]/√d scale over successful examples, success rate) and, where a peer has the attack, the peer:

- FGSM / BIM   vs foolbox ``FGSM`` / ``LinfBasicIterativeAttack`` (same ε, 10 steps of ε/10, label = prediction);
- JSMA         vs ART ``SaliencyMapMethod`` (theta = ε, gamma so that at most 100 features change, the same
                least-likely targets);
- C&W          vs foolbox ``L2CarliniWagnerAttack``, both UNTARGETED (foolbox's targeted mode needs a criterion
                object) with the same binary-search steps, iterations, step size 0.01, κ = 0, c₀ = 1, abort-early.

Ratios are peer seconds / our seconds (> 1: we are faster). Usage::

    python benchmarks/attack_speed.py --n-images 100 --cw-steps 5 --cw-iterations 100 --json results.json
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

import torch

from rcedetect import attacks, checkpoint, data
from rcedetect.attacks import REGISTRY, create, l2_distortion
from rcedetect.config import train_config_from_preset
from rcedetect.errors import CheckpointError
from rcedetect.training import fit

ORDER = ("fgsm", "bim", "ilcm", "jsma", "cw", "cw_hc", "cw_wb", "noise")


def load_or_train(run_dir: Path, preset: str):
    try:
        return checkpoint.load(run_dir).classifier
    except CheckpointError:
        print(f"training {preset} into {run_dir} (once) ...")
        fit(train_config_from_preset(preset, ["device=cpu"]), run_dir, progress=True)
        return checkpoint.load(run_dir).classifier


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def summary(name: str, impl: str, x, x_adv, success, seconds: float, **more) -> dict:
    success = success.bool().cpu()
    l2 = l2_distortion(x.cpu(), x_adv.cpu())
    return {"attack": name, "impl": impl, "n": len(x), "sec_per_example": seconds / len(x),
            "mean_l2": float(l2[success].mean()) if success.any() else math.nan,
            "success_rate": float(success.float().mean()), **more}


def kd_settings(classifier, ds, seed: int) -> dict:
    """C&W-wb's detector term: the run's K-density detector with the paper's kernel sizes (protocol §4.2, §4.4)."""
    from rcedetect.detectors import Detector

    term = Detector(classifier, "kd", seed=seed).fit(ds.train_images(), ds.y_train).attack_term()
    return {"detector": term}


def our_settings(name: str, args, wb: dict) -> dict:
    cw = {"binary_search_steps": args.cw_steps, "max_iterations": args.cw_iterations, "seed": args.seed}
    return {
        "fgsm": {"eps": args.eps}, "bim": {"eps": args.eps}, "ilcm": {"eps": args.eps},
        "jsma": {"eps": args.eps}, "noise": {"eps": args.eps, "seed": args.seed},
        "cw": cw, "cw_hc": cw, "cw_wb": {**cw, **wb},
    }.get(name, {})


def peers(args, classifier, x, pred, ours: dict) -> list[dict]:
    rows = []
    try:
        import foolbox as fb
    except ImportError:
        fb = None
        print("foolbox not installed: no foolbox rows")
    if fb is not None:
        model = fb.PyTorchModel(classifier, bounds=(0, 1))  # Classifier.forward = effective logits
        crit = fb.criteria.Misclassification(pred)
        for name, attack in (("fgsm", fb.attacks.FGSM()),
                             ("bim", fb.attacks.LinfBasicIterativeAttack(rel_stepsize=0.1, steps=10,
                                                                         random_start=False))):
            (_, clipped, ok), s = timed(lambda: attack(model, x, crit, epsilons=args.eps))
            rows.append(summary(name, "foolbox", x, clipped, ok, s))
        attack = fb.attacks.L2CarliniWagnerAttack(binary_search_steps=args.cw_steps, steps=args.cw_iterations,
                                                  stepsize=0.01, confidence=0, initial_const=1, abort_early=True)
        (raw, _, ok), s = timed(lambda: attack(model, x, crit, epsilons=None))
        # foolbox returns an all-zero image where it found nothing, and reports it as a success whenever the
        # zero image happens to be misclassified: count only real finds
        ok = ok & (raw != 0).flatten(1).any(1)
        row = summary("cw_untargeted", "foolbox", x, raw, ok, s)
        both = ok.cpu() & ours["cw_untargeted"]["_success"]
        row["mean_l2_both"] = float(l2_distortion(x, raw).cpu()[both].mean())
        ours["cw_untargeted"]["row"]["mean_l2_both"] = float(ours["cw_untargeted"]["_l2"][both].mean())
        rows.append(row)
    if "jsma" in ours:
        try:
            from art.attacks.evasion import SaliencyMapMethod
            from art.estimators.classification import PyTorchClassifier
        except ImportError:
            print("adversarial-robustness-toolbox not installed: no ART row")
            return rows
        art_clf = PyTorchClassifier(classifier, torch.nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]),
                                    nb_classes=classifier.num_classes, clip_values=(0.0, 1.0), device_type="cpu")
        d = x[0].numel()
        smm = SaliencyMapMethod(art_clf, theta=args.eps, gamma=args.jsma_features / d, batch_size=len(x),
                                verbose=False)
        target = ours["jsma"]["_target"]
        onehot = torch.nn.functional.one_hot(target, classifier.num_classes).numpy().astype("float32")
        x_art, s = timed(lambda: smm.generate(x.cpu().numpy(), y=onehot))
        x_art = torch.from_numpy(x_art)
        with torch.no_grad():
            pred_adv = classifier.predict(x_art)
        changed = (x_art != x.cpu()).flatten(1).sum(1)
        rows.append(summary("jsma", "ART", x, x_art, pred_adv != pred.cpu(), s,
                            target_reached=float((pred_adv == target).float().mean()),
                            max_features_changed=int(changed.max())))
    return rows


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run-dir", default="runs/bench-model", help="cache folder of the trained model")
    p.add_argument("--preset", default="cpu-mnist5k-ce")
    p.add_argument("--n-images", type=int, default=100)
    p.add_argument("--eps", type=float, default=0.16, help="ε of FGSM/BIM/ILCM/JSMA/noise (protocol 'Decisions')")
    p.add_argument("--cw-steps", type=int, default=5, help="C&W binary-search steps (paper: 9)")
    p.add_argument("--cw-iterations", type=int, default=100, help="C&W iterations per step (paper: 10,000)")
    p.add_argument("--jsma-features", type=int, default=100, help="at most this many features changed")
    p.add_argument("--attacks", nargs="*", default=None, help="subset of registered attacks (default: all)")
    p.add_argument("--no-peers", action="store_true")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="write the rows here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    classifier = load_or_train(Path(args.run_dir), args.preset)
    ds = data.load("mnist5k")
    x = ds.test_images()[: args.n_images]
    with torch.no_grad():
        pred = classifier.predict(x)
    print(f"model: {args.run_dir} (clean accuracy on these {len(x)} images: "
          f"{float((pred == ds.y_test[: len(x)]).float().mean()):.3f}); torch threads: {torch.get_num_threads()}")

    names = [n for n in ORDER if n in REGISTRY] + sorted(set(REGISTRY) - set(ORDER))
    if args.attacks:
        names = [n for n in names if n in args.attacks]
    wb = kd_settings(classifier, ds, args.seed) if "cw_wb" in names else {}
    rows, ours = [], {}
    create("fgsm", eps=args.eps)(classifier, x[:2]) if "fgsm" in REGISTRY else None  # warm-up
    for name in names:
        attack = create(name, **our_settings(name, args, wb))
        res, s = timed(lambda: attack(classifier, x))
        more = {}
        if name == "cw_wb":
            from rcedetect.scoring import table3_stats

            st = table3_stats(res, ds.y_test[: len(x)], pred)
            more = {"ratio_f2_positive": st["ratio_f2_positive"]}
        row = summary(name, "rcedetect", x, res.x_adv, res.success, s, **more)
        rows.append(row)
        ours[name] = {"row": row, "_success": res.success.cpu(), "_l2": res.l2.cpu(), "_target": res.target}
        print(f"  {name:14s} {row['sec_per_example']:.4g} s/example")
    if "cw" in names and not args.no_peers:
        attack = create("cw", mode="untargeted", binary_search_steps=args.cw_steps,
                        max_iterations=args.cw_iterations)
        res, s = timed(lambda: attack(classifier, x, pred))
        row = summary("cw_untargeted", "rcedetect", x, res.x_adv, res.success, s)
        rows.append(row)
        ours["cw_untargeted"] = {"row": row, "_success": res.success.cpu(), "_l2": res.l2.cpu()}
    if not args.no_peers:
        rows += peers(args, classifier, x, pred, ours)

    ratios = {}
    for r in rows:
        if r["impl"] != "rcedetect" and r["attack"] in ours:
            ratios[f"{r['attack']} vs {r['impl']}"] = r["sec_per_example"] / ours[r["attack"]]["row"]["sec_per_example"]
    print(f"\nattack speed on {len(x)} mnist5k test images; machine: {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} torch threads; C&W: {args.cw_steps} search steps x {args.cw_iterations} "
          f"iterations; eps={args.eps}")
    print(f"{'attack':16s}{'impl':11s}{'s/example':>11s}{'mean L2':>9s}{'L2 both':>9s}{'success':>9s}")
    for r in rows:
        both = r.get("mean_l2_both")
        print(f"{r['attack']:16s}{r['impl']:11s}{r['sec_per_example']:11.4g}{r['mean_l2']:9.2f}"
              f"{(f'{both:9.2f}' if both is not None else ' ' * 9)}{r['success_rate']:9.2f}"
              + (f"   ratio f2>0 = {r['ratio_f2_positive']:.2f}" if "ratio_f2_positive" in r else "")
              + (f"   max features changed = {r['max_features_changed']}" if "max_features_changed" in r else ""))
    print("\nspeed ratios (peer seconds / ours; > 1 = ours faster):")
    for k, v in ratios.items():
        print(f"  {k:24s} {v:8.2f}x")
    out = {"settings": vars(args), "rows": rows, "ratios": ratios, "torch": torch.__version__,
           "attacks_module": attacks.__name__}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
        print(f"wrote {args.json}")
    return out


if __name__ == "__main__":
    main()
