"""``rce evaluate RUN_DIR [--dataset NAME]``: the test error rate of paper Table 1, printed and saved as JSON."""

from __future__ import annotations

from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="test error rate of a trained run (paper Table 1)",
                       description="The test error rate of a trained run on its dataset's test split (the paper's "
                                   "Table 1), printed and written to RUN_DIR as JSON.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a trained run folder (with checkpoint.json); the result is "
                   "written there as JSON")
    p.add_argument("--dataset", help="dataset to evaluate on (default: the one the run was trained on)")
    p.add_argument("--data-dir", help="folder with the dataset in torchvision's layout (default: the run's)")
    p.add_argument("--data-file", help=".npz with x_train, y_train, x_test, y_test (default: the run's)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N")
    p.set_defaults(run=run)


def run(args) -> int:
    from .. import data
    from ..core.device import resolve
    from ..core.io import check_writable_dir, write_json
    from ..models import checkpoint
    from ..training import accuracy

    run_dir = Path(args.run_dir)
    ckpt = checkpoint.load(run_dir, device=resolve(args.device))
    check_writable_dir(run_dir, "run folder")  # what this command writes goes there: fail before the work
    ds = data.load_for_run(ckpt.config, ckpt.meta.get("dataset"), dataset=args.dataset, data_dir=args.data_dir,
                           data_file=args.data_file, model=ckpt.classifier)
    acc = accuracy(ckpt.classifier, ds.x_test, ds.y_test)
    record = {"run": str(run_dir), "dataset": ds.name, "arch": ckpt.meta["arch"], "objective": ckpt.meta["objective"],
              "n": len(ds.x_test), "test_accuracy": acc, "test_error_percent": 100 * (1 - acc)}
    out = write_json(run_dir / f"evaluation-{ds.name}.json", record)
    print(f"{ds.name} test error {record['test_error_percent']:.2f}% ({ckpt.meta['arch']} {ckpt.meta['objective']}, "
          f"n={len(ds.x_test)}) -> {out}")
    return 0
