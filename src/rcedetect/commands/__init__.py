"""CLI subcommands: each module defines add_parser(subparsers) and run(args) -> int.

Layer: above :mod:`rcedetect.serve`, below :mod:`rcedetect.cli` (which discovers them); a command may import
every part of the package, and nothing but the CLI imports a command.
"""

from __future__ import annotations

import argparse
import functools

from ..evaluation.calibrated import FitOptions


class HelpFormatter(argparse.HelpFormatter):
    """Every option's default in its help, "(default: X)", unless the help already says it or there is none to
    say (None, a flag, an empty list)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if ("default" in text or not action.option_strings or default is None or default is argparse.SUPPRESS
                or isinstance(default, bool) or default == []):
            return text
        return text + " (default: %(default)s)"


@functools.cache
def preset_names(kind: str) -> tuple[str, ...]:
    """The package's presets of one ``kind``: "reproduce" (a preset with [experiment] and [models.*]) or
    "train" (a training preset: the rest)."""
    from ..training.config import load_preset
    from ..training.config import preset_names as every_preset

    out = []
    for name in every_preset():
        preset = load_preset(name)
        is_reproduce = "experiment" in preset and "models" in preset
        if is_reproduce == (kind == "reproduce"):
            out.append(name)
    return tuple(out)


def add_import_options(p: argparse.ArgumentParser) -> None:
    """The options that import a trained model of your own into a run folder (fit-detector, evaluate-detector)."""
    p.add_argument("--model", help="import a trained model first: torchvision:NAME or timm:NAME")
    p.add_argument("--weights", help="its weights: a local .safetensors file")
    p.add_argument("--head", help="module name of its final linear layer (default: found)")
    p.add_argument("--dataset", help="its data: imagefolder:PATH, npz (with --data-file), cifar10, ...")
    p.add_argument("--data-file", help=".npz file with x_train, y_train, x_test, y_test")
    p.add_argument("--data-dir", help="folder with the dataset in torchvision's layout")
    p.add_argument("--objective", choices=("ce", "rce"), default="ce", help="how an imported model was trained")


def absolute(option: str, value: str) -> str:
    """Files and folders named on the command line, made absolute: later commands read the run's config elsewhere."""
    from pathlib import Path

    if option in ("weights", "init"):
        return str(Path(value).absolute())
    if option == "dataset" and value.startswith("imagefolder:"):
        return "imagefolder:" + str(Path(value[len("imagefolder:"):]).expanduser().absolute())
    return value


def import_run(args: argparse.Namespace, overrides: list[str] | None = None) -> None:
    """Import the model of :func:`add_import_options` into ``args.run_dir`` when ``--model`` is given, with
    ``overrides`` (``--set KEY=VALUE``) of its settings."""
    from pathlib import Path

    from ..core.errors import ConfigError
    from ..core.io import check_writable_dir
    from ..training.config import TrainConfig, apply_overrides
    from ..training.posthoc import import_model

    if not args.model:
        if args.weights or args.head:
            raise ConfigError("--weights and --head describe a model to import: give --model as well")
        return
    check_writable_dir(Path(args.run_dir), "run folder")
    values = {"arch": args.model, "objective": args.objective, "head": args.head or "", "device": args.device,
              "weights": absolute("weights", args.weights) if args.weights else "",
              "data_file": args.data_file or "", "data_dir": args.data_dir or ""}
    if args.dataset or args.data_file:
        values["dataset"] = absolute("dataset", args.dataset or "npz")
    cfg = apply_overrides({"train": {**TrainConfig().to_dict(), **values}}, [f"train.{o}" for o in overrides or []])
    import_model(args.run_dir, TrainConfig.from_dict(cfg["train"]))


def add_fit_options(p: argparse.ArgumentParser, *, baselines: bool = True, data: bool = True, **helps: str) -> None:
    """The options of a run's detector (:class:`rcedetect.evaluation.calibrated.FitOptions`, whose defaults they
    show) and ``--device``: ``baselines`` adds the fitting split of LID, Mahalanobis and KD+BU, ``data`` the
    dataset's place; ``helps`` (by dest) says what an option means for one command."""
    from ..core.settings import int64_arg, seed_arg
    from ..evaluation.calibrated import DEFAULT_CALIBRATION

    def add(flag: str, text: str, **kw) -> None:
        p.add_argument(flag, help=helps.get(flag[2:].replace("-", "_"), text), **kw)

    d, fit = FitOptions, "LID / Mahalanobis / KD+BU: "  # the class: its defaults
    add("--fpr", "share of clean held-out inputs to reject", type=float, default=d.fpr)
    add("--calibration-size", f"clean images from the end of the test split used for the threshold (default "
        f"{DEFAULT_CALIBRATION}, at most half of the split)", type=int64_arg, default=d.calibration_size)
    add("--per-class", "K-density kernel points per class, or 'all'", default=d.per_class)
    add("--sigma2", "K-density bandwidth: a number, or 'auto' (max. held-out likelihood); default: the paper's",
        default=d.sigma2)
    if baselines:
        add("--fit-on", fit + "the attack their regression is fit on, or 'noise'", default=d.fit_on)
        add("--fit-eps", fit + "ε of --fit-on", type=float, default=d.fit_eps)
        add("--fit-images", fit + "training images of the fitting split", type=int64_arg, default=d.fit_images)
    add("--seed", "seed of the K-density kernel subset and of the baselines' fitting split", type=seed_arg,
        default=d.seed)
    add("--refit", "ignore the cached detector(s)", action="store_true")
    add("--device", "auto (default), cpu, cuda, cuda:N", default="auto")
    if data:
        add("--data-dir", "folder with the run's dataset in torchvision's layout (default: the run's)")
        add("--data-file", ".npz with x_train, y_train, x_test, y_test (default: the run's)")
    add("--quiet", "no progress bar", action="store_true")


def fit_options(args: argparse.Namespace, *metrics: str, **fixed) -> FitOptions:
    """The :class:`~rcedetect.evaluation.calibrated.FitOptions` of parsed options (the one place a Namespace
    becomes them; an option the command lacks keeps its default, ``fixed`` sets one), checked with the own
    settings of each of ``metrics`` before anything is loaded."""
    from dataclasses import fields

    from ..detectors import create

    opts = FitOptions(**{**{f.name: getattr(args, f.name) for f in fields(FitOptions) if hasattr(args, f.name)},
                         **fixed})
    for m in metrics:
        create(m, **opts.settings(m))  # its fitting attack, σ², ...: bad ones fail here, before any work
    return opts
