"""``rce attack RUN_DIR --attack NAME [--eps E] [--n N] ...``: attack a trained run's test images (SPEC §5, §6).

Images: ``N`` test images chosen by a seeded random permutation of the test set (``--seed``; the original
attacks a randomly shuffled subset, SPEC §5.1, and with a fixed seed every attack and every ε sees the *same*
subset, which removes the original's per-ε resampling, SPEC §11.7); ``--first`` takes the first N in file
order instead. They are attacked in batches of ``--batch-size`` with a progress bar.

Output, in ``RUN_DIR/attacks/<name>-<hash of the settings>/``:
- ``adv.safetensors``: x_adv, success, target (−1 for untargeted attacks), iterations (−1 if not reported),
  indices (into the test set), y, pred_clean, pred_adv;
- ``summary.json``: success rate, target-reached rate, clean/adversarial accuracy, the number of pairs of the
  paper's AUC mask (clean correct and adversarial misclassified, SPEC §4.6), mean L2 (‖x − x*‖₂/√d on the
  [0, 255] scale, SPEC §7) over all images and over the pairs, mean and max L∞, seconds per example, the
  settings and versions.

Resumable: every finished batch is written atomically as ``parts/part-<start>-<end>.safetensors``; a rerun of
the same command skips the parts that exist and merges them at the end. Seeded attacks (noise, C&W) get the
seed ``seed·1000 + batch index`` for each batch, so a resumed batch is the same batch.

``cw_wb`` (C&W against K-density, SPEC §6.3) needs the run's detector: the training features (first 50,000
training images, SPEC §4.1), a 1000-per-class kernel with the paper's σ² for the run's objective, its seeded
100-per-class subset, and η per class from that subset (SPEC §4.2-4.4); the command builds them.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

#: first training images used for K-density features (SPEC §4.1: the original's 500 batches of 100)
KD_TRAIN_IMAGES = 50_000
KD_PER_CLASS = 1000
KD_ATTACK_PER_CLASS = 100


def add_parser(sub) -> None:
    p = sub.add_parser("attack", help="attack the test images of a trained run (FGSM, BIM, ILCM, JSMA, C&W, ...)")
    p.add_argument("run_dir")
    p.add_argument("--attack", required=True, help="attack name: fgsm, bim, ilcm, jsma, noise, cw, cw_hc, cw_wb")
    p.add_argument("--eps", type=float, help="L∞ budget / step on the [0, 1] scale (gradient attacks, JSMA, noise)")
    p.add_argument("--n", type=int, default=1000, help="number of test images (default 1000, as the paper)")
    p.add_argument("--batch-size", type=int, default=200, help="images per batch and per part file (default 200)")
    p.add_argument("--seed", type=int, default=0, help="seed of the image choice and of seeded attacks")
    p.add_argument("--first", action="store_true", help="take the first N test images instead of a seeded subset")
    p.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                   help="an attack setting, e.g. --set steps=20 --set saliency=\"pairwise\"")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N")
    p.add_argument("--force", action="store_true", help="recompute even if the result exists")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def parse_settings(items: list[str]) -> dict:
    from ..config import parse_value
    from ..errors import ConfigError

    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, text = item.split("=", 1)
        out[key.strip()] = parse_value(text.strip())
    return out


def select(n_test: int, n: int, seed: int, first: bool):
    """Indices of the attacked test images (see the module docstring)."""
    import torch

    if first:
        return torch.arange(min(n, n_test))
    return torch.randperm(n_test, generator=torch.Generator().manual_seed(int(seed)))[:n]


def kd_attack_settings(classifier, ds, objective: str, seed: int, progress: bool) -> dict:
    """density (100-per-class K-density) and eta (Tensor[C]) for C&W-wb, from the run's training features."""
    from .. import features
    from ..detectors.kd import KernelDensity, default_sigma2

    m = min(KD_TRAIN_IMAGES, len(ds.x_train))
    bank = features.extract(classifier, ds.train_images()[:m], ds.y_train[:m], progress=progress)
    kd = KernelDensity.fit(bank.features, bank.labels, classifier.num_classes, per_class=KD_PER_CLASS,
                           sigma2=default_sigma2(objective), seed=seed)
    density = kd.subset(KD_ATTACK_PER_CLASS, seed)
    eta = density.eta(bank.features, bank.labels)
    return {"density": density.to(classifier.device), "eta": eta.to(classifier.device)}


def part_name(start: int, end: int) -> str:
    return f"part-{start:07d}-{end:07d}.safetensors"


def attack_batch(attack, classifier, x, y, indices) -> tuple[dict, float]:
    """Run ``attack`` on one batch; the tensors of its part file and the seconds it took."""
    import torch

    device = classifier.device
    xb, yb = x.to(device), y.to(device)
    t0 = time.perf_counter()
    res = attack(classifier, xb, yb)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        pred_clean, pred_adv = classifier.predict(xb), classifier.predict(res.x_adv.to(device))
    n = len(xb)

    def full(v):  # -1 where the attack reports no target / iteration count
        return torch.full((n,), -1, dtype=torch.long) if v is None else v.detach().cpu().long()

    return {
        "x_adv": res.x_adv.detach().cpu().float(),
        "success": res.success.detach().cpu().bool(),
        "target": full(res.target),
        "iterations": full(res.iterations),
        "indices": indices.cpu().long(),
        "y": y.cpu().long(),
        "pred_clean": pred_clean.cpu().long(),
        "pred_adv": pred_adv.cpu().long(),
    }, seconds


def summarize(t: dict, x_clean, seconds: float) -> dict:
    from ..attacks.base import l2_distortion

    n = len(t["y"])
    if n == 0:
        return {"n": 0}
    l2 = l2_distortion(x_clean, t["x_adv"])
    linf = (t["x_adv"] - x_clean).flatten(1).abs().amax(1)
    pairs = (t["pred_clean"] == t["y"]) & (t["pred_adv"] != t["y"])
    out = {
        "n": n,
        "success_rate": float(t["success"].float().mean()),
        "clean_accuracy": float((t["pred_clean"] == t["y"]).float().mean()),
        "adversarial_accuracy": float((t["pred_adv"] == t["y"]).float().mean()),
        "n_pairs": int(pairs.sum()),
        "l2_mean": float(l2.mean()),
        "l2_mean_pairs": float(l2[pairs].mean()) if bool(pairs.any()) else None,
        "linf_mean": float(linf.mean()),
        "linf_max": float(linf.max()),
        "seconds": seconds,
        "seconds_per_example": seconds / n,
    }
    if bool((t["target"] >= 0).all()):
        out["target_reached_rate"] = float((t["pred_adv"] == t["target"]).float().mean())
    return out


def run(args) -> int:
    import torch
    from tqdm import tqdm

    from .. import attacks, checkpoint, data
    from ..device import resolve
    from ..errors import ConfigError, InputError
    from ..io import config_hash, load_tensors, save_tensors, versions, write_json

    name = args.attack
    if name not in attacks.REGISTRY:
        raise ConfigError(f"unknown attack {name!r}; choose one of {', '.join(sorted(attacks.REGISTRY))}")
    if args.n < 1 or args.batch_size < 1:
        raise ConfigError(f"--n and --batch-size must be >= 1, got {args.n} and {args.batch_size}")
    settings = parse_settings(args.settings)
    if args.eps is not None:
        settings["eps"] = args.eps
    if name != "cw_wb":
        attacks.create(name, **settings)  # fail early on bad settings, before loading anything
    elif {"density", "eta"} & set(settings):
        raise ConfigError("cw_wb builds density and eta from the run itself; do not pass them with --set")

    run_dir = Path(args.run_dir)
    ckpt = checkpoint.load(run_dir, device=resolve(args.device))
    clf, cfg = ckpt.classifier, ckpt.config
    ds = data.load(cfg.get("dataset", ckpt.meta["dataset"]), data_dir=cfg.get("data_dir") or None,
                   data_file=cfg.get("data_file") or None)
    if ds.channels != clf.in_channels:
        raise InputError(f"dataset {ds.name} has {ds.channels}-channel images but the model takes {clf.in_channels}")
    indices = select(len(ds.x_test), args.n, args.seed, args.first)
    n = len(indices)
    record = {"attack": name, "settings": settings, "n": n, "seed": args.seed,
              "order": "first" if args.first else "seeded-random", "batch_size": args.batch_size,
              "weights_sha256": ckpt.meta["weights_sha256"], "dataset": ds.name}
    if name == "cw_wb":
        record["kd"] = {"train_images": KD_TRAIN_IMAGES, "per_class": KD_PER_CLASS,
                        "attack_per_class": KD_ATTACK_PER_CLASS, "objective": clf.objective}
    out = run_dir / "attacks" / f"{name}-{config_hash(record)}"
    parts_dir = out / "parts"
    if (out / "summary.json").is_file() and (out / "adv.safetensors").is_file() and not args.force:
        print(f"{out} already holds this attack (use --force to recompute)")
        return 0
    if args.force and parts_dir.is_dir():
        for p in parts_dir.glob("part-*.safetensors"):
            p.unlink()

    x_all, y_all = ds.test_images()[indices], ds.y_test[indices]
    spans = [(s, min(s + args.batch_size, n)) for s in range(0, n, args.batch_size)]
    todo = [b for b, (s, e) in enumerate(spans) if not (parts_dir / part_name(s, e)).is_file()]
    base = attacks.create(name, **settings) if name != "cw_wb" or not todo else None
    if name == "cw_wb" and todo:
        base = attacks.create(name, **settings, **kd_attack_settings(clf, ds, clf.objective, args.seed,
                                                                      progress=not args.quiet))
    seeded = base is not None and dataclasses.is_dataclass(base) and "seed" in {f.name for f in
                                                                                dataclasses.fields(base)}
    seed0 = int(settings.get("seed", args.seed))
    bar = tqdm(total=n, initial=n - sum(spans[b][1] - spans[b][0] for b in todo), unit="img",
               desc=f"{name} on {run_dir.name}", disable=args.quiet)
    for b in todo:
        s, e = spans[b]
        attack = dataclasses.replace(base, seed=seed0 * 1000 + b) if seeded else base
        tensors, seconds = attack_batch(attack, clf, x_all[s:e], y_all[s:e], indices[s:e])
        save_tensors(parts_dir / part_name(s, e), tensors, metadata={"seconds": repr(seconds)})
        bar.update(e - s)
    bar.close()

    from safetensors import safe_open

    parts, seconds = [], 0.0
    for s, e in spans:
        path = parts_dir / part_name(s, e)
        parts.append(load_tensors(path, "attack part"))
        with safe_open(str(path), "pt") as f:
            seconds += float((f.metadata() or {}).get("seconds", "nan"))
    merged = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
    if not torch.equal(merged["indices"], indices):
        raise ConfigError(f"the part files in {parts_dir} do not belong to this image selection; use --force")
    save_tensors(out / "adv.safetensors", merged)
    summary = {"attack": name, "hash": out.name.rsplit("-", 1)[1], **{k: v for k, v in record.items() if k != "attack"},
               "arch": ckpt.meta["arch"], "objective": clf.objective, "device": str(clf.device),
               **summarize(merged, x_all, seconds), "versions": versions()}
    write_json(out / "summary.json", summary)
    rate = summary.get("success_rate", float("nan"))
    print(f"{name} on {run_dir.name}: success {rate:.3f}, mean L2 {summary.get('l2_mean', float('nan')):.2f}, "
          f"n={n}, {summary.get('seconds_per_example', float('nan')):.3g} s/example -> {out}")
    return 0
