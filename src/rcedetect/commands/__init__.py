"""CLI subcommands: each module defines add_parser(subparsers) and run(args) -> int.

Layer: above :mod:`rcedetect.serve`, below :mod:`rcedetect.cli` (which discovers them); a command may import
every part of the package, and nothing but the CLI imports a command.
"""

from __future__ import annotations

import argparse
import functools


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
