"""``rce reproduce``: the paper end to end as a cached, resumable pipeline (DESIGN "data flow").

train CE and RCE models → training features → detectors → every attack → scores → results.json → report.

A reproduce preset (``configs/demo.toml``, ``paper-mnist.toml``, ...) has an ``[experiment]`` section, a
``[models.<name>]`` table per model (``preset`` = a training preset, ``role`` = "main" for Tables 1-3 or
"target" for the ResNet-56 of Tables 1 and 4, optional ``[models.<name>.train]`` overrides), a
``[detector]`` section and an ``[attacks.<name>]`` table per attack (``images``, ``batch``, optional ``eps``
grid, ``settings`` passed to :func:`rcedetect.attacks.create`). Each model's training preset is expanded into
``models.<name>.train`` before ``--set`` overrides apply, so ``--set models.ce.train.steps=100`` works.

Each stage's artifact is named by a hash of its config (see :mod:`rcedetect.stages`); a stage whose artifact
exists is skipped (``force`` recomputes), so a killed run resumes where it stopped and a finished run only
re-renders the report.
"""

from __future__ import annotations

import copy
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import checkpoint, data, features, stages
from .config import TrainConfig, apply_overrides, load_preset
from .device import resolve
from .errors import ConfigError
from .io import config_hash, read_json, versions, write_json

EXPERIMENT_DEFAULTS = {"name": "", "seed": 0, "device": "auto", "train_feature_images": 50000,
                       "tsne_images": 1000, "figure3_images": 8, "table2_eps": 0.16, "batch_size": 500, "threads": 0}
DETECTOR_DEFAULTS = {"per_class": 1000, "attack_per_class": 100, "sigma2_ce": 0.0, "sigma2_rce": 0.0, "seed": 0}
ATTACK_DEFAULTS = {"images": 1000, "batch": 100, "settings": {}}


def resolve_config(preset: str, overrides: list[str] | None = None, device: str | None = None,
                   data_dir: str | None = None) -> dict:
    """The fully expanded reproduce config of ``preset`` with ``--set`` overrides, ``--device`` and
    ``--data-dir`` (the dataset folder of every model) applied."""
    raw = load_preset(preset)
    if "experiment" not in raw or "models" not in raw:
        raise ConfigError(f"preset {preset!r} is not a reproduce preset (it needs [experiment] and [models.*]); "
                          "use `rce train` for training presets")
    cfg = copy.deepcopy(raw)
    cfg["experiment"] = {**EXPERIMENT_DEFAULTS, **cfg["experiment"]}
    cfg["detector"] = {**DETECTOR_DEFAULTS, **cfg.get("detector", {})}
    cfg.setdefault("cuts", {"notes": []})
    for name, m in cfg["models"].items():
        if "preset" not in m:
            raise ConfigError(f"models.{name} needs preset = \"<training preset>\"")
        base = load_preset(m["preset"]).get("train")
        if base is None:
            raise ConfigError(f"models.{name}.preset {m['preset']!r} is not a training preset")
        m["train"] = {**TrainConfig().to_dict(), **base, **m.get("train", {})}
        m.setdefault("role", "main")
    for name, a in cfg.get("attacks", {}).items():
        cfg["attacks"][name] = {**copy.deepcopy(ATTACK_DEFAULTS), **a}
    cfg = apply_overrides(cfg, overrides)
    if device:
        cfg["experiment"]["device"] = device
    for m in cfg["models"].values():
        if cfg["experiment"]["device"] != "auto" or device:
            m["train"]["device"] = cfg["experiment"]["device"]
        if data_dir:
            m["train"]["data_dir"] = str(data_dir)
    _validate(cfg)
    return cfg


def _validate(cfg: dict) -> None:
    from .attacks import REGISTRY

    mains = [n for n, m in cfg["models"].items() if m["role"] == "main"]
    if not mains:
        raise ConfigError("a reproduce preset needs at least one model with role = \"main\"")
    datasets = set()
    for name, m in cfg["models"].items():
        if m["role"] not in ("main", "target"):
            raise ConfigError(f"models.{name}.role must be \"main\" or \"target\", got {m['role']!r}")
        tc = TrainConfig.from_dict(m["train"])
        datasets.add((tc.dataset, tc.data_dir, tc.data_file))
    if len(datasets) != 1:
        raise ConfigError(f"every model of a reproduce preset must use the same dataset, got {sorted(datasets)}")
    for name, a in cfg.get("attacks", {}).items():
        if name not in REGISTRY:
            raise ConfigError(f"unknown attack {name!r} in [attacks]; choose from {', '.join(sorted(REGISTRY))}")
        if (name in stages.GRID_ATTACKS) != ("eps" in a):
            raise ConfigError(f"attacks.{name}: {'give' if name in stages.GRID_ATTACKS else 'drop'} an eps list")
        if a["images"] < 1 or a["batch"] < 1:
            raise ConfigError(f"attacks.{name}: images and batch must be >= 1")


@dataclass
class Stage:
    name: str
    cost: float  # rough work units, for the time-left estimate
    done: Callable[[], bool]
    run: Callable[[], None]
    clear: Callable[[], None]


class Pipeline:
    """One reproduce run in ``out``. ``hook(event)`` is called after every stage, attack part and training
    step (tests raise from it to simulate a kill)."""

    def __init__(self, cfg: dict, out: str | Path, *, force: bool = False, progress: bool = True,
                 hook: Callable[[str], None] | None = None, echo: Callable[[str], None] | None = None):
        self.cfg, self.out, self.force, self.progress = cfg, Path(out), force, progress
        self.hook = hook or (lambda event: None)
        self.echo = echo or _say
        self.exp = cfg["experiment"]
        self.seed = int(self.exp["seed"])
        self.device = resolve(self.exp["device"])
        self.threads = cpu_threads(int(self.exp.get("threads", 0))) if self.device.type == "cpu" else None
        if self.threads:
            torch.set_num_threads(self.threads)
        self._dataset: data.Dataset | None = None
        self._clf: dict[str, Any] = {}
        self.stage_seconds: dict[str, float] = {}

    # -------------------------------------------------------------------------------- shared inputs
    def dataset(self) -> data.Dataset:
        if self._dataset is None:
            tc = TrainConfig.from_dict(next(iter(self.cfg["models"].values()))["train"])
            self._dataset = data.load(tc.dataset, data_dir=tc.data_dir or None, data_file=tc.data_file or None)
        return self._dataset

    def train_cfg(self, name: str) -> TrainConfig:
        return TrainConfig.from_dict(self.cfg["models"][name]["train"])

    def model_hash(self, name: str) -> str:
        return config_hash(stages.train_dict_for_hash(self.cfg["models"][name]["train"]))

    def model_dir(self, name: str) -> Path:
        return self.out / "models" / f"{name}-{self.model_hash(name)}"

    def classifier(self, name: str):
        if name not in self._clf:
            self._clf[name] = checkpoint.load(self.model_dir(name), device=self.device).classifier
        return self._clf[name]

    def pool_size(self) -> int:
        sizes = [a["images"] for a in self.cfg.get("attacks", {}).values()] + [self.exp["figure3_images"]]
        return min(max(sizes), len(self.dataset().x_test))

    def pool(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The attacked test images: a seeded random subset (the original's shuffled 'attack' queue)."""
        ds = self.dataset()
        perm = torch.randperm(len(ds.x_test), generator=torch.Generator().manual_seed(self.seed))[: self.pool_size()]
        return data.to_float(ds.x_test[perm]), ds.y_test[perm]

    def feature_path(self, name: str, kind: str) -> Path:
        n = {"train": self.exp["train_feature_images"], "pool": self.pool_size(), "tsne": self.exp["tsne_images"]}[kind]
        return self.out / "features" / f"{name}-{kind}-{config_hash([self.model_hash(name), kind, n, self.seed])}.safetensors"

    def bank(self, name: str, kind: str) -> features.FeatureBank:
        ds = self.dataset()
        if kind == "train":
            n = min(self.exp["train_feature_images"], len(ds.x_train))
            x, y = data.to_float(ds.x_train[:n]), ds.y_train[:n]
        elif kind == "tsne":
            n = min(self.exp["tsne_images"], len(ds.x_test))
            x, y = data.to_float(ds.x_test[:n]), ds.y_test[:n]
        else:
            x, y = self.pool()
        return features.cached(self.classifier(name), x, y, self.feature_path(name, kind),
                               batch_size=self.exp["batch_size"])

    def detector_settings(self, name: str) -> dict:
        d = self.cfg["detector"]
        objective = self.cfg["models"][name]["train"]["objective"]
        return {"per_class": d["per_class"], "attack_per_class": d["attack_per_class"], "seed": d["seed"],
                "sigma2": d[f"sigma2_{objective}"] or None}

    def detector_dir(self, name: str) -> Path:
        return self.out / "detectors" / f"{name}-{self.detector_hash(name)}"

    def detector_hash(self, name: str) -> str:
        return config_hash([self.model_hash(name), self.exp["train_feature_images"], self.detector_settings(name)])

    # -------------------------------------------------------------------------------- attacks
    def attack_runs(self, model: str, attack: str) -> list[dict]:
        a = self.cfg["attacks"][attack]
        eps_list = a.get("eps") or [None]
        det = self.detector_hash(model) if attack == "cw_wb" else None
        runs = []
        for eps in eps_list:
            key = stages.attack_key(self.model_hash(model), attack, a["settings"], eps, a["images"], a["batch"],
                                    self.seed, det)
            tag = f"{attack}-e{eps:g}" if eps is not None else attack
            rec_key = config_hash([key, self.detector_hash(model)])
            runs.append({"eps": eps, "dir": self.out / "attacks" / model / f"{tag}-{key}", "hash": key,
                         "record": self.out / "records" / f"{model}-{tag}-{rec_key}.json"})
        return runs

    def run_attack(self, model: str, attack: str) -> None:
        from tqdm.auto import tqdm

        a = self.cfg["attacks"][attack]
        clf = self.classifier(model)
        x_pool, y_pool = self.pool()
        n = min(a["images"], len(x_pool))
        x, y = x_pool[:n], y_pool[:n]
        clean_all = self.bank(model, "pool")
        clean = features.FeatureBank(clean_all.features[:n], clean_all.labels[:n], clean_all.predictions[:n])
        kd, kd_attack, eta, _ = stages.load_detector(self.detector_dir(model), self.device)
        runs = [r for r in self.attack_runs(model, attack) if not r["record"].is_file()]
        bar = tqdm(total=n * len(runs), desc=f"{attack} on {model}", disable=not self.progress, leave=False,
                   dynamic_ncols=True)
        for r in runs:
            extra = {"density": kd_attack, "eta": eta} if attack == "cw_wb" else {}
            factory = stages.make_attack_factory(attack, a["settings"], r["eps"], self.seed, **extra)
            stages.run_attack_parts(r["dir"], factory, clf, x, y, a["batch"], bar=bar,
                                    on_part=lambda b, r=r: self.hook(f"part:{model}:{attack}:{r['eps']}:{b}"))
            res, secs = stages.load_attack(r["dir"], x, a["batch"])
            t2 = self.exp["table2_eps"]
            keep = r["eps"] is None or abs(r["eps"] - t2) < 1e-9 or attack == "noise"
            rec = stages.score_attack(clf, res, y, clean, kd, keep_kd_values=keep, all_kd_values=attack == "noise")
            eff_l2, n_eff = rec.pop("_efficient_l2")
            if attack in ("cw", "cw_hc"):
                rec["cw"] = {"mean_min_distortion": eff_l2, "n_efficient": n_eff}
            if attack == "cw_wb":
                from .attacks.carlini_wagner import table3_stats

                st = table3_stats(res, y.to(res.success.device), clean.predictions.to(res.success.device))
                rec["wb"] = {"ratio_f2_positive": stages._r(st["ratio_f2_positive"]), "n_reached":
                             st["n_target_reached"], "n_efficient": st["n_efficient"],
                             "mean_distortion": stages._r(st["mean_distortion"]), "n_correct": st["n_correct"]}
                k = min(self.exp["figure3_images"], n)
                rec["figure3"] = {"clean": stages.to_uint8_list(x[:k]), "adv": stages.to_uint8_list(res.x_adv[:k]),
                                  "labels": y[:k].tolist(), "targets": res.target[:k].tolist(),
                                  "success": res.success[:k].tolist(),
                                  "l2": [round(float(v), 2) for v in res.l2[:k]]}
            rec.update(model=model, objective=self.cfg["models"][model]["train"]["objective"], attack=attack,
                       eps=r["eps"], settings=a["settings"], config_hash=r["hash"], attack_seconds=round(secs, 3),
                       seconds_per_example=secs / n)
            stages.dump_json(r["record"], rec)
        bar.close()

    # -------------------------------------------------------------------------------- stage list
    def stages(self) -> list[Stage]:
        out: list[Stage] = []
        models = self.cfg["models"]
        mains = [n for n, m in models.items() if m["role"] == "main"]
        targets = [n for n, m in models.items() if m["role"] == "target"]
        for name in models:
            tc = self.train_cfg(name)
            out.append(Stage(f"train {name} ({tc.arch} {tc.objective}, {tc.steps} steps)",
                             tc.steps * tc.batch_size * 3 * _size(tc),
                             lambda n=name, tc=tc: stages.model_done(self.model_dir(n), tc),
                             lambda n=name, tc=tc: stages.train_model(
                                 tc, self.model_dir(n), self.dataset(), self.progress,
                                 lambda step, n=n: self.hook(f"step:{n}:{step}")),
                             lambda n=name: shutil.rmtree(self.model_dir(n), ignore_errors=True)))
        for name in models:
            kinds = ["train", "pool"] + (["tsne"] if name in mains and self.exp["tsne_images"] > 0 else [])
            out.append(Stage(f"features {name}", self.exp["train_feature_images"] * _size(self.train_cfg(name)) / 2,
                             lambda n=name, k=kinds: all(self.feature_path(n, kk).is_file() for kk in k),
                             lambda n=name, k=kinds: [self.bank(n, kk) for kk in k],
                             lambda n=name, k=kinds: [self.feature_path(n, kk).unlink(missing_ok=True) for kk in k]))
            out.append(Stage(f"detector {name}", 1.0,
                             lambda n=name: (self.detector_dir(n) / "detector.json").is_file(),
                             lambda n=name: stages.fit_detector(
                                 self.bank(n, "train"), self.cfg["models"][n]["train"]["objective"],
                                 self.classifier(n).num_classes, self.detector_settings(n), self.detector_dir(n)),
                             lambda n=name: shutil.rmtree(self.detector_dir(n), ignore_errors=True)))
        for name in mains:
            size = _size(self.train_cfg(name))
            for attack, a in self.cfg.get("attacks", {}).items():
                runs = self.attack_runs(name, attack)
                out.append(Stage(f"attack {attack} on {name} ({a['images']} images"
                                 + (f", ε {_eps_text(a['eps'])})" if a.get("eps") else ")"),
                                 len(runs) * a["images"] * _passes(attack, a["settings"]) * size,
                                 lambda runs=runs: all(r["record"].is_file() for r in runs),
                                 lambda n=name, at=attack: self.run_attack(n, at),
                                 lambda runs=runs: [(shutil.rmtree(r["dir"], ignore_errors=True),
                                                     r["record"].unlink(missing_ok=True)) for r in runs]))
            if self.exp["tsne_images"] > 0:
                out.append(Stage(f"t-SNE {name}", self.exp["tsne_images"] * 20.0,
                                 lambda n=name: self.tsne_path(n).is_file(),
                                 lambda n=name: stages.dump_json(self.tsne_path(n), stages.tsne_embedding(
                                     self.bank(n, "tsne"), self.seed)),
                                 lambda n=name: self.tsne_path(n).unlink(missing_ok=True)))
        if "cw_wb" in self.cfg.get("attacks", {}):
            for sub in mains:
                for tgt in targets:
                    out.append(Stage(f"transfer C&W-wb {sub} → {tgt}", 10.0,
                                     lambda s=sub, t=tgt: self.transfer_path(s, t).is_file(),
                                     lambda s=sub, t=tgt: self.run_transfer(s, t),
                                     lambda s=sub, t=tgt: self.transfer_path(s, t).unlink(missing_ok=True)))
        return out

    def tsne_path(self, name: str) -> Path:
        return self.out / "tsne" / f"{name}-{config_hash([self.model_hash(name), self.exp['tsne_images'], self.seed])}.json"

    def transfer_path(self, sub: str, tgt: str) -> Path:
        key = config_hash([self.attack_runs(sub, "cw_wb")[0]["hash"], self.model_hash(tgt), self.detector_hash(tgt)])
        return self.out / "records" / f"transfer-{sub}-{tgt}-{key}.json"

    def run_transfer(self, sub: str, tgt: str) -> None:
        a = self.cfg["attacks"]["cw_wb"]
        x_pool, y_pool = self.pool()
        n = min(a["images"], len(x_pool))
        res, _ = stages.load_attack(self.attack_runs(sub, "cw_wb")[0]["dir"], x_pool[:n], a["batch"])
        clean_all = self.bank(tgt, "pool")
        clean = features.FeatureBank(clean_all.features[:n], clean_all.labels[:n], clean_all.predictions[:n])
        kd = stages.load_detector(self.detector_dir(tgt), self.device)[0]
        rec = stages.transfer_record(self.classifier(tgt), res, y_pool[:n], clean, kd)
        for role, m in (("substitute", sub), ("target", tgt)):
            tc = self.train_cfg(m)
            rec.update({role: m, f"{role}_arch": tc.arch, f"{role}_objective": tc.objective})
        stages.dump_json(self.transfer_path(sub, tgt), rec)

    # -------------------------------------------------------------------------------- run
    def run(self) -> dict:
        from .pipeline_results import assemble

        t_start = time.perf_counter()
        self.out.mkdir(parents=True, exist_ok=True)
        write_json(self.out / "config.json", self.cfg)
        todo = self.stages()
        if self.force:
            for st in todo:
                st.clear()
        pending = [st for st in todo if not st.done()]
        total_cost = sum(st.cost for st in pending) or 1.0
        done_cost, work_seconds = 0.0, 0.0
        for i, st in enumerate(todo, 1):
            head = f"[{i:>2}/{len(todo)}] {st.name}"
            if st not in pending:
                self.echo(f"{head}: cached")
                continue
            t0 = time.perf_counter()
            st.run()
            dt = time.perf_counter() - t0
            self.stage_seconds[st.name] = round(dt, 2)
            done_cost += st.cost
            work_seconds += dt
            left = (total_cost - done_cost) * work_seconds / max(done_cost, 1e-9)
            self.echo(f"{head}: {_hms(dt)}; elapsed {_hms(time.perf_counter() - t_start)}, about {_hms(left)} left")
            self.hook(f"stage:{st.name}")
        results = assemble(self, time.perf_counter() - t_start)
        write_json(self.out / "results.json", results)
        return results


def cpu_threads(requested: int = 0) -> int:
    """Torch CPU threads: ``requested`` (> 0), else torch's own default (one per core).

    The count is fixed by the config, not by the machine's momentary load, so that the same preset gives the
    same numbers run after run (reductions split over another number of threads round differently). On a
    machine busy with other work, ``--set experiment.threads=1`` can be several times faster.
    """
    return requested if requested > 0 else torch.get_num_threads()


def _say(line: str) -> None:
    print(line, flush=True)


def _size(tc: TrainConfig) -> float:
    """Relative cost of one image pass: depth × pixels (a ResNet-8 on 28×28 = 1)."""
    depth = int("".join(c for c in tc.arch if c.isdigit()) or 8)
    pixels = {"cifar10": 1024.0, "synthetic": 144.0}.get(tc.dataset, 784.0)
    return depth / 8 * pixels / 784


def _passes(attack: str, settings: dict) -> float:
    """Forward+backward passes per image (3 units each), for the time-left estimate."""
    if attack in ("fgsm", "noise"):
        return 3.0
    if attack in ("bim", "ilcm"):
        return 3.0 * settings.get("steps", 10)
    if attack == "jsma":
        return 3.0 * settings.get("max_steps", 100) * 0.6
    return 3.0 * settings.get("binary_search_steps", 9) * settings.get("max_iterations", 10000) * 0.6


def _eps_text(eps: list) -> str:
    return f"{eps[0]:g}" if len(eps) == 1 else f"{eps[0]:g}…{eps[-1]:g} ({len(eps)} values)"


def _hms(s: float) -> str:
    s = max(0, round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else (f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s")


def reproduce(preset: str, out: str | Path, overrides: list[str] | None = None, *, device: str | None = None,
              data_dir: str | None = None, force: bool = False, progress: bool = True, hook: Callable[[str], None] | None = None,
              echo: Callable[[str], None] | None = None) -> dict:
    """Run (or resume) the whole pipeline of ``preset`` in ``out``; returns the results dict."""
    cfg = resolve_config(preset, overrides, device, data_dir)
    cfg["experiment"]["name"] = cfg["experiment"]["name"] or Path(preset).stem
    return Pipeline(cfg, out, force=force, progress=progress, hook=hook, echo=echo).run()


__all__ = ["Pipeline", "read_json", "reproduce", "resolve_config", "versions"]
