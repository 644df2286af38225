"""The GPU check as one script: the device tests, the GPU benchmarks and a cut of ``paper-mnist``, written to one JSON.

On a machine with one CUDA GPU (``make gpu-check``, about 8 minutes of wall time):

1. ``tests/test_device_path.py`` on the device: logits, K-density, the detector's verdicts, FGSM / PGD and a few
   training steps on CUDA against the same computation on the CPU;
2. K-density of 10,000 queries against all 50,000 training features (64-d) on the device (the goal: < 1 s);
3. each attack's seconds per example on a ResNet-32 of MNIST shape, beside the paper's Table 5 (P100): FGSM, BIM,
   ILCM and JSMA at their paper budgets; C&W, C&W-hc and C&W-wb measured per Adam iteration and extrapolated to the
   paper's 9 × 10,000 iterations (the JSON says which figures are extrapolated);
4. ``rce reproduce --preset paper-mnist`` cut to finish (fewer steps, images and iterations; every cut in the
   JSON), on MNIST from ``--data-dir`` or else the embedded mnist5k.

``--device cpu --tiny`` runs the same script end to end with tiny sizes (the test suite does). The script never
asserts a time: it records them. Timing follows ``_timing.py`` (one warm-up, median of repeats, CUDA synchronised).

Run: ``python benchmarks/gpu_check.py [--device cuda] [--tiny] [--data-dir DIR] [--out runs/gpu-check.json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch
from _timing import median_time

ROOT = Path(__file__).resolve().parent.parent

#: sizes of the full check (a GPU) and of the tiny one (the test suite, on a CPU)
SIZES = {
    "full": {"kd_queries": 10_000, "kd_train": 50_000, "attack_images": 100, "arch": "resnet32",
             "cw_iterations": 100, "train_steps": 2000, "target_steps": 1000, "images": 200, "adaptive_images": 100,
             "adaptive_steps": 50, "cw_search": 3, "cw_max_iterations": 200, "tsne": 300},
    "tiny": {"kd_queries": 200, "kd_train": 1_000, "attack_images": 4, "arch": "resnet8", "cw_iterations": 5,
             "train_steps": 20, "target_steps": 10, "images": 8, "adaptive_images": 4, "adaptive_steps": 3,
             "cw_search": 1, "cw_max_iterations": 5, "tsne": 0},
}
#: the paper's budgets per example (Table 5 was measured with these)
PAPER_CW_ITERATIONS = 9 * 10_000


def gpu_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def run_device_tests(device: torch.device) -> dict:
    """pytest on tests/test_device_path.py with the device under test in RCE_TEST_DEVICE."""
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", str(ROOT / "tests" /
                           "test_device_path.py")], capture_output=True, text=True, cwd=ROOT, check=False,
                          env={**os.environ, "RCE_TEST_DEVICE": str(device)})
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    summary = next((ln for ln in reversed(lines) if " passed" in ln or " failed" in ln or " skipped" in ln
                    or " error" in ln), lines[-1] if lines else "")
    return {"returncode": proc.returncode, "summary": summary.strip("= "), "seconds": round(time.perf_counter() - t, 2)}


def bench_kd(device: torch.device, s: dict, repeat: int) -> dict:
    """K-density of ``kd_queries`` 64-d queries against all ``kd_train`` training features, on the device."""
    from rcedetect.detectors import KernelDensity, default_sigma2

    g = torch.Generator().manual_seed(0)
    centers = 2.0 * torch.rand(10, 64, generator=g)

    def draw(n):
        y = torch.arange(n) % 10
        return (centers[y] + 0.6 * torch.randn(n, 64, generator=g)).clamp_min(-0.1), y

    train, y_train = draw(s["kd_train"])
    z, c = draw(s["kd_queries"])
    kd = KernelDensity.fit(train, y_train, 10, per_class="all", sigma2=default_sigma2("ce"), seed=0).to(device)
    z, c = z.to(device), c.to(device)
    with torch.no_grad():
        secs, out = median_time(lambda: kd.log_kd(z, c), repeat)
    return {"queries": s["kd_queries"], "kernel_points": s["kd_train"], "dim": 64, "seconds": round(secs, 5),
            "finite": bool(torch.isfinite(out).all())}


def _classifier(arch: str, device: torch.device, objective: str = "ce"):
    from rcedetect.models import create
    from rcedetect.models.classifier import Classifier

    torch.manual_seed(0)
    return Classifier(create(arch, 1, 10), objective, input_shape=(1, 28, 28)).to(device).eval()


def bench_attacks(device: torch.device, s: dict, repeat: int) -> list[dict]:
    """Seconds per example of each attack of Table 5 on a ResNet of MNIST shape, beside the paper's P100 figure."""
    from rcedetect.attacks import create
    from rcedetect.detectors import Detector
    from rcedetect.evaluation import paper_ref

    n, out = s["attack_images"], []
    g = torch.Generator().manual_seed(1)
    x = torch.rand(n, 1, 28, 28, generator=g).to(device)
    for objective in ("ce", "rce"):
        clf = _classifier(s["arch"], device, objective)
        with torch.no_grad():
            y_obj = clf.logits(x).argmax(1)  # attack images the model classifies as their label
        det = Detector(clf, "kd").fit(torch.rand(200, 1, 28, 28, generator=g).to(device),
                                      torch.arange(200).remainder(10).to(device))
        its = s["cw_iterations"]
        plans = [("fgsm", {"eps": 0.1}, None), ("bim", {"eps": 0.1}, None), ("ilcm", {"eps": 0.1}, None),
                 ("jsma", {"eps": 1.0, "max_steps": 100}, None),
                 ("cw", {"binary_search_steps": 1, "max_iterations": its, "abort_early": False}, PAPER_CW_ITERATIONS),
                 ("cw_hc", {"binary_search_steps": 1, "max_iterations": its, "abort_early": False}, PAPER_CW_ITERATIONS),
                 ("cw_wb", {"binary_search_steps": 1, "max_iterations": its, "abort_early": False,
                            "detector": det.attack_term()}, PAPER_CW_ITERATIONS)]
        for name, settings, paper_its in plans:
            try:
                attack = create(name, **settings)
            except TypeError:  # an attack without abort_early
                attack = create(name, **{k: v for k, v in settings.items() if k != "abort_early"})
            secs, _ = median_time(lambda attack=attack, clf=clf, y=y_obj: attack(clf, x, y), repeat)
            per_example = secs / n
            row = {"attack": paper_ref.label(name), "objective": objective.upper(), "images": n,
                   "seconds_per_example": round(per_example, 6),
                   "paper_p100": paper_ref.seconds_per_example(name, objective)}
            if paper_its:
                row.update(measured_iterations=its, extrapolated_to=paper_its,
                           seconds_per_example_at_paper_budget=round(per_example * paper_its / its, 4))
            out.append(row)
    return out


def cut_overrides(s: dict, data_dir: str | None, device: torch.device) -> list[str]:
    """The ``--set`` lines that cut paper-mnist to finish within the check's time (all listed in the JSON)."""
    sets = [f"models.{m}.train.steps={s['train_steps' if m in ('ce', 'rce') else 'target_steps']}"
            for m in ("ce", "rce", "target_ce", "target_rce")]
    for m in ("ce", "rce", "target_ce", "target_rce"):
        steps = s["train_steps" if m in ("ce", "rce") else "target_steps"]
        sets += [f"models.{m}.train.lr_boundaries=[{steps // 2},{3 * steps // 4},{steps - 1}]",
                 f"models.{m}.train.eval_every={steps}", f"models.{m}.train.checkpoint_every={steps}"]
        if not data_dir:
            sets.append(f'models.{m}.train.dataset="{"synthetic" if s is SIZES["tiny"] else "mnist5k"}"')
    for a in ("fgsm", "bim", "ilcm", "jsma", "cw", "cw_hc", "cw_wb"):
        sets.append(f"attacks.{a}.images={s['images']}")
    for a in ("cw", "cw_hc", "cw_wb"):
        sets += [f"attacks.{a}.settings.binary_search_steps={s['cw_search']}",
                 f"attacks.{a}.settings.max_iterations={s['cw_max_iterations']}"]
    sets += [f"attacks.noise.images={4 * s['images']}", f"adaptive.images={s['adaptive_images']}",
             f"experiment.tsne_images={s['tsne']}", "experiment.calibration_images=200"]
    for a in ("pgd_detector", "pgd_detector_l2", "selective_pgd", "orthogonal_pgd", "feature_pgd"):
        sets += [f"adaptive.attacks.{a}.images={s['adaptive_images']}",
                 f"adaptive.attacks.{a}.settings.steps={s['adaptive_steps']}"]
        if a != "feature_pgd":
            sets.append(f"adaptive.attacks.{a}.settings.restarts=1")
    sets += [f"adaptive.attacks.pgd_defended.images={s['adaptive_images']}",
             f"adaptive.attacks.pgd_defended.settings.steps={s['adaptive_steps']}",
             "adaptive.attacks.pgd_defended.settings.targets=2",
             f"adaptive.attacks.apgd_dlr.images={s['adaptive_images']}",
             f"adaptive.attacks.apgd_dlr.settings.steps={s['adaptive_steps']}",
             f"adaptive.attacks.autoattack.images={s['adaptive_images']}",
             f"adaptive.attacks.autoattack_classifier.images={s['adaptive_images']}"]
    sets += ["adaptive.attacks.cw_wb.images=" + str(s["adaptive_images"]),
             f"adaptive.attacks.cw_wb.settings.binary_search_steps={s['cw_search']}",
             f"adaptive.attacks.cw_wb.settings.max_iterations={s['cw_max_iterations']}"]
    if s is SIZES["tiny"]:
        sets += ["experiment.train_feature_images=300", "detector.per_class=20", "detector.attack_per_class=10",
                 "detector.fit_images=100", "attacks.jsma.settings.max_steps=4", "experiment.calibration_images=60",
                 "experiment.table2_eps=0.2"]
        sets += [f"attacks.{a}.eps=[0.2]" for a in ("fgsm", "bim", "ilcm", "jsma")]
        sets += [f"adaptive.attacks.{a}.eps=[0.2]" for a in ("pgd_detector", "selective_pgd", "orthogonal_pgd",
                                                              "feature_pgd", "pgd_defended", "apgd_dlr", "autoattack",
                                                              "autoattack_classifier")]
        sets += ["adaptive.attacks.pgd_detector_l2.eps=[2.0]", 'adaptive.metrics=["kd","non_me","lid"]']
        sets += [f"models.{m}.train.arch=\"resnet8\"" for m in ("ce", "rce", "target_ce", "target_rce")]
    return sets


def run_paper_cut(device: torch.device, s: dict, data_dir: str | None, out: Path) -> dict:
    from rcedetect.reproduce import reproduce

    sets = cut_overrides(s, data_dir, device)
    t = time.perf_counter()
    results = reproduce("paper-mnist", out, sets, device=str(device), data_dir=data_dir, progress=False,
                        echo=lambda line: print("  " + line, flush=True))
    models = {n: {"arch": m["arch"], "objective": m["objective"], "test_error_percent": m["test_error_percent"],
                  "train_seconds": m["train_seconds"]} for n, m in results["models"].items()}
    table2 = [{"model": r["model"], "attack": r["attack"], "eps": r["eps"], "n_pairs": r["n_pairs"],
               "kd_auc": (r["detection"].get("kd") or {}).get("auc_strict")}
              for r in results["attacks"] if r["eps"] in (None, results["table2_eps"])]
    return {"overrides": sets, "dataset": results["dataset"], "wall_seconds": round(time.perf_counter() - t, 1),
            "stage_seconds": results["timings"]["stage_seconds"], "models": models, "table2": table2,
            "transfer": [{k: t.get(k) for k in ("substitute", "target", "transfer_rate", "n_substitute_success")}
                         for t in results.get("transfer", [])], "out": str(out)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    ap.add_argument("--tiny", action="store_true", help="tiny sizes: the whole script in well under a minute")
    ap.add_argument("--data-dir", help="MNIST in torchvision's layout (DIR/MNIST/raw); default: embedded mnist5k")
    ap.add_argument("--out", default="runs/gpu-check.json", help="the JSON file with every figure")
    ap.add_argument("--work", help="folder of the paper-mnist cut (default: beside --out)")
    ap.add_argument("--repeat", type=int, default=3, help="timed repeats per benchmark (median)")
    ap.add_argument("--skip-tests", action="store_true", help="do not run tests/test_device_path.py")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("rce gpu-check: --device cuda but no CUDA device is visible (use --device cpu --tiny)", file=sys.stderr)
        return 2
    s = SIZES["tiny" if args.tiny else "full"]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    report: dict = {"device": str(device), "gpu": gpu_name(device), "torch": torch.__version__,
                    "cuda": torch.version.cuda, "sizes": "tiny" if args.tiny else "full"}
    steps = [("tests", lambda: run_device_tests(device) if not args.skip_tests else {"skipped": True}),
             ("kd", lambda: bench_kd(device, s, args.repeat)),
             ("attacks", lambda: bench_attacks(device, s, args.repeat)),
             ("paper_mnist_cut", lambda: run_paper_cut(device, s, args.data_dir,
                                                       Path(args.work or out.with_suffix("")) / "paper-mnist-cut"))]
    for name, fn in steps:
        t = time.perf_counter()
        print(f"gpu-check: {name} ...", flush=True)
        report[name] = fn()
        report.setdefault("seconds", {})[name] = round(time.perf_counter() - t, 2)
        tmp = out.with_suffix(".json.tmp")  # written after every part: a run cut short keeps what it measured
        tmp.write_text(json.dumps(report, indent=1))
        tmp.replace(out)
    report["wall_seconds"] = round(time.perf_counter() - t0, 1)
    out.with_suffix(".json.tmp").write_text(json.dumps(report, indent=1))
    out.with_suffix(".json.tmp").replace(out)
    print(f"gpu-check: {report['wall_seconds']} s on {report['gpu']}; figures in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
