"""Attacks by name: ``attacks.create('fgsm', eps=0.1)(classifier, x, y)``.

Every module of this package registers its attacks with :func:`register` on import; :mod:`.base` holds the
contract (``AttackResult``, the checks) and the registry, :mod:`.build` the attacks by name for a run (``spec``,
``create``, ``attack_factory``: one seeded attack per batch), :mod:`.engine` the PGD core every gradient attack
runs on (each attack is its loss, its verdict and its own options).

Layer: above :mod:`rcedetect.detectors`; imports ``core``, ``stats``, ``models`` and ``detectors`` (the view a
detector term reads, the defended model), never the evaluation or anything above it.
"""

import importlib
import pkgutil

from .base import REGISTRY, AttackResult, AttackSpec, l2_distortion, register
from .build import attack_factory, create, spec

for _m in pkgutil.iter_modules(__path__):
    if _m.name not in ("base", "build"):
        importlib.import_module(f"{__name__}.{_m.name}")

__all__ = ["REGISTRY", "AttackResult", "AttackSpec", "attack_factory", "create", "l2_distortion", "register", "spec"]
