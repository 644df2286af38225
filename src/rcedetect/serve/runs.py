"""Which model a ``RUN_DIR`` names, and where its adversarial examples are.

``RUN_DIR`` is either

- a run folder (``checkpoint.json``: ``rce train``'s output, or ``models/<name>-<hash>/`` of a reproduce output):
  its ``rce attack`` outputs (``RUN_DIR/attacks/*/``) are offered, and, when the folder sits inside a
  ``rce reproduce`` output, that run's attacks on this model too; or
- a ``rce reproduce`` output folder (``config.json`` + ``models/``): the model ``--model NAME``, by default the
  main RCE model (else the first main model), with its oblivious attacks (``attacks/<name>/``) and the adaptive
  attacks against the paper's three detectors (``adaptive/<name>/``) of the run's current settings.
"""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..core.errors import CheckpointError, ConfigError, RceError


@dataclass
class ServedRun:
    model_dir: Path
    name: str  # shown to users: the run folder's name
    sources: dict[str, Path] = field(default_factory=dict)  # "attack:<folder>" / "adaptive:<folder>" -> folder


def resolve(run_dir: str | Path, model: str | None = None) -> ServedRun:
    p = Path(run_dir)
    if not p.exists():
        raise ConfigError(f"run folder {p} does not exist")
    if not p.is_dir():
        raise ConfigError(f"{p} is not a folder; give a run folder (checkpoint.json) or a rce reproduce output")
    if (p / "checkpoint.json").is_file():
        if model is not None:
            raise ConfigError(f"--model picks a model of a rce reproduce output; {p} is already one run folder")
        attacks = sorted((p / "attacks").iterdir()) if (p / "attacks").is_dir() else []
        run = ServedRun(p, p.name, _sources(("attack", d) for d in attacks))
        out = p.parent.parent
        if p.parent.name == "models" and (out / "config.json").is_file():  # a model of a reproduce output
            run.sources.update(_reproduce_sources(out, p.name.rsplit("-", 1)[0], p))
        return run
    if (p / "config.json").is_file() and (p / "models").is_dir():
        return _from_reproduce(p, model)
    raise ConfigError(f"{p} is neither a run folder (no checkpoint.json) nor a rce reproduce output "
                      "(config.json and models/)")


def _plan(out: Path):
    from ..core.io import read_json
    from ..reproduce.config import plan

    return plan(read_json(out / "config.json", "reproduce config"))


def _from_reproduce(out: Path, model: str | None) -> ServedRun:
    from ..reproduce.layout import Layout

    p = _plan(out)
    if model is None:  # the main RCE model, else the first main model
        model = next((n for n in p.mains if p.models[n].train.objective == "rce"), p.mains[0])
    elif model not in p.models:
        raise ConfigError(f"no model {model!r} in {out}; its models: {', '.join(p.models)}")
    model_dir = Layout(p, out, lambda: 0).model_dir(model)
    if not (model_dir / "checkpoint.json").is_file():
        raise CheckpointError(f"model {model!r} of {out} is not trained yet ({model_dir} has no checkpoint.json); "
                              "run rce reproduce first")
    return ServedRun(model_dir, model_dir.name, _reproduce_sources(out, model, model_dir))


def _reproduce_sources(out: Path, name: str, model_dir: Path) -> dict[str, Path]:
    """The attack folders of model ``name`` (``model_dir``) in the reproduce output ``out``, of its current settings."""
    from .. import data
    from ..detectors import paper_metrics
    from ..reproduce.layout import Layout

    try:
        p = _plan(out)
        if name not in p.models:
            return {}

        @functools.cache
        def test_size() -> int:  # the adaptive runs' names depend on it; read the dataset once, if needed
            tc = p.models[name].train
            return len(data.load(tc.dataset, data_dir=tc.data_dir or None, data_file=tc.data_file or None,
                                 download=False).x_test)

        layout = Layout(p, out, test_size)
        if layout.model_dir(name).resolve() != model_dir.resolve():
            return {}  # not the current model of that name: its attacks are another's
        folders = [("attack", r.dir) for a in p.attacks for r in layout.attack_runs(name, a)]
        if p.adaptive is not None:
            for metric in (m for m in p.adaptive.metrics if m in paper_metrics()):
                for a, plan_a in p.adaptive.attacks.items():
                    if plan_a.metrics is None or metric in plan_a.metrics:
                        folders += [("adaptive", r.dir) for r in layout.adaptive_runs(name, metric, a)]
    except (RceError, KeyError, TypeError, ValueError, OSError) as e:
        print(f"rce serve: the attacks of {out} are not offered: {e}", file=sys.stderr)
        return {}
    return _sources(folders)


def _sources(folders) -> dict[str, Path]:
    """``{"<kind>:<folder name>": folder}`` of the (kind, folder) pairs whose folder holds attack parts."""
    return {f"{kind}:{d.name}": d for kind, d in folders if d.is_dir() and any(d.glob("part-*.safetensors"))}
