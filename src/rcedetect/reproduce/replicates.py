"""Seeds as the unit of replication (protocol §21): ``[experiment] seeds = S`` trains each model S times.

Replicate r (0 ≤ r < S) is the whole run with the training seed of every replicated model moved by r; a model
with its own ``seeds = M`` (``[models.<name>] seeds = 1`` for a Table 4 target, say) is replicated M times and
is the same model (same config hash, trained once) in the replicates from M on. Everything else (the attacked
images, the held-out images, the attacks' own seeds) is the same in every replicate, so seeds are compared on
the same images. Every replicate's artifacts live in the one output folder under their own hashes: a killed run
resumes stage by stage, whichever replicate it was in.
"""

from __future__ import annotations

import copy

from ..core.errors import ConfigError

#: more replicates than this is a typo, not an experiment (each one retrains every replicated model)
MAX_SEEDS = 20


def _count(value, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_SEEDS:
        raise ConfigError(f"{where} must be an integer from 1 to {MAX_SEEDS} (trained models per objective), "
                          f"got {value!r}")
    return value


def seed_counts(cfg: dict) -> tuple[int, dict[str, int]]:
    """(S, {model: M}) of a resolved config: ``experiment.seeds`` and each model's own ``seeds`` (0 or absent:
    S; at most S); ConfigError for anything else."""
    total = _count(cfg["experiment"].get("seeds", 1), "experiment.seeds")
    per_model = {}
    for name, m in cfg["models"].items():
        own = m.get("seeds", 0)
        own = _count(total if own == 0 and not isinstance(own, bool) else own, f"models.{name}.seeds")
        if own > total:
            raise ConfigError(f"models.{name}.seeds = {own} exceeds experiment.seeds = {total}")
        per_model[name] = own
    return total, per_model


def replicate(cfg: dict, r: int) -> dict:
    """The resolved config of replicate ``r``: each model replicated more than r times trains with seed + r."""
    _, per_model = seed_counts(cfg)
    if r == 0:
        return cfg
    out = copy.deepcopy(cfg)
    for name, m in out["models"].items():
        if per_model[name] > r:
            m["train"]["seed"] = m["train"]["seed"] + r
    return out


def model_seeds(cfg: dict) -> dict[str, list[int]]:
    """{model: the training seeds of its replicates}."""
    _, per_model = seed_counts(cfg)
    return {n: [m["train"]["seed"] + r for r in range(per_model[n])] for n, m in cfg["models"].items()}
