"""The paper end to end, as a list of stages read top to bottom (paper §4; the tables and figures they feed):

1. train every model (Table 1)
2. features of the training set, the attacked pool and the t-SNE images of each model
3. fit the detectors of each model on its training features (protocol §4.2-4.4)
4. every attack over its ε grid on each main model, scored by every detector (Tables 2, 3, 5; Figures 2-6)
5. t-SNE of each main model's features (Figure 1b/c)
6. the adaptive evaluation: attacks that know each detector's calibrated threshold, and their sanity checks
7. black-box transfer of the white-box attack from each main model to each target model (Table 4)
8. robust accuracy of every main and robust model under the [robust] attacks (:mod:`.robust`)

then ``results.json`` (:mod:`.results`). With ``[experiment] seeds = S`` the list is run once per replicate
(:mod:`.replicates`), into the same folder, and ``results.json`` gains ``replication`` (:mod:`.replication`).
Every stage is cached (:mod:`.layout` names its artifact), so a killed
run resumes where it stopped and a finished run only re-renders the report.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch

from ..core import distributed
from ..core.io import write_json
from ..evaluation import attack_store, paper_ref
from . import adaptive, replicates, replication, robust, sanity, steps
from .config import Plan, plan
from .inputs import Inputs
from .layout import Layout
from .lock import check_writable, note, output_lock
from .results import assemble
from .runner import (
    RATES_NAME,
    SECONDS_NAME,
    Stage,
    busy_cpu_line,
    cpu_threads,
    eps_text,
    merged_stage_seconds,
    pass_size,
    run_stages,
)


def _detector_cost(inp: Inputs, name: str) -> float:
    """Image passes of fitting model ``name``'s detectors, roughly: K-density reads the cached features (its
    bandwidth search is cheap); each baseline attacks and re-reads its fitting split, Mahalanobis once per layer
    for each pre-processing magnitude it chooses from."""
    det = inp.plan.detector
    n_fit = min(det.fit_images, len(inp.dataset().x_train) // 2) if inp.baselines(name) else 0
    per_image = {"mahalanobis": 30.0, "kd_bu": 12.0, "lid": 6.0}
    return 0.05 * inp.plan.experiment.train_feature_images + sum(n_fit * per_image.get(m, 6.0)
                                                                  for m in inp.baselines(name))


def _attack_stage(what: str, a, runs: list, size: float, run: Callable[[], None], kind: str) -> Stage:
    """The stage of one attack's runs (one per ε): done when every record exists; cleared with its part files."""
    passes = attack_store.probe(a.registered, a.settings, a.eps[0] if a.eps else None).passes_per_image()
    return Stage(f"{what} ({a.images} images" + (f", ε {eps_text(a.eps)})" if a.eps else ")"),
                 len(runs) * a.images * passes * size, lambda: all(r.record.is_file() for r in runs), run,
                 lambda: [(shutil.rmtree(r.dir, ignore_errors=True), r.record.unlink(missing_ok=True)) for r in runs],
                 kind)


def stage_list(inp: Inputs, progress: bool, hook: Callable[[str], None]) -> list[Stage]:
    p, lay, out, shape = inp.plan, inp.layout, [], inp.dataset().image_shape
    exp, size = p.experiment, {n: pass_size(m.train, shape) for n, m in p.models.items()}
    for name, m in p.models.items():  # 1. training
        tc = m.train
        out.append(Stage(f"train {name} ({tc.arch} {tc.objective}, {tc.steps} steps)",
                         tc.steps * tc.batch_size * 3 * size[name],
                         lambda n=name, tc=tc: steps.model_done(lay.model_dir(n), tc),
                         lambda n=name, tc=tc: steps.train_model(tc, lay.model_dir(n), inp.dataset(), progress,
                                                                 lambda step, n=n: hook(f"step:{n}:{step}")),
                         lambda n=name: shutil.rmtree(lay.model_dir(n), ignore_errors=True), "train"))
    for name, m in p.models.items():  # 2. features, 3. detectors
        if name not in p.detected and m.role != "target":
            continue  # trained for robust accuracy alone (8.): no features, no detector
        kinds = ["train", "pool", "calibration"] + (["tsne"] if name in p.mains and exp.tsne_images > 0 else [])
        out.append(Stage(f"features {name}", exp.train_feature_images * size[name] / 2,
                         lambda n=name, k=kinds: all(lay.feature_path(n, kk).is_file() for kk in k),
                         lambda n=name, k=kinds: [inp.bank(n, kk) for kk in k],
                         lambda n=name, k=kinds: [lay.feature_path(n, kk).unlink(missing_ok=True) for kk in k],
                         "features"))
        out.append(Stage(f"detector {name}", _detector_cost(inp, name) * size[name],
                         lambda n=name: inp.detectors_done(n),
                         lambda n=name: inp.fit_detectors(n),
                         lambda n=name: shutil.rmtree(lay.detector_dir(n), ignore_errors=True), "detector"))
    for name in p.mains:  # 4. attacks, 5. t-SNE
        for attack, a in p.attacks.items():
            runs = lay.attack_runs(name, attack)
            out.append(_attack_stage(f"attack {attack} on {name}", a, runs, size[name],
                                     lambda n=name, at=attack: steps.run_attack(inp, n, at, progress, hook),
                                     f"attack {attack}"))
        if exp.tsne_images > 0:
            out.append(Stage(f"t-SNE {name}", exp.tsne_images * 20.0, lambda n=name: lay.tsne_path(n).is_file(),
                             lambda n=name: steps.write_record(lay.tsne_path(n),
                                                               steps.tsne_embedding(inp.bank(n, "tsne"), exp.seed)),
                             lambda n=name: lay.tsne_path(n).unlink(missing_ok=True), "t-SNE"))
    for name in p.detected if p.adaptive else ():  # 6. the adaptive evaluation and its sanity checks
        for attack, a in p.adaptive.attacks.items():
            for metric in adaptive.metrics_of(inp, attack):
                out.append(_attack_stage(f"adaptive {attack} vs {metric} on {name}", a,
                                         lay.adaptive_runs(name, metric, attack), size[name],
                                         lambda n=name, m=metric, at=attack: adaptive.run_attack(inp, n, m, at,
                                                                                                 progress, hook),
                                         f"adaptive {attack}"))
    for name in p.detected if p.adaptive and p.adaptive.sanity else ():  # after every model's attacks (the
        out.append(Stage(f"sanity checks on {name}", 32 * 3000 * size[name],  # transfer check reads them)
                         lambda n=name: lay.sanity_path(n).is_file(), lambda n=name: sanity.run_checks(inp, n),
                         lambda n=name: lay.sanity_path(n).unlink(missing_ok=True), "sanity"))
    wb = paper_ref.WHITEBOX_ATTACK  # 7. transfer
    if wb in p.attacks:
        for sub in p.mains:
            for tgt in p.targets:
                out.append(Stage(f"transfer {paper_ref.ATTACK_LABELS[wb]} {sub} → {tgt}", 10.0,
                                 lambda s=sub, t=tgt: lay.transfer_path(wb, s, t).is_file(),
                                 lambda s=sub, t=tgt: steps.run_transfer(inp, wb, s, t),
                                 lambda s=sub, t=tgt: lay.transfer_path(wb, s, t).unlink(missing_ok=True),
                                 "transfer"))
    out += robust.stages(inp, progress, hook)  # 8. robust accuracy
    return out


def run(cfg: dict, out: str | Path, *, force: bool = False, progress: bool = True,
        hook: Callable[[str], None] | None = None, echo: Callable[[str], None] | None = None) -> dict:
    """Run (or resume) the whole recipe of a resolved config in ``out``; returns the results dict.

    The output folder is checked writable first, and locked for the whole run (:mod:`.lock`): a second run into
    it waits for this one, saying so on stderr, as it does of a busy CPU (:func:`.runner.busy_cpu_line`).
    ``hook(event)`` is called after every stage, attack part and training step (tests raise from it to simulate
    a kill); ``echo`` prints the stage lines.
    """
    p: Plan = plan(cfg)
    out = check_writable(out)
    hook = hook or (lambda event: None)
    echo = echo or (lambda line: print(line, flush=True))
    with output_lock(out):
        t_start = time.perf_counter()
        inp = Inputs(Layout(p, out, lambda: len(inp.dataset().x_test)))
        if distributed.init(inp.device).active and not distributed.world().main:
            echo, progress = (lambda line: None), False  # rank 0 speaks for all ranks
        busy = busy_cpu_line(inp.device.type, p.experiment.threads)
        if busy:
            note(busy)  # on stderr: ``echo`` gets the stage lines alone
        threads = cpu_threads(p.experiment.threads) if inp.device.type == "cpu" else None
        if threads:
            torch.set_num_threads(threads)
        inp.calibration()  # the held-out clean images must exist before anything is trained
        write_json(out / "config.json", cfg)
        others = [Inputs(Layout(plan(replicates.replicate(cfg, r)), out, inp.layout.n_test), same_data=inp)
                  for r in range(1, p.experiment.seeds)]
        stages = stage_list(inp, progress, hook)
        for r, other in enumerate(others, 2):  # a stage shared with an earlier replicate is found done and cached
            stages += [replace(st, name=f"seed {r}: {st.name}") for st in stage_list(other, progress, hook)]
        now = run_stages(stages, force=force, hook=hook, echo=echo, rates_file=out / RATES_NAME)
        seconds = merged_stage_seconds(out / SECONDS_NAME, [st.name for st in stages], now)
        results = assemble(inp, time.perf_counter() - t_start, seconds, threads, measured_now=len(now))
        if others:
            reps = [(inp, results)] + [(o, assemble(o, 0.0, {}, threads)) for o in others]
            results["replication"] = replication.summary(reps, replicates.model_seeds(cfg), p.experiment.seed)
        write_json(out / "results.json", results)
    return results
