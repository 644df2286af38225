"""``rce train --preset NAME [--set key=value ...] --out RUN_DIR`` and ``rce train --resume RUN_DIR``."""

from __future__ import annotations

import json
from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train a CE or RCE classifier from a preset")
    p.add_argument("--preset", help="training preset name (see configs/) or a .toml file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a [train] setting, e.g. --set steps=200 --set objective=rce")
    p.add_argument("--out", help="run folder to create")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last checkpoint")
    p.add_argument("--device", help="auto (default), cpu, cuda, cuda:N")
    p.add_argument("--data-dir", help="folder with the dataset in torchvision's layout")
    p.add_argument("--data-file", help=".npz file with x_train, y_train, x_test, y_test")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def run(args) -> int:
    from .. import schemas
    from ..config import TrainConfig, train_config_from_preset
    from ..errors import ConfigError
    from ..io import check_writable_dir, read_json
    from ..training import fit

    extra = list(args.overrides)
    if args.device:
        extra.append(f"device={json.dumps(args.device)}")
    if args.data_dir:
        extra.append(f"data_dir={json.dumps(args.data_dir)}")
    if args.data_file:
        extra.append(f"data_file={json.dumps(args.data_file)}")
        if not any(o.startswith(("dataset=", "train.dataset=")) for o in extra):
            extra.append('dataset="npz"')
    if args.resume:
        if args.preset or args.out:
            raise ConfigError("--resume RUN_DIR takes the preset and settings from the run folder; drop --preset/--out")
        run_dir = Path(args.resume)
        saved = schemas.check(read_json(run_dir / "config.json", "run config"), schemas.RUN_CONFIG,
                              run_dir / "config.json", "run config")["train"]
        from ..config import apply_overrides

        cfg = TrainConfig.from_dict(apply_overrides({"train": saved}, [f"train.{o}" for o in extra])["train"])
        fit(cfg, run_dir, resume=(run_dir / "checkpoint.json").exists(), progress=not args.quiet)
    else:
        if not args.preset or not args.out:
            raise ConfigError("rce train needs --preset NAME and --out RUN_DIR (or --resume RUN_DIR)")
        cfg = train_config_from_preset(args.preset, extra)
        run_dir = Path(args.out)
        if (run_dir / "checkpoint.json").exists():
            raise ConfigError(f"{run_dir} already holds a run; use --resume {run_dir} or another --out")
        check_writable_dir(run_dir, "run folder (--out)")
        fit(cfg, run_dir, progress=not args.quiet)
    meta = read_json(run_dir / "checkpoint.json")
    acc = meta["metrics"].get("test_accuracy")
    print(f"{run_dir}: {meta['arch']} {meta['objective']} on {meta['dataset']}, step {meta['step']}, "
          f"test accuracy {acc:.4f}" if acc is not None else f"{run_dir}: step {meta['step']}")
    return 0
