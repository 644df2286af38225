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

from collections.abc import Callable

import torch

from ..attacks.base import l2_distortion
from ..attacks.thirdparty import attack_norm
from ..detectors import ScoreTerm, score_any
from ..evaluation import attack_store
from ..evaluation.scoring import rounded
from ..models import features
from ..models.classifier import FINAL
from ..stats import metrics
from ..stats.metrics import wilson_interval
from ..stats.operating_point import adaptive_success, fpr_key, operating_points
from .inputs import Inputs
from .steps import write_record


def threshold(inp: Inputs, model: str, metric: str) -> float:
    """T of ``metric`` on ``model``: rejects the share ``fpr`` of the clean held-out images."""
    return metrics.threshold_for_fpr(inp.heldout_scores(model)[metric], inp.plan.adaptive.fpr)


def term(inp: Inputs, model: str, metric: str) -> ScoreTerm:
    return ScoreTerm(inp.detectors(model)[metric], threshold(inp, model, metric))


def evaluate(inp: Inputs, model: str, metric: str, x_adv: torch.Tensor, n: int, success=None) -> dict:
    """The operating point of adversarial images ``x_adv`` of the first ``n`` pool images, scored on ``model``
    with ``metric``'s calibrated threshold; ``fooled`` per image (clean correct, misclassified, accepted)."""
    ad = inp.plan.adaptive
    clf, det = inp.classifier(model), inp.detectors(model)[metric]
    _, y, _ = inp.pool()
    y = y[:n]
    clean = inp.pool_bank(model, n)
    adv = features.extract(clf, x_adv, layers=[n for n in det.layers if n != FINAL])
    x_clean = inp.pool()[0][:n]
    s_clean, s_adv = score_any(det, clf, clean, x_clean), score_any(det, clf, adv, x_adv)
    t = threshold(inp, model, metric)
    op = operating_points(inp.heldout_scores(model)[metric], s_clean, s_adv, y, clean.predictions, adv.predictions,
                          success=success, fprs=(ad.fpr,), n_boot=ad.bootstrap,
                          resample_heldout=False)[fpr_key(ad.fpr)]  # the attack aimed at this very T
    fooled = (clean.predictions == y) & adaptive_success(adv.predictions, y, s_adv <= t)
    return {"threshold": rounded(t), "operating_point": op, "fooled": fooled.tolist(),
            "robust_accuracy": rounded(float((adv.predictions == y).double().mean()))}  # the classifier alone


def run_attack(inp: Inputs, model: str, metric: str, attack: str, progress: bool,
               hook: Callable[[str], None]) -> None:
    """Every ε of ``attack`` against ``metric``'s detector on ``model``: part files, then one record per ε."""
    from tqdm.auto import tqdm

    plan, layout = inp.plan, inp.layout
    a = plan.adaptive.attacks[attack]
    clf = inp.classifier(model)
    x_pool, y_pool, idx_pool = inp.pool()
    n = min(a.images, len(x_pool))
    x, y, indices = x_pool[:n], y_pool[:n], idx_pool[:n]
    detector = term(inp, model, metric) if "detector" in a.spec.fields else None
    runs = [r for r in layout.adaptive_runs(model, metric, attack) if not r.record.is_file()]
    bar = tqdm(total=n * len(runs), desc=f"{attack} vs {metric} on {model}", disable=not progress, leave=False,
               dynamic_ncols=True)
    for r in runs:
        factory = attack_store.attack_factory(a.registered, a.settings, r.eps, plan.experiment.seed, detector=detector)
        attack_store.run_parts(r.dir, factory, clf, x, y, a.batch, indices=indices, bar=bar,
                               on_part=lambda b, r=r: hook(f"adaptive:{model}:{metric}:{attack}:{r.eps}:{b}"))
        res, secs, _ = attack_store.load_parts(r.dir, n, a.batch, x)
        rec = evaluate(inp, model, metric, res.x_adv, n)
        fooled = torch.tensor(rec["fooled"], dtype=torch.bool)
        l2 = l2_distortion(x, res.x_adv)
        rec.update(model=model, objective=plan.models[model].train.objective, metric=metric, attack=attack,
                   eps=r.eps, norm=attack_norm(a.registered, a.settings) if a.eps else None, settings=a.settings,
                   registered=a.registered, config_hash=r.hash, n_images=n,
                   attack_success_rate_own=rounded(float(res.success.float().mean())),
                   mean_l2_fooled=rounded(float(l2[fooled].mean())) if fooled.any() else None,
                   attack_seconds=round(secs, 3), seconds_per_example=secs / n)
        write_record(r.record, rec)
    bar.close()


def metrics_of(inp: Inputs, attack: str) -> tuple[str, ...]:
    """The detectors ``attack`` is run against (its own ``metrics`` list, else every adaptive metric)."""
    ad = inp.plan.adaptive
    return ad.attacks[attack].metrics or ad.metrics


def records(inp: Inputs) -> list[dict]:
    from ..core.io import read_json

    ad = inp.plan.adaptive
    return [read_json(r.record, "adaptive record") for model in inp.plan.detected for attack in ad.attacks
            for metric in metrics_of(inp, attack) for r in inp.layout.adaptive_runs(model, metric, attack)]


def worst_case(recs: list[dict]) -> list[dict]:
    """Per (model, metric, norm, ε): an image counts as fooled if ANY attack at ANY ε' ≤ ε fooled both classifier
    and detector (an image in the ε' ball is in the ε ball, and the threshold is the same); SR@N of that union (the
    attacker who tries everything). ``sr_at_eps_only`` keeps the union of the attacks at exactly ε: where it falls
    below a smaller ε's, the attacks weakened with a larger budget, a sign of an attack failing (the sanity check
    ``monotone_eps`` says so)."""
    groups: dict[tuple, list[dict]] = {}
    for r in recs:
        if r.get("eps") is not None:
            groups.setdefault((r["model"], r["metric"], r.get("norm") or "linf"), []).append(r)
    out = []
    for (model, metric, norm), rs in sorted(groups.items(), key=lambda kv: kv[0]):
        for eps in sorted({r["eps"] for r in rs}):
            upto = [r for r in rs if r["eps"] <= eps + 1e-12]
            at = [r for r in upto if abs(r["eps"] - eps) < 1e-12]
            union, exact = _union(upto), _union(at)
            n_correct, k = at[0]["operating_point"]["n_clean_correct"], int(union.sum())
            lo, hi = wilson_interval(k, n_correct)
            out.append({"model": model, "objective": at[0]["objective"], "metric": metric, "norm": norm, "eps": eps,
                        "attacks": sorted({r["attack"] for r in at}), "n_fooled": k, "n_clean_correct": n_correct,
                        "attack_success_rate": rounded(k / n_correct) if n_correct else None,
                        "sr_at_eps_only": rounded(int(exact.sum()) / n_correct) if n_correct else None,
                        "interval": [rounded(lo), rounded(hi)]})
    return out


def _union(recs: list[dict]) -> torch.Tensor:
    union = torch.zeros(len(recs[0]["fooled"]), dtype=torch.bool)
    for r in recs:
        union |= torch.tensor(r["fooled"], dtype=torch.bool)
    return union
