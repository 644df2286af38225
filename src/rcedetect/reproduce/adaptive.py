"""The adaptive evaluation: attacks that know the detector, against each metric's calibrated threshold.

A detector is worth what survives an attacker who targets the classifier and the detector together (Carlini &
Wagner 2017, "Adversarial examples are not easily detected"; Tramèr et al. 2020; Bryniarski et al. ICLR 2022). For
every main model, metric of ``[adaptive] metrics`` and attack of ``[adaptive.attacks]``, over its ε grid:

- the threshold T is chosen on the clean held-out images alone at ``fpr`` (5 % by default, protocol §4.5);
- the attack gets the detector term score − T (``detectors.ScoreTerm``; the deployed detector, not the paper's η);
  a library's attack (``attack = "torchattacks:APGD"`` in the table, :mod:`rcedetect.attacks.thirdparty`) runs
  unchanged on the defended K+1-class model built from that term (:func:`rcedetect.detectors.defended.defend`);
- the record holds the operating point (SR@N = attacked, clean-correct images that end misclassified AND accepted;
  TPR; robust accuracy with rejection; bootstrap intervals), the classifier's robust accuracy alone and, per
  image, whether it fooled both (:func:`rcedetect.stats.operating_point.adaptive_success`, the one success rule, for
  every attack, a library's included: for the worst case over attacks).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from ..attacks.base import l2_distortion
from ..attacks.thirdparty import attack_norm
from ..core.io import read_json
from ..core.records import AdaptiveRecord, WorstCase
from ..detectors import ScoreTerm
from ..evaluation.detector_runs import adaptive_attack, judge_banks
from ..evaluation.scoring import rounded
from ..stats import metrics
from ..stats.metrics import wilson_interval
from .inputs import Inputs
from .steps import pending, write_record


def threshold(inp: Inputs, model: str, metric: str) -> float:
    """T of ``metric`` on ``model``: rejects the share ``fpr`` of the clean held-out images."""
    return metrics.threshold_for_fpr(inp.heldout_scores(model)[metric], inp.plan.adaptive.fpr)


def term(inp: Inputs, model: str, metric: str) -> ScoreTerm:
    return ScoreTerm(inp.detectors(model)[metric], threshold(inp, model, metric))


def evaluate(inp: Inputs, model: str, metric: str, x_adv: torch.Tensor, n: int) -> dict:
    """Adversarial images ``x_adv`` of the first ``n`` pool images judged on ``model`` against ``metric``'s calibrated
    threshold (:func:`rcedetect.evaluation.detector_runs.judge_banks`: the operating point, ``fooled`` per image as
    a list)."""
    ad, t = inp.plan.adaptive, term(inp, model, metric)
    x, y, _ = inp.pool()
    j = judge_banks(inp.classifier(model), t.metric, t.threshold, inp.heldout_scores(model)[metric],
                    inp.pool_bank(model, n), x[:n], y[:n], x_adv, fpr=ad.fpr, n_boot=ad.bootstrap)
    return {**j, "fooled": j["fooled"].tolist()}


def run_attack(inp: Inputs, model: str, metric: str, attack: str, progress: bool,
               hook: Callable[[str], None]) -> None:
    """Every ε of ``attack`` against ``metric``'s detector on ``model``: part files, then one record per ε
    (:func:`rcedetect.evaluation.detector_runs.adaptive_attack`, as ``rce adaptive`` runs it)."""
    plan, ad = inp.plan, inp.plan.adaptive
    a, t = ad.attacks[attack], term(inp, model, metric)
    x, y, indices, runs, bar = pending(inp, inp.layout.adaptive_runs(model, metric, attack), a.images,
                                       f"{attack} vs {metric} on {model}", progress)
    n = len(x)
    for r in runs:
        res, secs, j = adaptive_attack(r.dir, a.registered, a.settings, r.eps, plan.experiment.seed, t,
                                       inp.classifier(model), x, y, a.batch, heldout=inp.heldout_scores(model)[metric],
                                       clean=inp.pool_bank(model, n), fpr=ad.fpr, n_boot=ad.bootstrap,
                                       indices=indices, bar=bar,
                                       on_part=lambda b, r=r: hook(f"adaptive:{model}:{metric}:{attack}:{r.eps}:{b}"))
        fooled, l2 = j["fooled"], l2_distortion(x, res.x_adv)
        rec = AdaptiveRecord(
            threshold=rounded(t.threshold), operating_point=j["operating_point"], fooled=fooled.tolist(),
            robust_accuracy=rounded(j["robust_accuracy"]), model=model, objective=plan.models[model].train.objective,
            metric=metric, attack=attack, eps=r.eps, norm=attack_norm(a.registered, a.settings) if a.eps else None,
            settings=a.settings, registered=a.registered, config_hash=r.hash, n_images=n,
            attack_success_rate_own=rounded(float(res.success.float().mean())),
            mean_l2_fooled=rounded(float(l2[fooled].mean())) if fooled.any() else None,
            attack_seconds=round(secs, 3), seconds_per_example=secs / n)
        write_record(r.record, rec.to_dict())
    bar.close()


def metrics_of(inp: Inputs, attack: str) -> tuple[str, ...]:
    """The detectors ``attack`` is run against (its own ``metrics`` list, else every adaptive metric)."""
    ad = inp.plan.adaptive
    return ad.attacks[attack].metrics or ad.metrics


def records(inp: Inputs) -> list[AdaptiveRecord]:
    ad = inp.plan.adaptive
    return [AdaptiveRecord.from_dict(read_json(r.record, "adaptive record"), str(r.record)) for model in inp.plan.detected
            for attack in ad.attacks for metric in metrics_of(inp, attack)
            for r in inp.layout.adaptive_runs(model, metric, attack)]


def worst_case(recs: list[AdaptiveRecord | dict]) -> list[dict]:
    """Per (model, metric, norm, ε): an image counts as fooled if ANY attack at ANY ε' ≤ ε fooled both classifier
    and detector (an image in the ε' ball is in the ε ball, and the threshold is the same); SR@N of that union (the
    attacker who tries everything). ``sr_at_eps_only`` keeps the union of the attacks at exactly ε: where it falls
    below a smaller ε's, the attacks weakened with a larger budget, a sign of an attack failing (the sanity check
    ``monotone_eps`` says so)."""
    groups: dict[tuple, list[AdaptiveRecord]] = {}
    for r in (r if isinstance(r, AdaptiveRecord) else AdaptiveRecord.from_dict(r) for r in recs):
        if r.eps is not None:
            groups.setdefault((r.model, r.metric, r.norm or "linf"), []).append(r)
    out = []
    for (model, metric, norm), rs in sorted(groups.items(), key=lambda kv: kv[0]):
        for eps in sorted({r.eps for r in rs}):
            upto = [r for r in rs if r.eps <= eps + 1e-12]
            at = [r for r in upto if abs(r.eps - eps) < 1e-12]
            union, exact = fooled_union(r.fooled for r in upto), fooled_union(r.fooled for r in at)
            n_correct, k = at[0].operating_point["n_clean_correct"], int(union.sum())
            lo, hi = wilson_interval(k, n_correct)
            out.append(WorstCase(
                model=model, objective=at[0].objective, metric=metric, norm=norm, eps=eps,
                attacks=sorted({r.attack for r in at}), n_fooled=k, n_clean_correct=n_correct,
                attack_success_rate=rounded(k / n_correct) if n_correct else None,
                sr_at_eps_only=rounded(int(exact.sum()) / n_correct) if n_correct else None,
                interval=[rounded(lo), rounded(hi)]).to_dict())
    return out


def fooled_union(flags: Iterable[list[bool]], n: int | None = None) -> torch.Tensor:
    """Per image (the first ``n``, else all), whether any of the lists ``flags`` says it was fooled."""
    out = None
    for f in flags:
        f = torch.tensor(f[:n], dtype=torch.bool)
        out = f if out is None else out | f
    return out if out is not None else torch.zeros(n or 0, dtype=torch.bool)
