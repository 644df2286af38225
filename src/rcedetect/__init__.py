"""rcedetect: robust detection of adversarial examples (Pang, Du, Dong, Zhu, NeurIPS 2018).

Train with reverse cross-entropy, predict with the reversed logits, detect with K-density / non-ME /
confidence, and attack with FGSM, BIM, ILCM, JSMA and the C&W family; ``rcedetect.wrap(model, head="fc")`` puts
any image classifier behind the same interface.

The names of the package, all reachable as ``rcedetect.NAME``:

- ``Classifier``, ``wrap`` (your own model), the errors (``RceError`` and its subclasses);
- ``Detector`` (a registered metric with a threshold and the NOT SURE answer), ``defend``, ``evaluate_detector``
  (any detector, yours included, evaluated adaptively in one call: a detector card);
- ``train(preset, run_dir, overrides)`` (a training preset, checkpointed in ``run_dir``) and ``load(run_dir)``
  (a trained run's classifier);
- the modules ``attacks`` (``attacks.create("bim", eps=0.1)``), ``data`` (``data.load("mnist5k")``),
  ``detectors``, ``checkpoint``, ``config``, ``features``, ``models``, ``training``, ``adv_export``, ``transfer``.

Only the classifier, the errors and ``wrap`` are imported with the package; every other name is imported when it
is first used.

The parts, lowest first (each imports only its own part and the parts below it; ``tests/test_imports.py``):
``core`` (errors, files, checks, schemas, processes, device), ``stats`` (AUC, ROC, operating points), ``data``,
``models`` (networks, losses, classifier, wrapping, checkpoint, features), ``detectors`` (with ``defend``),
``attacks``, ``evaluation`` (attack runs on disk, scoring, transfer, export, the paper's numbers), ``training``
(the loop, its config, adversarial training, imported models), ``reproduce``, ``report``, ``serve``,
``commands`` and ``cli``.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING, Any

from .core.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    InputError,
    NotFittedError,
    RceError,
    TrainingError,
)
from .core.io import package_version
from .models.classifier import Classifier
from .models.wrapping import wrap

if TYPE_CHECKING:  # what the lazy names are, for type checkers and IDEs
    from . import attacks, data, detectors, models, training  # noqa: F401
    from .detectors.defended import defend  # noqa: F401
    from .detectors.threshold import Detector
    from .evaluation.detector_card import evaluate_detector  # noqa: F401
    from .models import checkpoint, features  # noqa: F401

__version__ = package_version()

#: submodules reachable as attributes without an explicit import (name -> where it lives)
_MODULES = {"adv_export": "evaluation.adv_export", "attacks": "attacks", "checkpoint": "models.checkpoint",
            "config": "training.config", "data": "data", "detectors": "detectors", "features": "models.features",
            "models": "models", "training": "training", "transfer": "evaluation.transfer"}
#: lazy names -> (module, attribute)
_LAZY = {"Detector": ("detectors.threshold", "Detector"), "defend": ("detectors.defended", "defend"),
         "evaluate_detector": ("evaluation.detector_card", "evaluate_detector")}
def __getattr__(name: str) -> Any:
    """Import a submodule or a lazy name on first use (keeps ``import rcedetect`` light)."""
    if name in _MODULES:
        return importlib.import_module(f"{__name__}.{_MODULES[name]}")
    if name in _LAZY:
        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(f"{__name__}.{module}"), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_MODULES) | set(_LAZY))


def train(preset: str, run_dir, overrides: list[str] | None = None, *, progress: bool = True,
          resume: bool = False) -> Classifier:
    """Train the training preset ``preset`` (e.g. ``"cpu-mnist5k-rce"``, or a TOML file) with ``--set``-style
    ``overrides`` (``["steps=100"]``), checkpointing into ``run_dir``; returns the trained classifier, in eval
    mode. ``resume`` continues from the checkpoint in ``run_dir``. Raises ConfigError on bad settings."""
    from .training import fit
    from .training.config import train_config_from_preset

    return fit(train_config_from_preset(preset, overrides), run_dir, progress=progress, resume=resume).eval()


def load(run_dir, device: str = "cpu") -> Classifier:
    """The classifier of the trained run in ``run_dir`` (weights verified, eval mode) on ``device``."""
    from .models.checkpoint import load as load_checkpoint

    return load_checkpoint(run_dir, device=device).classifier


__all__ = [
    "CheckpointError",
    "Classifier",
    "ConfigError",
    "DataError",
    "Detector",
    "InputError",
    "NotFittedError",
    "RceError",
    "TrainingError",
    "__version__",
    "attacks",
    "data",
    "detectors",
    "load",
    "train",
    "wrap",
]
if importlib.util.find_spec(f"{__name__}.detectors.defended") is not None:  # ``from rcedetect import *`` works without it
    __all__.append("defend")
