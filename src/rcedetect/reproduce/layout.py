"""Where every artifact of a reproduce run lives, and the short config hash that names it.

Each stage's artifact is named by a hash of everything that determines it (:func:`rcedetect.core.io.config_hash`), so
changing a setting makes a new artifact beside the old one and a finished artifact is never recomputed:

- ``models/<name>-<hash>/``                        a training run (checkpoints; resumable mid-training)
- ``features/<name>-<kind>-<hash>.safetensors``    final hidden features of training / attacked / t-SNE / held-out
                                                   clean (calibration) images
- ``detectors/<name>-<hash>/<metric>/``            each fitted detector (detector.json + tensors)
- ``attacks/<name>/<attack>[-e<eps>]-<hash>/part-NNNN.safetensors``  adversarial images, one file per batch
- ``records/<name>-<attack>[-e<eps>]-<hash>.json`` the scored record of one attack run (Tables 2-5 inputs)
- ``records/transfer-<sub>-<target>-<hash>.json``  a black-box transfer record (Table 4)
- ``tsne/<name>-<hash>.json``                      the 2-D t-SNE embedding (Fig. 1b/c)
- ``adaptive/<name>/<metric>-<attack>[-e<eps>]-<hash>/``  adaptive attacks against one detector's threshold
- ``records/adaptive-…json``, ``records/sanity-<name>-<hash>.json``  their records and the sanity checks
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..core.io import config_hash
from ..training.config import objective_settings
from .config import Plan

#: bumped when the sanity checks change, so that a cached run recomputes them
SANITY_VERSION = 3


def train_dict_for_hash(train: dict) -> dict:
    """The training config without device and data folder (where it runs and reads does not change the result) and
    without the settings its objective does not read (:func:`~rcedetect.training.config.objective_settings`)."""
    return {k: v for k, v in objective_settings(train).items() if k not in ("device", "data_dir")}


def attack_key(model_hash: str, name: str, settings: dict, eps: float | None, n: int, batch: int, seed: int,
               detector_hash: str | None) -> str:
    return config_hash({"model": model_hash, "attack": name, "settings": settings, "eps": eps, "n": n,
                        "batch": batch, "seed": seed, "detector": detector_hash})


@dataclass(frozen=True)
class AttackRun:
    """One attack at one ε on one model: its part files and its scored record."""

    eps: float | None
    dir: Path
    hash: str
    record: Path


class Layout:
    """Paths and hashes of the run in ``out``; ``n_test()`` gives the test-set size (read lazily)."""

    def __init__(self, plan: Plan, out: str | Path, n_test: Callable[[], int]):
        self.plan, self.out, self.n_test = plan, Path(out), n_test
        self._layers: dict[str, tuple[str, ...]] = {}

    def model_hash(self, name: str) -> str:
        return config_hash(train_dict_for_hash(self.plan.raw["models"][name]["train"]))

    def model_dir(self, name: str) -> Path:
        return self.out / "models" / f"{name}-{self.model_hash(name)}"

    def pool_size(self) -> int:
        """How many test images the attacks draw from (the largest attack, or Figure 3's count)."""
        sizes = [a.images for a in self.plan.attacks.values()] + [self.plan.experiment.figure3_images]
        if self.plan.adaptive:
            sizes += [a.images for a in self.plan.adaptive.attacks.values()]
        if self.plan.robust:
            sizes.append(self.plan.robust.images)
        return min(max(sizes), self.n_test())

    def calibration_size(self) -> int:
        """How many clean test images outside the pool calibrate the detectors' thresholds."""
        return min(self.plan.experiment.calibration_images, self.n_test() - self.pool_size())

    def baseline_layers(self, name: str) -> tuple[str, ...]:
        """The intermediate layers the baselines of model ``name`` read (its feature banks hold them beside z);
        layer names depend on the architecture only, so they are known before the model is trained."""
        if name not in self.plan.detected or not self.plan.detector.baselines:
            return ()
        if name not in self._layers:  # every feature path asks: build the network once per model
            self._layers[name] = self._find_layers(name)
        return self._layers[name]

    def _find_layers(self, name: str) -> tuple[str, ...]:
        from .. import detectors, models
        from ..models.classifier import FINAL, Classifier

        tc = self.plan.models[name].train
        clf = Classifier(models.create(tc.arch, **models.wrapped_options(tc) if ":" in tc.arch else {}),
                         tc.objective)
        found: dict[str, None] = {}
        for m in self.plan.detector.baselines:
            metric = detectors.create(m, **self.baseline_settings(name, m)).bind(clf)
            found.update(dict.fromkeys(n for n in metric.layers if n != FINAL))
        return tuple(found)

    def feature_path(self, name: str, kind: str) -> Path:
        """The bank of ``kind``; a bank that also holds the baselines' layers has its own name."""
        e, layers = self.plan.experiment, self.baseline_layers(name) if kind != "tsne" else ()
        count = {"train": e.train_feature_images, "pool": self.pool_size(), "tsne": e.tsne_images,
                 "calibration": self.calibration_size()}[kind]
        parts = [self.model_hash(name), kind, count, e.seed]
        key = config_hash(parts + [list(layers)] if layers else parts)
        return self.out / "features" / f"{name}-{kind}-{key}.safetensors"

    def detector_settings(self, name: str) -> dict:
        return self.plan.detector.kd_settings(self.plan.models[name].train.objective)

    def detector_hash(self, name: str) -> str:
        return config_hash([self.model_hash(name), self.plan.experiment.train_feature_images,
                            self.detector_settings(name)])

    def detector_dir(self, name: str, metric: str | None = None) -> Path:
        """The paper's K-density detector (and, with ``metric``, any fitted detector) of model ``name``; a baseline
        lives in its own folder, named by its settings."""
        if metric in self.plan.detector.baselines:
            return self.out / "detectors" / f"{name}-{metric}-{self.baseline_hash(name, metric)}" / metric
        folder = self.out / "detectors" / f"{name}-{self.detector_hash(name)}"
        return folder if metric is None else folder / metric

    def baseline_settings(self, name: str, metric: str) -> dict:
        return self.plan.detector.baseline_settings(metric, self.plan.models[name].train.objective)

    def baseline_hash(self, name: str, metric: str) -> str:
        return config_hash([self.model_hash(name), self.plan.experiment.train_feature_images, metric,
                            self.baseline_settings(name, metric)])

    def baselines_hash(self, name: str) -> str | None:
        """One hash of every baseline detector of model ``name`` (None without baselines): the scored records
        depend on it."""
        names = self.plan.detector.baselines if name in self.plan.detected else ()
        return config_hash([self.baseline_hash(name, m) for m in names]) if names else None

    def _runs(self, model: str, attack: str, a, folder: Path, tag: str, detector,
              record: Callable[[str, str], str]) -> list[AttackRun]:
        """One :class:`AttackRun` per ε of ``attack`` (its plan ``a``) on ``model``, named by
        :func:`attack_key`: its parts in ``folder/<tag>[-e<eps>]-<key>``, its record in ``records/``, named
        ``record(<tag>[-e<eps>], key)``."""
        runs = []
        for eps in a.eps or (None,):
            key = attack_key(self.model_hash(model), attack, a.settings, eps, a.images, a.batch,
                             self.plan.experiment.seed, detector)
            label = f"{tag}-e{eps:g}" if eps is not None else tag
            runs.append(AttackRun(eps, folder / f"{label}-{key}", key,
                                  self.out / "records" / record(label, key)))
        return runs

    def attack_runs(self, model: str, attack: str) -> list[AttackRun]:
        a = self.plan.attacks[attack]
        rec = [self.detector_hash(model)] + [b for b in [self.baselines_hash(model)] if b]
        return self._runs(model, attack, a, self.out / "attacks" / model, attack,
                          self.detector_hash(model) if a.spec.needs_detector else None,
                          lambda label, key: f"{model}-{label}-{config_hash([key] + rec)}.json")

    def adaptive_runs(self, model: str, metric: str, attack: str) -> list[AttackRun]:
        """The runs of an adaptive attack against ``metric``'s detector of ``model``, one per ε."""
        ad = self.plan.adaptive
        det = [self.detector_hash(model), metric, ad.fpr, self.calibration_size()]
        if metric in self.plan.detector.baselines:
            det.append(self.baseline_hash(model, metric))
        folder = self.out / "adaptive" / model
        return self._runs(model, attack, ad.attacks[attack], folder, f"{metric}-{attack}", det,
                          lambda label, key: f"adaptive-{model}-{label}-{key}.json")

    def sanity_path(self, model: str) -> Path:
        ad = self.plan.adaptive
        key = config_hash([self.model_hash(model), self.detector_hash(model), ad.fpr, self.calibration_size(),
                           {n: [a.eps, a.settings, a.images] for n, a in ad.attacks.items()}, ad.metrics,
                           self.plan.experiment.seed, self.baselines_hash(model), SANITY_VERSION])
        return self.out / "records" / f"sanity-{model}-{key}.json"

    def tsne_path(self, name: str) -> Path:
        key = config_hash([self.model_hash(name), self.plan.experiment.tsne_images, self.plan.experiment.seed])
        return self.out / "tsne" / f"{name}-{key}.json"

    def transfer_path(self, attack: str, sub: str, tgt: str) -> Path:
        key = config_hash([self.attack_runs(sub, attack)[0].hash, self.model_hash(tgt), self.detector_hash(tgt)])
        return self.out / "records" / f"transfer-{sub}-{tgt}-{key}.json"
