"""``rce train --preset NAME [--set key=value ...] --out RUN_DIR`` and ``rce train --resume RUN_DIR``.

Your own model and data: ``rce train --objective rce --model torchvision:resnet18 --dataset imagefolder:PATH --out
RUN`` (``--weights FILE.safetensors`` to start from local weights, ``--init RUN_DIR`` to fine-tune a CE run with
RCE). Without ``--preset`` the paper's schedule applies (the defaults of :class:`rcedetect.training.config.TrainConfig`), with
the paper's CIFAR augmentation on colour images of at most 64x64 pixels and none on others unless ``--set augment``.
"""

from __future__ import annotations

import json
from pathlib import Path


def add_parser(sub) -> None:
    from . import preset_names

    p = sub.add_parser("train", help="train a CE or RCE classifier from a preset",
                       description="Train a CE or RCE classifier from a training preset, or your own model and data "
                                   "(--model, --dataset), into a run folder; --resume continues an interrupted run.")
    p.add_argument("--preset", help=f"a training preset ({', '.join(preset_names('train'))}) or a .toml file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a [train] setting, e.g. --set steps=200 --set objective=rce")
    p.add_argument("--out", metavar="RUN_DIR", help="run folder to create")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last checkpoint")
    p.add_argument("--device", help="auto (default), cpu, cuda, cuda:N")
    p.add_argument("--data-dir", help="folder with the dataset in torchvision's layout")
    p.add_argument("--data-file", help=".npz file with x_train, y_train, x_test, y_test")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    own = p.add_argument_group("your own model and data")
    own.add_argument("--model", help="arch: resnet8..resnet56, torchvision:NAME or timm:NAME (e.g. torchvision:resnet18)")
    own.add_argument("--weights", help="local .safetensors file of the model's initial weights (no hub is used)")
    own.add_argument("--init", metavar="RUN_DIR", help="start from the checkpoint of a run (e.g. fine-tune CE with RCE)")
    own.add_argument("--dataset", help="mnist5k, mnist, cifar10, synthetic, npz, or imagefolder:PATH")
    own.add_argument("--objective", choices=("ce", "rce"), help="training objective: ce or rce")
    p.set_defaults(run=run)


OWN_OPTIONS = {"model": "arch", "weights": "weights", "init": "init", "dataset": "dataset", "objective": "objective"}


def _without_preset(extra: list[str]):
    """The paper's schedule (TrainConfig defaults) with the overrides; augmentation on CIFAR-like data unless set."""
    from .. import data
    from ..data.folder import cifar_like
    from ..training.config import TrainConfig, apply_overrides

    cfg = TrainConfig.from_dict(apply_overrides({"train": TrainConfig().to_dict()}, [f"train.{o}" for o in extra])
                                ["train"])
    ds = data.load(cfg.dataset, data_dir=cfg.data_dir or None, data_file=cfg.data_file or None)
    if not any(o.startswith("augment=") for o in extra) and cifar_like(ds.image_shape):
        cfg = TrainConfig.from_dict({**cfg.to_dict(), "augment": True})
    return cfg, ds


def many_classes_note(cfg, ds) -> None:
    """RCE's gradient at the start is about 1/(L-1) of CE's (protocol §16.5): with the paper's rates as written
    (``rce_lr_scale = 1``) and many classes RCE barely trains. Said on stderr; the settings are left as they are."""
    import sys

    if cfg.objective == "rce" and ds.num_classes > 10 and cfg.rce_lr_scale == 1.0:
        print(f"note: RCE with {ds.num_classes} classes at the paper's rates (rce_lr_scale = 1) stayed near chance "
              f"in our measurement; the default rce_lr_scale = 0 scales them with the class count "
              f"(docs/protocol.md §22)", file=sys.stderr)


def run(args) -> int:
    from ..core import schemas
    from ..core.errors import ConfigError
    from ..core.io import check_writable_dir, read_json
    from ..training import fit
    from ..training.config import TrainConfig, train_config_from_preset
    from . import absolute

    extra = list(args.overrides)
    if args.device:
        extra.append(f"device={json.dumps(args.device)}")
    if args.data_dir:
        extra.append(f"data_dir={json.dumps(args.data_dir)}")
    for option, key in OWN_OPTIONS.items():
        if getattr(args, option, None):
            extra.append(f"{key}={json.dumps(absolute(option, getattr(args, option)))}")
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
        from ..training.config import apply_overrides

        cfg = TrainConfig.from_dict(apply_overrides({"train": saved}, [f"train.{o}" for o in extra])["train"])
        fit(cfg, run_dir, resume=(run_dir / "checkpoint.json").exists(), progress=not args.quiet)
    else:
        own = args.model or args.dataset or args.data_file
        if not (args.preset or own) or not args.out:
            raise ConfigError("rce train needs --preset NAME (or --model / --dataset) and --out RUN_DIR "
                              "(or --resume RUN_DIR)")
        run_dir = Path(args.out)
        if (run_dir / "checkpoint.json").exists():
            raise ConfigError(f"{run_dir} already holds a run; use --resume {run_dir} or another --out")
        if args.preset:
            from .. import data

            cfg = train_config_from_preset(args.preset, extra)
            ds = data.load(cfg.dataset, data_dir=cfg.data_dir or None, data_file=cfg.data_file or None)
        else:
            cfg, ds = _without_preset(extra)
        many_classes_note(cfg, ds)
        fresh = not run_dir.exists()
        check_writable_dir(run_dir, "run folder (--out)")
        try:
            fit(cfg, run_dir, dataset=ds, progress=not args.quiet)
        except Exception:
            if fresh and not (run_dir / "checkpoint.json").exists():  # refused before a checkpoint: nothing kept
                import shutil

                shutil.rmtree(run_dir, ignore_errors=True)
            raise
    from ..core.distributed import world

    if not world().main:
        return 0
    meta = read_json(run_dir / "checkpoint.json")
    acc = meta["metrics"].get("test_accuracy")
    print(f"{run_dir}: {meta['arch']} {meta['objective']} on {meta['dataset']}, step {meta['step']}, "
          f"test accuracy {acc:.4f}" if acc is not None else f"{run_dir}: step {meta['step']}")
    return 0
