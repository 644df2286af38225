"""Attack speed side by side with the peers, on one small trained MNIST model, in one run.

Trains (once, cached in ``--run-dir``) a ResNet-8 on the embedded ``mnist5k`` with the ``cpu-mnist5k-ce`` preset,
then on the same test images times, with one convention (``_timing.median_time``: one warm-up call on two
images, then the median of ``--repeat`` full runs; "N×" = peer seconds / our seconds):

- FGSM / BIM vs foolbox ``FGSM`` / ``LinfBasicIterativeAttack``: same ε, 10 steps of ε/10, label = prediction.
- JSMA vs ART ``SaliencyMapMethod`` at an EQUAL BUDGET of at most ``--jsma-features`` raised features: ART with
  θ = ε and γ = (F − 2)/d (ART raises two features per step and stops once more than γ·d are used, so this caps
  it at F), ours with ``max_steps = F``, both toward the least-likely class. ε = 1 (the default) sets a raised
  feature to 1, so budgets count distinct features on both sides. Rows: our faithful default (the original map,
  ∇ΣF by autograd, one feature per gradient), then faster options (exact ∇ΣF = 0, k features per gradient, bf16
  gradient passes).
- C&W-L2 vs foolbox ``L2CarliniWagnerAttack``, both UNTARGETED (foolbox's targeted mode needs a criterion
  object), lr 0.01, κ = 0, c₀ = 1, abort-early: at foolbox's budget (``--cw-steps`` × ``--cw-iterations``)
  with our faithful restarts, and with ``restart="continue"`` at that budget and at a smaller one.

Each comparison prints ``<attack> (<our settings>) vs <peer>: N×`` with success rates (any change of the
prediction) and distortion, compared on equal terms: for C&W the mean L2 (paper scale, [0, 255]/√d) over the
images BOTH sides fooled; for JSMA the mean and largest number of raised features. ``--channels-last`` converts
the model (for both sides: the model is the user's, not the library's).

    python benchmarks/attack_speed.py [--n-images 100] [--repeat 3] [--threads 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch
from _timing import median_time, ratio_line

from rcedetect import data
from rcedetect.attacks import REGISTRY, create, l2_distortion
from rcedetect.core.errors import CheckpointError
from rcedetect.models import checkpoint
from rcedetect.training import fit
from rcedetect.training.config import train_config_from_preset

#: (label, settings) of our JSMA rows; every row uses eps and max_steps of the run
JSMA_ROWS = (("faithful default", {}),
             ("exact ∇ΣF", {"sum_gradient": "exact"}),
             ("exact ∇ΣF, 4 per gradient", {"sum_gradient": "exact", "features_per_step": 4}),
             ("exact ∇ΣF, 4 per gradient, bf16", {"sum_gradient": "exact", "features_per_step": 4,
                                                  "precision": "bf16"}),
             ("exact ∇ΣF, 8 per gradient", {"sum_gradient": "exact", "features_per_step": 8}),
             ("exact ∇ΣF, 8 per gradient, bf16", {"sum_gradient": "exact", "features_per_step": 8,
                                                  "precision": "bf16"}))


def load_or_train(run_dir: Path, preset: str):
    try:
        return checkpoint.load(run_dir).classifier
    except CheckpointError:
        print(f"training {preset} into {run_dir} (once) ...")
        fit(train_config_from_preset(preset, ["device=cpu"]), run_dir, progress=True)
        return checkpoint.load(run_dir).classifier


def timed(run, x, repeat: int):
    """median_time of ``run(images)`` on ``x``, warmed up on its first two images."""
    run(x[:2])
    return median_time(lambda: run(x), repeat, warmup=0)


def changed_features(x, x_adv) -> torch.Tensor:
    return (x_adv != x).flatten(1).sum(1)


def gradient_rows(args, clf, x, pred, fb) -> list[dict]:
    model = fb.PyTorchModel(clf, bounds=(0, 1))
    fgsm, bim = fb.attacks.FGSM(), fb.attacks.LinfBasicIterativeAttack(rel_stepsize=0.1, steps=10, random_start=False)
    rows = []
    for name, peer in (("fgsm", fgsm), ("bim", bim)):
        t_peer, (_, clipped, ok) = timed(lambda xx, p=peer: p(model, xx, fb.criteria.Misclassification(
            pred[: len(xx)]), epsilons=args.eps), x, args.repeat)
        for label, precision in (("default", "fp32"), ("option: bf16 gradients", "bf16")):
            ours = create(name, eps=args.eps, precision=precision)
            t_ours, res = timed(lambda xx, a=ours: a(clf, xx, pred[: len(xx)]), x, args.repeat)
            diff = float((res.x_adv - clipped).abs().max())
            rows.append({"attack": name, "ours": label, "peer": "foolbox", "t_ours": t_ours, "t_peer": t_peer,
                         "note": f"success {float(res.success.float().mean()):.2f} vs "
                                 f"{float(ok.float().mean()):.2f}, max |ours - foolbox| = {diff:.1e}"})
    return rows


def jsma_rows(args, clf, x, pred) -> list[dict]:
    from art.attacks.evasion import SaliencyMapMethod
    from art.estimators.classification import PyTorchClassifier

    with torch.no_grad():
        target = clf.logits(x).argmin(1)
    art_clf = PyTorchClassifier(clf, torch.nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]),
                                nb_classes=clf.num_classes, clip_values=(0.0, 1.0), device_type="cpu")
    d = x[0].numel()
    smm = SaliencyMapMethod(art_clf, theta=args.jsma_eps, gamma=(args.jsma_features - 2) / d, batch_size=len(x),
                            verbose=False)
    onehot = torch.nn.functional.one_hot(target, clf.num_classes).numpy().astype("float32")
    t_peer, x_art = timed(lambda xx: torch.from_numpy(smm.generate(xx.numpy(), y=onehot[: len(xx)])), x,
                          args.repeat)
    with torch.no_grad():
        peer_ok = clf.predict(x_art) != pred
    peer_f = changed_features(x, x_art)
    rows = []
    for label, settings in JSMA_ROWS:
        attack = create("jsma", eps=args.jsma_eps, max_steps=args.jsma_features, **settings)
        t_ours, res = timed(lambda xx, a=attack: a(clf, xx), x, args.repeat)
        f = changed_features(x, res.x_adv)
        rows.append({"attack": "jsma", "ours": label, "peer": "ART SaliencyMapMethod", "t_ours": t_ours,
                     "t_peer": t_peer, "success_ours": float(res.success.float().mean()),
                     "success_peer": float(peer_ok.float().mean()),
                     "target_ours": float(res.extra["target_reached"].float().mean()),
                     "target_peer": float((clf.predict(x_art) == target).float().mean()),
                     "features_ours": (float(f.float().mean()), int(f.max())),
                     "features_peer": (float(peer_f.float().mean()), int(peer_f.max()))})
    return rows


def cw_rows(args, clf, x, pred, fb) -> list[dict]:
    model = fb.PyTorchModel(clf, bounds=(0, 1))
    peer = fb.attacks.L2CarliniWagnerAttack(binary_search_steps=args.cw_steps, steps=args.cw_iterations,
                                            stepsize=0.01, confidence=0, initial_const=1, abort_early=True)
    t_peer, (raw, _, ok) = timed(lambda xx: peer(model, xx, fb.criteria.Misclassification(pred[: len(xx)]),
                                                 epsilons=None), x, args.repeat)
    # foolbox returns an all-zero image where it found nothing and calls it a success when the zero image happens
    # to be misclassified: count only real finds
    peer_ok = (ok & (raw != 0).flatten(1).any(1)).cpu()
    peer_l2 = l2_distortion(x, raw).cpu()
    half = max(1, args.cw_iterations // 2)
    rows = []
    for label, restart, iterations, precision in (
            ("faithful restarts, same budget", "start", args.cw_iterations, "fp32"),
            ("restart=continue, same budget", "continue", args.cw_iterations, "fp32"),
            (f"restart=continue, {half} iterations", "continue", half, "fp32"),
            (f"restart=continue, {half} iterations, bf16 rounds", "continue", half, "bf16")):
        attack = create("cw", mode="untargeted", binary_search_steps=args.cw_steps, max_iterations=iterations,
                        learning_rate=0.01, restart=restart, precision=precision)
        t_ours, res = timed(lambda xx, a=attack: a(clf, xx, pred[: len(xx)]), x, args.repeat)
        both = res.success.cpu() & peer_ok
        rows.append({"attack": "cw", "ours": label, "peer": "foolbox L2CarliniWagnerAttack", "t_ours": t_ours,
                     "t_peer": t_peer, "success_ours": float(res.success.float().mean()),
                     "success_peer": float(peer_ok.float().mean()), "both": int(both.sum()),
                     "l2_both_ours": float(res.l2.cpu()[both].mean()), "l2_both_peer": float(peer_l2[both].mean())})
    return rows


def note(row: dict) -> str:
    if row["attack"] == "jsma":
        return (f"success {row['success_ours']:.2f} vs {row['success_peer']:.2f}, target reached "
                f"{row['target_ours']:.2f} vs {row['target_peer']:.2f}, raised features mean/max "
                f"{row['features_ours'][0]:.1f}/{row['features_ours'][1]} vs "
                f"{row['features_peer'][0]:.1f}/{row['features_peer'][1]}")
    if row["attack"] == "cw":
        return (f"success {row['success_ours']:.2f} vs {row['success_peer']:.2f}, mean L2 on the {row['both']} "
                f"images both fooled {row['l2_both_ours']:.3f} vs {row['l2_both_peer']:.3f}")
    return row.get("note", "")


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run-dir", default="runs/bench-model", help="cache folder of the trained model")
    p.add_argument("--preset", default="cpu-mnist5k-ce")
    p.add_argument("--n-images", type=int, default=100)
    p.add_argument("--eps", type=float, default=0.16, help="ε of FGSM/BIM")
    p.add_argument("--jsma-eps", type=float, default=1.0, help="JSMA θ (1: a raised feature goes to 1)")
    p.add_argument("--jsma-features", type=int, default=100, help="at most this many raised features")
    p.add_argument("--cw-steps", type=int, default=5, help="C&W binary-search steps (paper: 9)")
    p.add_argument("--cw-iterations", type=int, default=100, help="C&W iterations per step (paper: 10,000)")
    p.add_argument("--only", nargs="*", default=["gradient", "jsma", "cw"], choices=["gradient", "jsma", "cw"])
    p.add_argument("--channels-last", action="store_true", help="the model in channels_last (both sides)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--json", default=None, help="write the rows here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    clf = load_or_train(Path(args.run_dir), args.preset).eval()
    if args.channels_last:
        clf = clf.to(memory_format=torch.channels_last)
    x = data.load("mnist5k").test_images()[: args.n_images]
    with torch.no_grad():
        pred = clf.predict(x)
    print(f"model {args.run_dir}, {len(x)} mnist5k test images; machine {platform.processor() or platform.machine()}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); median of {args.repeat} runs after a "
          f"warm-up{', channels_last' if args.channels_last else ''}")
    rows = []
    try:
        import foolbox as fb
    except ImportError:
        fb = None
        print("foolbox not installed (pip install -e '.[peers]'): no FGSM/BIM/C&W rows")
    if fb is not None and "gradient" in args.only:
        rows += gradient_rows(args, clf, x, pred, fb)
    if "jsma" in args.only and "jsma" in REGISTRY:
        try:
            rows += jsma_rows(args, clf, x, pred)
        except ImportError:
            print("adversarial-robustness-toolbox not installed: no JSMA row")
    if fb is not None and "cw" in args.only:
        rows += cw_rows(args, clf, x, pred, fb)
    print()
    for r in rows:
        print(f"{r['attack']}: ours {r['t_ours'] / len(x) * 1e3:.2f} ms/image, {r['peer']} "
              f"{r['t_peer'] / len(x) * 1e3:.2f} ms/image")
        print("  " + ratio_line(f"{r['attack']} ({r['ours']})", r["peer"], r["t_peer"], r["t_ours"], note(r)))
    out = {"settings": vars(args), "rows": rows, "torch": torch.__version__}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
        print(f"wrote {args.json}")
    return out


if __name__ == "__main__":
    main()
