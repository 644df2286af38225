"""Which attacks a detector card runs: ``version="standard"``, ``"fast"`` or a list of attack names, with settings.

``standard`` runs every attack that applies, with restarts (the adaptive attacks of Carlini & Wagner 2017,
Bryniarski et al. ICLR 2022, and a gradient-free one, Tramèr et al. 2020):

- ``pgd_detector``: PGD on class margin + λ · hinge of the detector margin, λ swept over (0, 1, 10, 100), two random
  starts and one guided start (the nearest image that is a success as it is: another class, accepted);
- ``selective_pgd`` and ``orthogonal_pgd`` (Bryniarski et al.), two starts each;
- ``pgd_defended``: targeted PGD on the defended K+1-class model (Carlini & Wagner's construction), three targets
  (at most K − 1), two starts;
- ``feature_pgd``: where the detector is K-density (its term carries the kernel), z pulled into a target kernel;
- ``cw_wb``: for the L2 threat only (its distortion is L2; successes beyond ε are not counted);
- the gradient-free ``random_search_detector`` and, with torchattacks installed, ``torchattacks:Square`` on the
  defended model, targeted at a random real class (both L∞ only: the L2 threat has no gradient-free attack here).

``fast`` runs ``pgd_detector`` (the λ sweep, one start) and ``pgd_defended`` (one target, one start), 50 steps
each. A list runs exactly those attacks (any registered name, or ``torchattacks:NAME`` / ``foolbox:NAME``) with
their ``standard`` settings where they have some. ``settings={name: {...}}`` overrides an attack's settings;
``steps=N`` sets every attack's number of steps (a random search gets 10·N iterations, Square 10·N queries).
A score without an input gradient is attacked by the gradient-free attacks too (:func:`plan`, Tramèr et al. 2020).
"""

from __future__ import annotations

import importlib.util
from typing import Any

from ..attacks import spec as attack_spec
from ..attacks.base import check_steps
from ..core.errors import ConfigError

VERSIONS = ("standard", "fast")
#: the attacks that use no gradient (the sanity check compares them with the rest)
GRADIENT_FREE = ("random_search_detector", "torchattacks:Square")

STANDARD: dict[str, dict[str, Any]] = {
    "pgd_detector": {"steps": 100, "restarts": 2, "lambdas": [0.0, 1.0, 10.0, 100.0], "guided_starts": 1},
    "selective_pgd": {"steps": 100, "restarts": 2},
    "orthogonal_pgd": {"steps": 100, "restarts": 2},
    "pgd_defended": {"steps": 100, "restarts": 2, "targets": 3},
    "feature_pgd": {"steps": 100},
    "cw_wb": {"max_iterations": 200, "binary_search_steps": 5},
    "random_search_detector": {"iterations": 1000},
    "torchattacks:Square": {"n_queries": 1000, "targeted": "random"},
}
FAST: dict[str, dict[str, Any]] = {
    "pgd_detector": {"steps": 50, "restarts": 1, "lambdas": [0.0, 1.0, 10.0, 100.0]},
    "pgd_defended": {"steps": 50, "restarts": 1, "targets": 1},
}


def applies(name: str, norm: str, has_density: bool) -> bool:
    """Whether ``name`` of the standard suite applies to the threat ``norm`` and the detector."""
    if name == "feature_pgd":
        return has_density
    if name == "cw_wb":
        return norm == "l2"
    if name == "random_search_detector":
        return norm == "linf"
    if name == "torchattacks:Square":  # its L2 version breaks on small images (torchattacks 3.5: window shapes)
        return norm == "linf" and importlib.util.find_spec("torchattacks") is not None
    return True


def gradient_free_for(norm: str) -> list[str]:
    """The gradient-free attacks available for ``norm``."""
    return [a for a in GRADIENT_FREE if applies(a, norm, False)]


def check_version(version) -> str | list[str]:
    if isinstance(version, str):
        if version not in VERSIONS:
            raise ConfigError(f"version must be one of {', '.join(VERSIONS)} or a list of attack names, got "
                              f"{version!r}")
        return version
    if isinstance(version, (list, tuple)) and version and all(isinstance(v, str) for v in version):
        if len(set(version)) != len(version):
            raise ConfigError(f"the attack list names an attack twice: {list(version)}")
        for v in version:
            attack_spec(v)  # an unknown name raises ConfigError naming the known ones
        return list(version)
    raise ConfigError(f"version must be 'standard', 'fast' or a non-empty list of attack names, got {version!r}")


def suite(version, norm: str, num_classes: int, has_density: bool, settings: dict | None = None,
          steps: int | None = None) -> dict[str, dict[str, Any]]:
    """{attack name: its settings} in run order, before the budget and the detector are added."""
    version = check_version(version)
    if version == "standard":
        chosen = {k: dict(v) for k, v in STANDARD.items() if applies(k, norm, has_density)}
    elif version == "fast":
        chosen = {k: dict(v) for k, v in FAST.items()}
    else:
        for name in version:
            if name == "feature_pgd" and not has_density:
                raise ConfigError("feature_pgd needs a K-density detector (a term with a kernel); drop it from the "
                                  "list for this detector")
            if name == "random_search_detector" and norm != "linf":
                raise ConfigError("random_search_detector searches the L∞ ball only; use norm='linf' or drop it")
        chosen = {k: dict(STANDARD.get(k, {})) for k in version}
    if settings is not None:
        if not isinstance(settings, dict) or not all(isinstance(v, dict) for v in settings.values()):
            raise ConfigError("settings must map attack names to dicts of their settings, e.g. "
                              "{'pgd_detector': {'steps': 20}}")
        extra = sorted(set(settings) - set(chosen))
        if extra:
            raise ConfigError(f"settings for attack(s) not in this suite: {', '.join(extra)}; the suite runs "
                              f"{', '.join(chosen)}")
        for k, v in settings.items():
            chosen[k].update(v)
    for name, kw in chosen.items():
        _fit(name, kw, norm, num_classes, steps)
    return chosen


def plan(version, norm: str, num_classes: int, has_density: bool, settings: dict | None, steps: int | None,
         gradient: str) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """(the attacks to run {name: settings}, notes): the :func:`suite` of ``version``, with the gradient-free attacks
    added when the score has no input ``gradient`` ("none"), and alone when it is not finite ("non_finite")."""
    chosen = suite(version, norm, num_classes, has_density, settings, steps)
    if gradient not in ("none", "non_finite"):
        return chosen, []
    free = gradient_free_for(norm)
    for name in free:
        chosen.setdefault(name, suite([name], norm, num_classes, has_density, None, steps)[name])
    if gradient == "non_finite":
        chosen = {k: v for k, v in chosen.items() if k in GRADIENT_FREE}
    if not chosen:
        raise ConfigError(f"the detector's score has a non-finite input gradient and no gradient-free attack "
                          f"is available for {norm} (install torchattacks for Square)")
    note = (f"The detector's score has {'no' if gradient == 'none' else 'a non-finite'} input gradient on the sample: "
            f"the gradient attacks {'see only the classifier' if gradient == 'none' else 'were not run'}; the "
            f"gradient-free attacks ({', '.join(free) or 'none available'}) carry the evaluation.")
    return chosen, [note]


def _fit(name: str, kw: dict[str, Any], norm: str, num_classes: int, steps: int | None) -> None:
    """The settings of ``name`` adjusted to the threat, the classes and a global ``steps``."""
    sp = attack_spec(name)
    library = getattr(sp, "library", "")
    takes = set(sp.parameters) if library else set(sp.fields)  # a library's class: its keyword arguments
    if steps is not None:
        check_steps(steps)
        if name == "random_search_detector":
            kw["iterations"] = 10 * steps
        elif "n_queries" in takes:
            kw["n_queries"] = 10 * steps
        elif name == "cw_wb":
            kw["max_iterations"] = steps
        elif "steps" in takes:
            kw["steps"] = steps
    if "targets" in kw:
        kw["targets"] = max(1, min(int(kw["targets"]), num_classes - 1))
    if "norm" in takes:
        kw.setdefault("norm", ("Linf" if norm == "linf" else "L2") if library == "torchattacks" else norm)
