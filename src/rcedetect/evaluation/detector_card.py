"""Any detector, evaluated adaptively in one call: :func:`evaluate_detector` -> a :class:`~.card.DetectorCard`.

A detector of adversarial examples is worth what survives an attacker who knows it (Carlini & Wagner 2017,
"Adversarial examples are not easily detected"; Tramèr et al. 2020; Bryniarski et al. ICLR 2022). Given a model, a
detector — a registered metric of this package (fitted here), a fitted :class:`~rcedetect.detectors.Detector`, or
the user's own ``score(x) -> (n,)`` (higher = more adversarial) — and clean images with their labels:

1. everything is checked before any attack runs (the settings, the images and labels, the model's logits, the
   detector's scores on the clean and held-out images: shape, dtype, finiteness; :mod:`.detector_inputs`);
2. the threshold T rejects the share ``fpr`` of the clean held-out images ``x_heldout`` (never the attacked ones,
   protocol §4.5), unless one is given;
3. the attacks of ``version`` (:mod:`.detector_suite`) run against the detector term score − T at every ε, on the
   one attack path of ``rce adaptive`` (:func:`.detector_runs.attack_parts`); an image is fooled when some attack
   made it misclassified AND accepted within the budget (:func:`.detector_runs.fooled`);
4. the sanity checks (:mod:`.detector_sanity`) run, and a failed one is a loud :class:`~.card.SanityWarning`: the
   detector may be masking gradients, and the numbers are upper bounds on its robustness;
5. a score without a useful input gradient (an argmax, a rounding, a step) is still evaluated, by the gradient-free
   attacks, and the card says so.
"""

from __future__ import annotations

import re
import tempfile
import time
import warnings
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

from ..attacks.base import check_seed, check_steps
from ..core.distributed import world
from ..core.errors import ConfigError, InputError
from ..core.io import atomic_write_bytes, check_writable_dir, config_hash, versions, write_json
from ..core.validation import check_images, check_labels, check_model_input
from ..detectors.base import ScoreTerm, score_images
from ..stats.metrics import threshold_for_fpr, wilson_interval
from . import detector_runs as runs
from . import detector_sanity as sanity
from . import detector_suite as suites
from .card import DetectorCard, SanityWarning
from .detector_inputs import check_arguments, classifier_of, metric_of
from .user_detector import check_scores


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
    attack's batches are saved as they finish (a rerun skips them). ``progress``: a progress bar.

    Raises ConfigError (settings, names, a missing threshold), InputError (images, labels, the model's output, the
    detector's scores, missing training data) or NotFittedError (a Detector not fitted) before any attack runs.
    """
    t_start = time.perf_counter()
    norm, grid, fpr, threshold, version = check_arguments(norm=norm, eps=eps, fpr=fpr, threshold=threshold,
                                                          version=version)
    check_seed(seed)
    check_steps(batch_size, "batch_size")
    check_steps(sample, "sample")
    check_images(x)
    if len(x) == 0:
        raise InputError("x holds no images: give at least one clean image to attack")
    clf, model_desc = classifier_of(model, x, objective)
    was_training = clf.training
    clf.eval()
    try:
        check_model_input(clf, x)
        check_labels(y, len(x), clf.num_classes)
        if x_heldout is not None:
            check_model_input(clf, x_heldout, "x_heldout")
            if len(x_heldout) == 0:
                raise InputError("x_heldout holds no images: the threshold needs clean held-out images")
        metric, det_desc, own = metric_of(detector, clf, x_train, y_train, detector_settings)
        x, y = x.detach().cpu().float(), y.detach().cpu().long()

        # the threshold, from clean held-out images only (the scores are checked here, before any attack)
        s_held = None if x_heldout is None else check_scores(score_images(metric, clf, x_heldout, batch_size),
                                                             len(x_heldout), "the detector's score of x_heldout")
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
        term, t = ScoreTerm(metric, float(t)), float(t)
        m = min(sample, len(x))
        grads = sanity.term_gradients(clf, term, x[:m])
        status = sanity.gradient_status(grads)
        plan, notes = suites.plan(version, norm, clf.num_classes, term.density is not None, settings, steps, status)

        records = _attack(plan, clf, term, x, y, norm, grid, seed, batch_size, out, progress, notes,
                          {"x": runs.fingerprint(x, y), "model": runs.model_fingerprint(clf), "threshold": t,
                           "detector": det_desc, "norm": norm, "seed": seed, "batch_size": batch_size})
        plan = {k: v for k, v in plan.items() if all(k in records[e] for e in records)}
        correct, accepted_clean = pred_clean == y, s_clean <= t
        checks = sanity.run(clf, term, x, y, correct, grads, records, plan, norm, seed, batch_size, m, steps, status)
    finally:
        clf.train(was_training)
    n_cc, clean_rejection = int(correct.sum()), float((~accepted_clean).double().mean())
    card = DetectorCard(
        detector=det_desc, model=model_desc, norm=norm, eps=sorted(grid), fpr=fpr, threshold=t,
        threshold_source=source, version=version if isinstance(version, str) else "custom", attacks=list(plan),
        n_images=len(x), n_clean_correct=n_cc, clean_accuracy=float(correct.double().mean()),
        clean_rejection=clean_rejection,
        heldout_rejection=float((s_held > t).double().mean()) if s_held is not None else None,
        clean_accuracy_with_rejection=float((correct & accepted_clean).double().mean()),
        per_eps=_per_eps(records, correct, ~correct & accepted_clean, len(x)), sanity=checks, gradient=status,
        notes=notes, settings={"attacks": plan, "seed": seed, "batch_size": batch_size, "sample": m, "steps": steps},
        seconds=time.perf_counter() - t_start, versions=versions())
    card.verdict = "vacuous" if clean_rejection >= 0.5 else "measured" if card.sanity_passed else "unreliable"
    if card.verdict == "vacuous":
        card.notes.append(f"The detector rejects {100 * clean_rejection:.0f} % of the clean attacked images: a low "
                          "success rate is bought by refusing clean inputs, not by robustness; no win is claimed.")
    if n_cc == 0:
        card.notes.append("No attacked image is classified correctly when clean: the success rate is undefined.")
    if out is not None:
        write_json(Path(out) / "card.json", card.to_json())
        atomic_write_bytes(Path(out) / "card.md", card.to_markdown().encode())
    if not card.sanity_passed:
        warnings.warn(SanityWarning(
            f"sanity check(s) failed for the detector {det_desc}: {', '.join(card.failed_checks)}. The detector may "
            "be masking gradients (or the attacks are failing): the numbers of this card are upper bounds on its "
            "robustness, not measurements."), stacklevel=2)
    return card


def _attack(plan, clf, term, x, y, norm, grid, seed, batch_size, out, progress, notes, base_key) -> dict:
    """{ε: {attack: record}}: every attack of ``plan`` at every ε on the one attack path
    (:func:`.detector_runs.attack_parts`; its batches saved under ``out``/attacks/, one folder per attack, ε and
    everything the result depends on, so that a rerun resumes); a record holds ``fooled`` per image (within ε,
    misclassified AND accepted), ``seconds``, ``passes_per_image`` and ``fooled_at`` {steps: fooled} of the
    horizons of ``pgd_detector`` at the middle ε (the check ``more_iterations``). A library's attack that fails is
    left out with a note."""
    from tqdm import tqdm

    mid = sorted(grid)[len(grid) // 2]
    factories = {(name, e): runs.build(name, kw, e, seed, term) for e in grid for name, kw in plan.items()}
    folder = None
    if out is None and world().active:  # the ranks share out the batches through files every rank reads
        raise ConfigError("under torchrun evaluate_detector needs out= a folder that every process can see")
    if out is not None:
        folder = Path(out) / "attacks"
        folder.mkdir(parents=True, exist_ok=True)
        check_writable_dir(folder, "output folder")
    records: dict[float, dict[str, dict]] = {}
    with (nullcontext(folder) if folder is not None else tempfile.TemporaryDirectory()) as where, \
            tqdm(total=len(grid) * len(plan) * len(x), unit="img", desc=f"attacks on {base_key['detector']}",
                 disable=not progress, dynamic_ncols=True) as bar:
        for e in sorted(grid):
            records[e] = {}
            for name, kw in plan.items():
                horizons = _horizons(kw) if (name == "pgd_detector" and e == mid) else ()
                key = {**base_key, "attack": name, "settings": kw, "eps": e, "horizons": list(horizons)}
                bar.set_postfix_str(f"{name} ε={e:g}")
                try:
                    records[e][name] = runs.attack_record(
                        Path(where) / f"{re.sub(r'[^A-Za-z0-9_.-]', '-', name)}-eps{e:.6g}-{config_hash(key)}",
                        factories[(name, e)], clf, term, x, y, norm, e, batch_size, horizons=horizons, bar=bar)
                except (RuntimeError, ValueError, IndexError, AssertionError) as err:
                    if ":" not in name:  # a failure of this package's attack is a bug: let it surface
                        raise
                    notes.append(f"{name} failed at ε {e:g} and is left out ({type(err).__name__}: "
                                 f"{str(err).splitlines()[0][:200] if str(err) else ''}).")
    return records


def _horizons(kw: dict) -> tuple[int, ...]:
    steps = int(kw.get("steps", 100))
    return (max(1, steps // 4), steps) if steps >= 4 else (steps,)


def _per_eps(records: dict[float, dict[str, dict]], correct: torch.Tensor, clean_fooled: torch.Tensor,
             n: int) -> list[dict]:
    """Per ε: the worst case over every attack at any ε' ≤ ε (SR@N among clean-correct images, its Wilson interval,
    robust accuracy with rejection), the union at exactly ε, each attack alone, and who found each image first."""
    n_cc = int(correct.sum())

    def rate(k: int) -> float | None:
        return k / n_cc if n_cc else None

    out, union, first = [], torch.zeros(n, dtype=torch.bool), ["clean" if f else None for f in clean_fooled.tolist()]
    for e in sorted(records):
        exact, per_attack = torch.zeros(n, dtype=torch.bool), {}
        for name, rec in records[e].items():
            f = rec["fooled"]
            exact |= f
            for i in (f & ~union & correct).nonzero().flatten().tolist():
                first[i] = first[i] or name
            union |= f
            k = int((f & correct).sum())
            per_attack[name] = {"attack_success_rate": rate(k), "n_fooled": k, "seconds": rec["seconds"],
                                "seconds_per_image": rec["seconds"] / n, "passes_per_image": rec["passes_per_image"]}
        k, k_exact = int((union & correct).sum()), int((exact & correct).sum())
        lo, hi = wilson_interval(k, n_cc)
        out.append({"eps": e, "attack_success_rate": rate(k), "interval": [lo, hi], "n_fooled": k,
                    "sr_at_eps_only": rate(k_exact), "n_fooled_at_eps_only": k_exact,
                    "robust_accuracy_with_rejection": float((~(union | clean_fooled)).double().mean()),
                    "per_attack": per_attack, "first_found": list(first)})
    return out
