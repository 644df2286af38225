"""Attacks by name: ``attacks.create('fgsm', eps=0.1)(classifier, x, y)``.

Every module of this package registers its attacks with :func:`register` on import.
"""

import importlib
import pkgutil

from .base import REGISTRY, AttackResult, AttackSpec, create, l2_distortion, register, spec

for _m in pkgutil.iter_modules(__path__):
    if _m.name != "base":
        importlib.import_module(f"{__name__}.{_m.name}")

__all__ = ["REGISTRY", "AttackResult", "AttackSpec", "create", "l2_distortion", "register", "spec"]
