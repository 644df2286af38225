"""Attacks of other libraries by name: ``torchattacks:NAME`` (any attack class of torchattacks, e.g. ``APGD``,
``AutoAttack``) and ``foolbox:NAME`` (an attack class of ``foolbox.attacks``), run on the defended model.

An attack written for a plain classifier attacks classifier and detector together when it is run on the K+1-class
defended model (Carlini & Wagner 2017, "Adversarial examples are not easily detected";
:func:`rcedetect.defended.defend`): its first K logits are the classifier's effective logits, the last one wins
where the deployed detector rejects. :func:`rcedetect.attacks.spec` resolves a ``library:NAME`` to a
:class:`ThirdPartySpec`, so ``rce adaptive --attack torchattacks:APGD``, ``[adaptive.attacks.*]`` tables with
``attack = "torchattacks:APGD"`` and ``attacks.create("torchattacks:APGD", eps=0.1, detector=det)`` all work like
an attack of this package:

- ``eps`` (where the library's attack takes one) comes from the ε grid / ``--eps``, ``seed`` from the batch seed
  (passed to the library's own ``seed`` argument and seeding torch's generator around the call), ``detector`` (a
  calibrated :class:`~rcedetect.detectors.Detector` or its term score − T) is what the runners pass;
- ``on``: ``"defended"`` (the K+1 model; the default when a detector is given) or ``"classifier"`` (the
  classifier alone, RobustBench's robust accuracy; the default without one); ``reject_scale``: the slope of the
  reject logit (:func:`~rcedetect.defended.defend`);
- ``targeted``: None (the library's untargeted mode), ``"random"`` (a seeded random class ≠ y) or
  ``"least_likely"``, always one of the K real classes: Carlini & Wagner's attack on the K+1 model is targeted,
  because an untargeted one is satisfied by the reject class (a class without a targeted mode refuses it);
- every other setting is a keyword argument of the library's class (``steps``, ``n_restarts``, ``loss``,
  ``version``, ...); ``n_classes`` defaults to K + 1 on the defended model and K on the classifier alone.

The library gets the TRUE labels and runs unchanged; its own success notion ("argmax ≠ y") counts a rejection as
a success, so success here is always re-counted by the one rule,
:func:`rcedetect.operating_point.adaptive_success`, on the defended model's verdict (and records by the real
detector's scores). Bad settings (an unknown name, a setting the class does not take, a required one missing)
raise :class:`~rcedetect.errors.ConfigError` when the attack is built, before any work.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..core.errors import ConfigError
from ..core.settings import SEED_RANGE, Rule, check_fields, check_value, setting
from .base import AttackSpec, check_eps, prepare

LIBRARIES = {"torchattacks": "attacks", "foolbox": "peers"}  # library -> the rcedetect extra that installs it
#: settings of the adapter itself; every other setting goes to the library's class
OWN = ("eps", "detector", "seed", "on", "reject_scale", "targeted")
TARGETS = ("defended", "classifier")
#: targeted modes: a seeded random class, or the classifier's least likely one, always among the K real classes
TARGETED = ("random", "least_likely")
#: torchattacks classes that wrap other attacks instead of attacking a model
WRAPPERS = ("MultiAttack",)
#: torchattacks attacks that measure L2 without a ``norm`` argument
L2_ATTACKS = ("CW", "PGDL2", "PGDRSL2", "DeepFool", "EADEN")


def is_thirdparty(name) -> bool:
    return isinstance(name, str) and ":" in name


def _split(name: str) -> tuple[str, str]:
    library, _, cls = name.partition(":")
    if library not in LIBRARIES:
        raise ConfigError(f"unknown attack library {library!r} in {name!r}; choose torchattacks:NAME or foolbox:NAME")
    if not cls.isidentifier():
        raise ConfigError(f"{name!r} names no attack class; write {library}:NAME (e.g. torchattacks:APGD)")
    return library, cls


def _import(library: str):
    try:
        if library == "torchattacks":
            import torchattacks as module
        else:
            import foolbox as module
    except ImportError as e:
        raise ConfigError(f"{library} is not installed (needed for {library}:NAME attacks); install it with "
                          f"pip install 'rcedetect[{LIBRARIES[library]}]'") from e
    return module


def _classes(library: str, module) -> dict[str, type]:
    """The attack classes a library offers, by name."""
    if library == "torchattacks":
        from torchattacks.attack import Attack

        return {n: c for n in getattr(module, "__all__", dir(module)) if inspect.isclass(c := getattr(module, n, None))
                and issubclass(c, Attack) and c is not Attack and n not in WRAPPERS}
    from foolbox.attacks.base import Attack

    return {n: c for n in dir(module.attacks) if inspect.isclass(c := getattr(module.attacks, n, None))
            and issubclass(c, Attack) and not inspect.isabstract(c)}


def _parameters(library: str, cls: type) -> dict[str, inspect.Parameter]:
    """The keyword arguments of the class's constructor (without self, and the model for torchattacks)."""
    params = dict(inspect.signature(cls.__init__).parameters)
    params.pop("self", None)
    if library == "torchattacks":
        params.pop("model", None)
    return params


def thirdparty_spec(name: str) -> ThirdPartySpec:
    """The spec of ``library:NAME``; ConfigError for an unknown library or class, or a library not installed."""
    library, cls_name = _split(name)
    module = _import(library)
    classes = _classes(library, module)
    if cls_name not in classes:
        raise ConfigError(f"unknown attack {name!r}; {library} has {', '.join(sorted(classes))}")
    return ThirdPartySpec(name, ThirdPartyAttack, library=library, library_cls=classes[cls_name])


class _Probe(nn.Module):
    """A stand-in model: library attacks are built on it once to check their settings, never called."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))

    def forward(self, x):  # pragma: no cover - never called
        return x.flatten(1)[:, :2] * self.w


@dataclass(frozen=True)
class ThirdPartySpec(AttackSpec):
    """An :class:`~rcedetect.attacks.AttackSpec` of a library's attack class: ``eps`` where the class takes one,
    ``seed`` and ``detector`` always; any keyword argument of the class as a setting."""

    library: str = ""
    library_cls: Any = None

    @property
    def parameters(self) -> dict[str, inspect.Parameter]:
        return _parameters(self.library, self.library_cls)

    @property
    def library_takes_eps(self) -> bool:
        if self.library == "foolbox":
            from foolbox.attacks.base import FixedEpsilonAttack

            return issubclass(self.library_cls, FixedEpsilonAttack)
        return "eps" in self.parameters

    @property
    def fields(self) -> dict[str, dataclasses.Field]:
        own = {f.name: f for f in dataclasses.fields(ThirdPartyAttack) if f.name in OWN}
        if not self.library_takes_eps:
            own.pop("eps")
        return own

    @property
    def required(self) -> tuple[str, ...]:
        return ("eps",) if self.library_takes_eps else ()

    def create(self, **settings: Any) -> ThirdPartyAttack:
        if self.library_takes_eps and settings.get("eps") is None:
            raise ConfigError(f"attack {self.name!r} needs eps")
        if not self.library_takes_eps and settings.get("eps") is not None:
            raise ConfigError(f"attack {self.name!r} takes no eps (it is not a fixed-budget attack)")
        own = {k: settings[k] for k in OWN if k in settings}
        options = {k: v for k, v in settings.items() if k not in OWN}
        attack = ThirdPartyAttack(self.name, options=tuple(sorted(options.items())),
                                  **{k: v for k, v in own.items() if k != "eps"},
                                  eps=own.get("eps") if self.library_takes_eps else None)
        attack.build(_Probe(), num_classes=10)  # bad settings fail here, before any work
        return attack


@dataclass(frozen=True)
class ThirdPartyAttack:
    """``library:NAME`` run on the defended model (module docstring): ``eps``, ``detector``, ``seed``, ``on``
    (``"defended"`` / ``"classifier"``; None = defended when a detector is given), ``reject_scale``, ``targeted``
    (None, ``"random"``, ``"least_likely"``), and ``options``, the (key, value) keyword arguments of the
    library's class.

    Success = :func:`~rcedetect.operating_point.adaptive_success` on the defended model's verdict (the true label
    and the reject class both count as failure); extras ``accepted`` and ``misclassified`` at x*."""

    name: str
    eps: float | None = None
    detector: Any = field(default=None, repr=False, compare=False)
    seed: int = setting(0, lo=SEED_RANGE[0], hi=SEED_RANGE[1])
    on: str | None = setting(None, choices=TARGETS)
    reject_scale: float = setting(1.0, lo=0, lo_open=True)
    targeted: str | None = setting(None, choices=TARGETED)
    options: tuple[tuple[str, Any], ...] = field(default=(), compare=False)

    def __post_init__(self):
        spec = thirdparty_spec(self.name)
        object.__setattr__(self, "_spec", spec)
        check_fields(self)
        if self.eps is not None:
            check_eps(self.eps, norm=self.norm)
        params = self._spec.parameters
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        unknown = sorted(k for k, _ in self.options if k not in params) if not takes_any else []
        if unknown:
            known = sorted(set(params) - {"eps", "seed"} | set(OWN) - {"detector"})
            raise ConfigError(f"{self.name} takes no setting {', '.join(map(repr, unknown))}; its settings: "
                              f"{', '.join(known)}")
        given = {k for k, _ in self.options} | {"eps", "seed", "n_classes"}
        missing = [n for n, p in params.items() if p.default is inspect.Parameter.empty and n not in given
                   and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)]
        if missing:
            raise ConfigError(f"{self.name} needs the setting {', '.join(missing)} (give it with --set "
                              f"{missing[0]}=... or in the attack's settings table)")
        for key, value in self.options:
            if key in params:
                _check_option_type(self.name, key, value, params[key].default)

    # -- what the attack is -------------------------------------------------------------------------------
    @property
    def library(self) -> str:
        return self._spec.library

    @property
    def norm(self) -> str:
        """The budget's norm in this package's spelling ("linf", "l2", ...), from the ``norm`` setting, else the
        class's default, else its name."""
        norm = dict(self.options).get("norm")
        params = self._spec.parameters
        if norm is None and "norm" in params and isinstance(params["norm"].default, str):
            norm = params["norm"].default
        cls = self._spec.library_cls.__name__
        if norm is None:
            norm = "l2" if cls in L2_ATTACKS or cls.startswith("L2") else "l1" if cls.startswith("L1") else "linf"
        return str(norm).lower()

    def target(self) -> str:
        return self.on or ("defended" if self.detector is not None else "classifier")

    def passes_per_image(self) -> float:
        """A rough cost: 3 units per forward + backward pass, steps × restarts (× 10 targets for a targeted
        sweep); 1 unit per query of a query attack (Square: ``n_queries`` × restarts); AutoAttack's standard
        cascade at its worst."""
        opts = dict(self.options)
        cls = self._spec.library_cls.__name__
        if cls == "AutoAttack":
            return 3.0 * (100 + 9 * 100 + 9 * 100) + 5000.0
        params = self._spec.parameters
        if "n_queries" in params and "steps" not in params:
            queries, restarts = opts.get("n_queries", params["n_queries"].default), opts.get("n_restarts", 1)
            return float(queries) * float(restarts) if isinstance(queries, int) and isinstance(restarts, int) \
                else 30.0
        steps = opts.get("steps", params["steps"].default if "steps" in params else 10)
        restarts = opts.get("n_restarts", params["n_restarts"].default if "n_restarts" in params else 1)
        targets = 9 if cls in ("APGDT", "FAB") else 1
        try:
            return 3.0 * float(steps) * float(restarts) * targets
        except (TypeError, ValueError):
            return 30.0

    # -- running it ----------------------------------------------------------------------------------------
    def model_for(self, classifier) -> nn.Module:
        """The network the library attacks: the defended K+1 model, or the classifier alone."""
        if self.target() == "classifier":
            return classifier
        if self.detector is None:
            raise ConfigError(f"{self.name} on the defended model needs a detector (a calibrated Detector or its "
                              "term); set on=\"classifier\" to attack the classifier alone")
        from ..detectors.defended import defend

        return defend(classifier, self.detector, scale=self.reject_scale)

    def build(self, model: nn.Module, num_classes: int):
        """The library's attack object on ``model`` (ConfigError naming the setting where the class refuses)."""
        params = self._spec.parameters
        kw = dict(self.options)
        if "eps" in params and self.eps is not None:
            kw["eps"] = self.eps
        if "seed" in params:
            kw["seed"] = self.seed
        if "n_classes" in params and "n_classes" not in kw:
            kw["n_classes"] = num_classes
        cls = self._spec.library_cls
        try:
            attack = cls(model, **kw) if self.library == "torchattacks" else cls(**kw)
        except TypeError as e:
            raise ConfigError(f"bad settings for attack {self.name!r}: {e}") from e
        except (ValueError, AssertionError, KeyError) as e:
            raise ConfigError(f"bad settings for attack {self.name!r}: {e or type(e).__name__}") from e
        if self.targeted and self.library == "torchattacks" and "targeted" not in attack.supported_mode:
            raise ConfigError(f"{self.name} has no targeted mode; drop targeted={self.targeted!r} (or use a "
                              "targeted attack such as torchattacks:PGD, or APGDT's own target sweep)")
        return attack

    def targets(self, classifier, x: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """The target of each image, one of the K real classes other than its label (never the reject class)."""
        k = classifier.num_classes
        if self.targeted == "least_likely":
            with torch.no_grad():
                logits = classifier.logits(x).clone()
            logits[torch.arange(len(x), device=x.device), label] = math.inf
            return logits.argmin(1)
        g = torch.Generator().manual_seed(int(self.seed))
        shift = torch.randint(1, k, (len(x),), generator=g).to(label.device)
        return (label + shift) % k

    def __call__(self, classifier, x: torch.Tensor, y: torch.Tensor | None = None):
        from ..stats.operating_point import adaptive_success
        from .base import finish
        from .engine import distortion, per_example, project

        x_in = x
        x, label = prepare(classifier, x, y)
        model = self.model_for(classifier)
        defended = model is not classifier
        k = classifier.num_classes
        attack = self.build(model, k + 1 if defended else k)
        devices = [x.device] if x.device.type == "cuda" else []
        target = self.targets(classifier, x, label) if self.targeted else None
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.seed)
            if self.library == "torchattacks":
                if target is not None:
                    attack.set_mode_targeted_by_function(lambda images, labels: target, quiet=True)
                x_adv = attack(x, label)
            else:
                import foolbox as fb

                fmodel = fb.PyTorchModel(model, bounds=(0.0, 1.0), device=x.device)
                criterion = (fb.criteria.TargetedMisclassification(target) if target is not None
                             else fb.criteria.Misclassification(label))
                _, x_adv, _ = attack(fmodel, x, criterion, epsilons=self.eps)
        x_adv = x_adv.detach().to(x.device, torch.float32)
        if self.eps is not None and self.norm in ("linf", "l2"):  # an image outside the ball is put back on it
            over = distortion(x, x_adv, self.norm) > self.eps * (1 + 1e-6)
            x_adv = torch.where(per_example(over, x), project(x, x_adv, self.eps, self.norm), x_adv)
        x_adv = x_adv.clamp(0.0, 1.0)
        with torch.no_grad():
            out = model(x_adv)
        pred = out.argmax(1)
        accepted = pred != k if defended else torch.ones_like(pred, dtype=torch.bool)
        success = adaptive_success(pred, label, accepted)
        its = torch.zeros(len(x), dtype=torch.long, device=x.device)
        extra = {"accepted": accepted, "misclassified": out[:, :k].argmax(1) != label}
        return finish(x_in, x, x_adv, success, its, target=target, **extra)


def _check_option_type(name: str, key: str, value: Any, default: Any) -> None:
    """A library setting of the kind its default has (a number for a number, true/false for a flag, a string for a
    string): ``steps = "ten"`` is refused before the run, not in the library's loop after training."""
    # an int default may take a float (torchattacks' CW: c=1, c=0.5); no default, or None: the library's own check
    kind = ("bool" if isinstance(default, bool) else "float | int" if isinstance(default, (int, float))
            else "str" if isinstance(default, str) else "")
    check_value(value, kind, Rule(hint=f" (its default is {default!r})"), f"{name}: setting {key}")


def attack_norm(name: str, settings: dict) -> str:
    """The norm of attack ``name`` with ``settings`` in this package's spelling: the ``norm`` setting of an attack
    of this package ("linf" by default), the library's for ``library:NAME``."""
    if not is_thirdparty(name):
        return settings.get("norm", "linf")
    options = tuple(sorted((k, v) for k, v in settings.items() if k not in OWN))
    return ThirdPartyAttack(name, options=options).norm
