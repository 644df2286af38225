"""Any detector, evaluated adaptively in one call: :func:`evaluate_detector` -> a :class:`~.card.DetectorCard`.

A detector of adversarial examples is worth what survives an attacker who knows it (Carlini & Wagner 2017,
"Adversarial examples are not easily detected"; Tramèr et al. 2020; Bryniarski et al. ICLR 2022). Given a model, a
detector — a registered metric of this package (fitted here), a fitted :class:`~rcedetect.detectors.Detector`, or
the user's own ``score(x) -> (n,)`` (higher = more adversarial) — and clean images with their labels:

1. everything is checked before any attack runs (the settings, the images and labels, the model's logits, the
   detector's scores on the clean and held-out images: shape, dtype, finiteness);
2. the threshold T rejects the share ``fpr`` of the clean held-out images ``x_heldout`` (never the attacked ones,
   protocol §4.5), unless one is given;
3. the attacks of ``version`` (:mod:`.detector_suite`) run against the detector term score − T at every ε; an image
   is fooled when some attack made it misclassified AND accepted within the budget (:mod:`.detector_runs`);
4. the sanity checks (:mod:`.detector_sanity`) run, and a failed one is a loud :class:`~.card.SanityWarning`: the
   detector may be masking gradients, and the numbers are upper bounds on its robustness;
5. a score without a useful input gradient (an argmax, a rounding, a step) is still evaluated, by the gradient-free
   attacks, and the card says so.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.errors import ConfigError, InputError, NotFittedError
from ..core.io import versions
from ..core.validation import check_images, check_labels, check_model_input
from ..detectors.base import ScoreTerm, check_metric, score_images
from ..stats.metrics import threshold_for_fpr, wilson_interval
from . import detector_runs as runs
from . import detector_sanity as sanity
from . import detector_suite as suites
from .card import DetectorCard, SanityWarning
from .user_detector import UserMetric, check_scores, resolve_callable

NORMS = ("linf", "l2")


def evaluate_detector(model, detector, x: torch.Tensor, y: torch.Tensor, *, x_heldout: torch.Tensor | None = None,
                      norm: str = "linf", eps: float | Sequence[float] = 8 / 255, fpr: float = 0.05,
                      version: str | Sequence[str] = "standard", threshold: float | None = None,
                      x_train: torch.Tensor | None = None, y_train: torch.Tensor | None = None,
                      detector_settings: dict[str, Any] | None = None, settings: dict[str, dict] | None = None,
                      steps: int | None = None, objective: str = "ce", seed: int = 0, batch_size: int = 100,
                      sample: int = 32, out: str | Path | None = None, progress: bool = False) -> DetectorCard:
    """The adaptive evaluation of ``detector`` on ``model`` (module docstring); returns the detector card.

    ``model``: a :class:`~rcedetect.Classifier` (``rcedetect.wrap(...)``), or any ``nn.Module`` returning (n, K)
    logits (wrapped here with :func:`~rcedetect.wrap`, ``objective`` = how it was trained). ``detector``: a
    registered metric name (``"kd"`` needs ``x_train``/``y_train``; ``detector_settings`` go to its constructor),
    a fitted :class:`~rcedetect.detectors.Detector` of this model, a callable ``score(x) -> (n,)`` float tensor
    (higher = more adversarial; differentiable for the gradient attacks), or ``"module:function"``. ``x``, ``y``:
    the clean images (NCHW in [0, 1]) to attack and their true labels. ``x_heldout``: clean held-out images for the
    threshold at ``fpr`` in (0, 1), unless ``threshold`` is given (or the Detector is calibrated). ``norm``:
    "linf" or "l2"; ``eps``: one budget > 0 or several (a grid: each ε's worst case takes the attacks at every
    ε' ≤ ε, and the checks include that success grows with ε). ``version``: "standard", "fast" or a list of
    attack names; ``settings``: {attack: {setting: value}}; ``steps``: every attack's steps. ``seed``: the attacks'
    seeds (per batch of ``batch_size``); ``sample``: images of the sanity checks. ``out``: a folder where each
    finished attack is saved (a rerun skips it). ``progress``: a progress bar.

    Raises ConfigError (settings, names, a missing threshold), InputError (images, labels, the model's output, the
    detector's scores, missing training data) or NotFittedError (a Detector not fitted) before any attack runs.
    """
    t_start = time.perf_counter()
    norm, grid, fpr, threshold, version = check_arguments(norm=norm, eps=eps, fpr=fpr, threshold=threshold,
                                                          version=version)
    for name, v, lo in (("seed", seed, 0), ("batch_size", batch_size, 1), ("sample", sample, 1)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ConfigError(f"{name} must be an integer >= {lo}, got {v!r}")
    check_images(x)
    if len(x) == 0:
        raise InputError("x holds no images: give at least one clean image to attack")
    clf, model_desc = _classifier(model, x, objective)
    was_training = clf.training
    clf.eval()
    try:
        return _evaluate(clf, model_desc, detector, x, y, x_heldout, norm, grid, fpr, version, threshold, x_train,
                         y_train, detector_settings, settings, steps, seed, batch_size, sample, out, progress,
                         t_start)
    finally:
        clf.train(was_training)


def _evaluate(clf, model_desc, detector, x, y, x_heldout, norm, grid, fpr, version, threshold, x_train, y_train,
              detector_settings, settings, steps, seed, batch_size, sample, out, progress, t_start) -> DetectorCard:
    check_model_input(clf, x)
    check_labels(y, len(x), clf.num_classes)
    if x_heldout is not None:
        check_model_input(clf, x_heldout, "x_heldout")
        if len(x_heldout) == 0:
            raise InputError("x_heldout holds no images: the threshold needs clean held-out images")
    metric, det_desc, own = _metric(detector, clf, x_train, y_train, detector_settings)
    x, y = x.detach().cpu().float(), y.detach().cpu().long()

    # the threshold, from clean held-out images only (the scores are checked here, before any attack)
    s_held = _scores(metric, clf, x_heldout, batch_size, "x_heldout") if x_heldout is not None else None
    if threshold is not None:
        t, source = threshold, "given"
        fpr = float((s_held > t).double().mean()) if s_held is not None else None
    elif s_held is not None:
        t, source = threshold_for_fpr(s_held, fpr), "heldout"
    elif own is not None:
        t, source, fpr = own[0], "detector", own[1]
    else:
        raise ConfigError("the threshold needs clean held-out images: give x_heldout= (or threshold=)")
    pred_clean, s_clean = runs.judge(clf, metric, x, batch_size)
    check_scores(s_clean, len(x), f"the detector {det_desc}")
    term = ScoreTerm(metric, float(t))

    # the score's input gradient decides which attacks can see the detector
    m = min(sample, len(x))
    grads = sanity.term_gradients(clf, term, x[:m])
    status = sanity.gradient_status(grads)
    density = getattr(term, "density", None) is not None
    plan = suites.suite(version, norm, clf.num_classes, density, settings, steps)
    notes = []
    if status in ("none", "non_finite"):
        free = suites.gradient_free_for(norm)
        for name in free:
            plan.setdefault(name, suites.suite([name], norm, clf.num_classes, density, None, steps)[name])
        if status == "non_finite":
            plan = {k: v for k, v in plan.items() if k in suites.GRADIENT_FREE}
        if not plan:
            raise ConfigError(f"the detector's score has a non-finite input gradient and no gradient-free attack "
                              f"is available for {norm} (install torchattacks for Square)")
        notes.append(f"The detector's score has {'no' if status == 'none' else 'a non-finite'} input gradient on the "
                     f"sample: the gradient attacks {'see only the classifier' if status == 'none' else 'were not run'};"
                     f" the gradient-free attacks ({', '.join(free) or 'none available'}) carry the evaluation.")
    mid = sorted(grid)[len(grid) // 2]
    factories = {(name, e): runs.build(name, kw, e, seed, term) for e in grid for name, kw in plan.items()}

    # the attacks, resumable per attack
    folder = None
    if out is not None:
        from ..core.io import check_writable_dir

        folder = Path(out) / "attacks"
        folder.mkdir(parents=True, exist_ok=True)
        check_writable_dir(folder, "output folder")
    base_key = {"x": runs.fingerprint(x, y), "model": runs.model_fingerprint(clf), "threshold": float(t),
                "detector": det_desc, "norm": norm, "seed": seed, "batch_size": batch_size}
    records: dict[float, dict[str, dict]] = {}
    from tqdm import tqdm

    with tqdm(total=len(grid) * len(plan) * len(x), unit="img", desc=f"attacks on {det_desc}", disable=not progress,
              dynamic_ncols=True) as bar:
        for e in sorted(grid):
            records[e] = {}
            for name, kw in plan.items():
                horizons = _horizons(kw) if (name == "pgd_detector" and e == mid) else ()
                bar.set_postfix_str(f"{name} ε={e:g}")
                try:
                    records[e][name] = runs.run_attack(
                        name, factories[(name, e)], clf, metric, float(t), x, y, norm=norm, eps=e,
                        batch_size=batch_size, horizons=horizons, folder=folder, bar=bar,
                        key={**base_key, "attack": name, "settings": kw, "eps": e, "horizons": list(horizons)})
                except (RuntimeError, ValueError, IndexError, AssertionError) as err:
                    if ":" not in name:  # a failure of this package's attack is a bug: let it surface
                        raise
                    notes.append(f"{name} failed at ε {e:g} and is left out ({type(err).__name__}: "
                                 f"{str(err).splitlines()[0][:200] if str(err) else ''}).")
    plan = {k: v for k, v in plan.items() if all(k in records[e] for e in records)}

    correct = pred_clean == y
    accepted_clean = s_clean <= t
    clean_fooled = ~correct & accepted_clean
    per_eps = _per_eps(records, correct, clean_fooled, len(x))
    checks = _checks(clf, metric, term, float(t), x, y, correct, grads, records, plan, norm, grid, mid, seed,
                     batch_size, m, steps, status)
    n_cc = int(correct.sum())
    clean_rejection = float((~accepted_clean).double().mean())
    card = DetectorCard(
        detector=det_desc, model=model_desc, norm=norm, eps=sorted(grid), fpr=fpr, threshold=float(t),
        threshold_source=source, version=version if isinstance(version, str) else "custom", attacks=list(plan),
        n_images=len(x), n_clean_correct=n_cc, clean_accuracy=float(correct.double().mean()),
        clean_rejection=clean_rejection,
        heldout_rejection=float((s_held > t).double().mean()) if s_held is not None else None,
        clean_accuracy_with_rejection=float((correct & accepted_clean).double().mean()), per_eps=per_eps,
        sanity=checks, gradient=status, notes=notes,
        settings={"attacks": plan, "seed": seed, "batch_size": batch_size, "sample": m, "steps": steps},
        seconds=time.perf_counter() - t_start, versions=versions())
    card.verdict = _verdict(card)
    if card.verdict == "vacuous":
        card.notes.append(f"The detector rejects {100 * clean_rejection:.0f} % of the clean attacked images: a low "
                          "success rate is bought by refusing clean inputs, not by robustness; no win is claimed.")
    if n_cc == 0:
        card.notes.append("No attacked image is classified correctly when clean: the success rate is undefined.")
    if folder is not None:
        from ..core.io import atomic_write_bytes, write_json

        write_json(folder.parent / "card.json", card.to_json())
        atomic_write_bytes(folder.parent / "card.md", card.to_markdown().encode())
    if not card.sanity_passed:
        warnings.warn(SanityWarning(
            f"sanity check(s) failed for the detector {det_desc}: {', '.join(card.failed_checks)}. The detector may "
            "be masking gradients (or the attacks are failing): the numbers of this card are upper bounds on its "
            "robustness, not measurements."), stacklevel=3)
    return card


# -- checks of the arguments ----------------------------------------------------------------------------------
def check_arguments(*, norm="linf", eps=8 / 255, fpr=0.05, threshold=None, version="standard"):
    """(norm, the ε grid, fpr, threshold, version) checked and normalised; ConfigError naming what is wrong (the
    command line checks its options with it before loading anything)."""
    norm = _check_norm(norm)
    return norm, _check_eps(eps, norm), _check_fpr(fpr), _check_threshold(threshold), suites.check_version(version)


def _number(v) -> bool:
    return not isinstance(v, bool) and isinstance(v, (int, float))


def _check_norm(norm) -> str:
    if norm not in NORMS:
        raise ConfigError(f"norm must be one of {', '.join(NORMS)}, got {norm!r}")
    return norm


def _check_eps(eps, norm: str) -> list[float]:
    grid = list(eps) if isinstance(eps, (list, tuple)) else [eps]
    if not grid:
        raise ConfigError("eps must be a budget > 0 or a non-empty list of them")
    for e in grid:
        if not _number(e) or not math.isfinite(e) or e <= 0 or (norm == "linf" and e > 1):
            raise ConfigError(f"eps must be > 0 and finite (at most 1 for L∞: images are in [0, 1]), got {e!r}")
    if len(set(grid)) != len(grid):
        raise ConfigError(f"eps lists a budget twice: {grid}")
    return [float(e) for e in grid]


def _check_fpr(fpr) -> float:
    if not _number(fpr) or not math.isfinite(fpr) or not 0 < fpr < 1:
        raise ConfigError(f"fpr (the share of clean held-out images rejected) must be in (0, 1), got {fpr!r}")
    return float(fpr)


def _check_threshold(threshold):
    if threshold is None:
        return None
    if not _number(threshold) or not math.isfinite(threshold):
        raise ConfigError(f"threshold must be a finite number, got {threshold!r}")
    return float(threshold)


def _classifier(model, x: torch.Tensor, objective: str):
    """(the Classifier, a description): a Classifier as it is, any other nn.Module wrapped after its output was
    checked to be (n, K) logits."""
    from ..models.classifier import Classifier
    from ..models.wrapping import wrap

    if isinstance(model, Classifier):
        return model, f"{getattr(model.net, 'arch', type(model.net).__name__)} ({model.objective})"
    if not isinstance(model, nn.Module):
        raise InputError(f"model must be an rcedetect Classifier or a torch.nn.Module returning logits, got "
                         f"{type(model).__name__}")
    clf = wrap(model, objective=objective, in_channels=int(x.shape[1]))
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            probe = x[:2].to(device, torch.float32)
            try:
                logits = clf.net.model(clf.net.prepare(probe))
            except Exception as e:  # the user's network refuses the images: say which
                raise InputError(f"the model fails on images of shape {tuple(x.shape[1:])}: {type(e).__name__}: "
                                 f"{e}") from e
        if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != len(probe) or \
                logits.shape[1] < 2 or not logits.is_floating_point():
            got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            raise InputError(f"the model must return (n, classes) floating-point logits for n images, got {got} for "
                             f"{len(probe)} images")
        if not bool(torch.isfinite(logits).all()):
            raise InputError("the model returns NaN or infinite logits on the clean images")
        clf.net.check_split(tuple(x.shape[1:]))
    finally:
        model.train(was_training)
    clf.input_shape = tuple(int(v) for v in x.shape[1:])
    return clf, f"{type(model).__name__} (wrapped, {objective})"


def _metric(detector, clf, x_train, y_train, detector_settings):
    """(the metric scored, a description, (threshold, fpr) of a calibrated Detector or None)."""
    from ..detectors.threshold import Detector

    if detector_settings is not None and not isinstance(detector, str):
        raise ConfigError("detector_settings apply to a registered metric given by name")
    if isinstance(detector, str) and ":" in detector:
        fn, desc = resolve_callable(detector, clf)
        return UserMetric(fn, desc), desc, None
    if isinstance(detector, str):
        check_metric(detector)
        det = Detector(clf, detector, **(detector_settings or {}))
        if det.scorer.needs_fit or det.scorer.needs_fit_images:
            if x_train is None or y_train is None:
                raise InputError(f"the {detector} detector learns from clean training images: give x_train= and "
                                 "y_train=")
            check_model_input(clf, x_train, "x_train")
            check_labels(y_train, len(x_train), clf.num_classes, name="y_train")
            det.fit(x_train, y_train)
        else:
            det.fit(None)
        return det.scorer, detector, None
    if isinstance(detector, Detector):
        if not detector.fitted:
            raise NotFittedError(f"the {detector.metric} detector is not fitted; call fit(x_train, y_train) first")
        if detector.classifier is not clf:
            raise InputError("the Detector was built for another classifier: pass its own classifier as model")
        own = (float(detector.threshold), detector.fpr) if detector.calibrated else None
        return detector.scorer, detector.metric, own
    if callable(detector):
        desc = getattr(detector, "__qualname__", None) or type(detector).__name__
        return UserMetric(detector, desc), desc, None
    raise InputError(f"detector must be a registered metric name, 'module:function', a fitted Detector or a "
                     f"callable score(x), got {type(detector).__name__}")


def _scores(metric, clf, x, batch_size: int, what: str) -> torch.Tensor:
    s = score_images(metric, clf, x, batch_size)
    return check_scores(s, len(x), f"the detector's score of {what}")


def _horizons(kw: dict) -> tuple[int, ...]:
    steps = int(kw.get("steps", 100))
    return (max(1, steps // 4), steps) if steps >= 4 else (steps,)


# -- the numbers ----------------------------------------------------------------------------------------------
def _flags(rec: dict) -> torch.Tensor:
    return torch.tensor(rec["fooled"], dtype=torch.bool)


def _per_eps(records: dict[float, dict[str, dict]], correct: torch.Tensor, clean_fooled: torch.Tensor,
             n: int) -> list[dict]:
    """Per ε: the worst case over every attack at any ε' ≤ ε (SR@N among clean-correct images, its Wilson interval,
    robust accuracy with rejection), the union at exactly ε, each attack alone, and who found each image first."""
    n_cc = int(correct.sum())
    out, union, first = [], torch.zeros(n, dtype=torch.bool), [None] * n
    for i in range(n):
        if bool(clean_fooled[i]):
            first[i] = "clean"
    for e in sorted(records):
        exact = torch.zeros(n, dtype=torch.bool)
        per_attack = {}
        for name, rec in records[e].items():
            f = _flags(rec)
            exact |= f
            for i in (f & ~union & correct).nonzero().flatten().tolist():
                first[i] = first[i] or name
            union |= f
            k = int((f & correct).sum())
            per_attack[name] = {"attack_success_rate": k / n_cc if n_cc else None, "n_fooled": k,
                                "seconds": rec["seconds"], "seconds_per_image": rec["seconds"] / n,
                                "passes_per_image": rec.get("passes_per_image")}
        k = int((union & correct).sum())
        lo, hi = wilson_interval(k, n_cc)
        out.append({"eps": e, "attack_success_rate": k / n_cc if n_cc else None, "interval": [lo, hi],
                    "n_fooled": k, "sr_at_eps_only": int((exact & correct).sum()) / n_cc if n_cc else None,
                    "n_fooled_at_eps_only": int((exact & correct).sum()),
                    "robust_accuracy_with_rejection": float((~(union | clean_fooled)).double().mean()),
                    "per_attack": per_attack, "first_found": list(first)})
    return out


def _verdict(card: DetectorCard) -> str:
    """"vacuous" (rejects most clean inputs: nothing is claimed), "unreliable" (a sanity check failed) or
    "measured"."""
    if card.clean_rejection >= 0.5:
        return "vacuous"
    return "measured" if card.sanity_passed else "unreliable"


def _checks(clf, metric, term, t, x, y, correct, grads, records, plan, norm, grid, mid, seed, batch_size, m,
            steps, status) -> list[dict]:
    """The sanity checks (:mod:`.detector_sanity`) on the first ``m`` images, reusing the attacks' runs; with a
    non-finite gradient the checks that would step along it are not run (their images would be NaN)."""
    out = [sanity.gradient(grads)]
    cc_m = correct[:m]
    pd_kw = dict(plan.get("pgd_detector") or suites.suite(["pgd_detector"], norm, clf.num_classes, False, None,
                                                          steps)["pgd_detector"])
    xs, ys = x[:m], y[:m]

    def n_fooled(x_adv, eps) -> int:
        j = runs.fooled(clf, metric, t, xs, x_adv, ys, norm, eps, batch_size)
        return int((j["fooled"] & cc_m).sum())

    if status == "non_finite":
        why = "not run: the detector's input gradient is not finite"
        out += [sanity.check("large_eps", None, why), sanity.check("more_iterations", None, why)]
    else:
        # 1. an unbounded budget succeeds (from the clean image and a guided start: at ε = 1 it is another class's
        #    image; each image stops at its first success, so this costs little unless the attacks fail)
        big = 1.0 if norm == "linf" else math.sqrt(x[0].numel())
        attack = runs.build("pgd_detector", {**pd_kw, "restarts": 1, "random_start": False, "guided_starts": 1,
                                             "stop_on_success": True}, big, seed, term)(0)
        out.append(sanity.large_eps(n_fooled(attack(clf, xs, ys).x_adv, big), int(cc_m.sum()), big))
        # 2. more steps never help less: the suite's own run gave both horizons
        rec = records[mid].get("pgd_detector")
        if rec is not None and len(rec.get("fooled_at", {})) == 2:
            (h1, f1), (h2, f2) = sorted(((int(h), torch.tensor(v)) for h, v in rec["fooled_at"].items()))
            out.append(sanity.more_iterations(int((f1 & correct).sum()), int((f2 & correct).sum()), h1, h2,
                                              int(correct.sum())))
        else:
            s = int(pd_kw.get("steps", 100))
            attack = runs.build("pgd_detector", {**pd_kw, "steps": 4 * s}, mid, seed, term)(0)
            short, long = attack.at_steps(clf, xs, ys, (s, 4 * s))
            out.append(sanity.more_iterations(n_fooled(short.x_adv, mid), n_fooled(long.x_adv, mid), s, 4 * s,
                                              int(cc_m.sum())))
    # 3. λ = 0 is plain PGD on the margin
    s0 = min(10, int(pd_kw.get("steps", 100)))
    plain = {"random_start": False, "restarts": 1, "steps": s0, "norm": norm}
    x0 = runs.build("pgd_detector", {**plain, "lambdas": [0.0], "keep_best": False}, mid, seed, term)(0)(clf, xs, ys)
    x1 = runs.build("pgd", {**plain, "loss": "margin"}, mid, seed, term)(0)(clf, xs, ys)
    out.append(sanity.lambda_zero(x0.x_adv, x1.x_adv))
    # 4. monotone in ε
    out.append(sanity.monotone_eps([(e, int((torch.stack([_flags(r) for r in recs.values()]).any(0) & correct)
                                             .sum())) for e, recs in records.items()], int(correct.sum())))
    # 5. the gradient-free attack is not stronger than the gradient attacks
    out.append(_gradient_free(clf, metric, term, t, x, y, correct, records[mid], norm, mid, seed, batch_size, m,
                              steps, cc_m))
    return out


def _gradient_free(clf, metric, term, t, x, y, correct, at_mid, norm, mid, seed, batch_size, m, steps, cc_m):
    grad_names = [k for k in at_mid if k not in suites.GRADIENT_FREE]
    free_names = [k for k in at_mid if k in suites.GRADIENT_FREE]
    if not grad_names:
        return sanity.check("gradient_free", None, "no gradient attack ran")

    def count(rec, rows) -> int:
        return int((_flags(rec)[rows] & correct[rows]).sum())

    if free_names:
        rows = slice(None)
        frees = {k: count(at_mid[k], rows) for k in free_names}
        n = int(correct.sum())
    else:
        free = suites.gradient_free_for(norm)
        if not free:
            return sanity.check("gradient_free", None, f"no gradient-free attack for {norm} (install torchattacks)")
        name, rows = free[0], slice(0, m)
        kw = suites.suite([name], norm, clf.num_classes, False, None, steps)[name]
        res = runs.build(name, kw, mid, seed, term)(0)(clf, x[:m], y[:m])
        j = runs.fooled(clf, metric, t, x[:m], res.x_adv, y[:m], norm, mid, batch_size)
        frees, n = {name: int((j["fooled"] & cc_m).sum())}, int(cc_m.sum())
    free_best = max(frees, key=frees.get)
    grads = {k: count(at_mid[k], rows) for k in grad_names}
    best = max(grads, key=grads.get)
    return sanity.gradient_free(frees[free_best], grads[best], n, free_best, best)
