"""Training with the paper's recipe (protocol §3): SGD momentum 0.9, batch 128, weight decay 2e-4 on conv and
linear weights only, piecewise learning rate, the same settings for CE and RCE.

The data stays on the training device as uint8; each step gathers its batch there and, for CIFAR, augments
it batch-wise. Batches and augmentation draw from generators seeded by (seed, epoch) and (seed, step), so a
run resumed from a checkpoint at step k continues with exactly the batches an uninterrupted run would see,
and on CPU the same seed gives the same weights.

Adversarial training (``adversarial``, ``trades_beta``; protocol §19, :mod:`.adversarial`): each step
crafts its batch's adversarial examples with the network in eval mode, from a start seeded by (seed, step), then
updates in train mode on them (PGD-AT, Madry et al. 2018) or on TRADES' loss (Zhang et al. 2019). The final
metrics record ``seconds_per_step`` and, for adversarial runs, the attack's ``adv_seconds`` and ``adv_share``.

The package: here the training loop (``fit``); :mod:`.config` (``TrainConfig``, presets and ``--set``
overrides), :mod:`.adversarial` (PGD-AT and TRADES steps), :mod:`.posthoc` (a model trained elsewhere imported
as a run, and its detectors evaluated on ``rce attack`` folders).

Layer: above :mod:`rcedetect.evaluation`; imports ``core``, ``stats``, ``data``, ``models``, ``detectors``,
``attacks`` and ``evaluation``, never the reproduce pipeline, the report, the server or the commands.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .. import data, models
from ..core import distributed
from ..core.device import resolve
from ..core.errors import CheckpointError, ConfigError, TrainingError
from ..core.io import write_json
from ..models import checkpoint
from ..models.classifier import Classifier
from ..models.losses import objective_loss
from . import adversarial as adversarial_training
from .config import TrainConfig, same_training


def parameter_groups(net: torch.nn.Module) -> list[dict]:
    """Weight decay on conv and linear weights only (TF's 'DW' variables); none on biases and BN."""
    decay, no_decay = [], []
    for module in net.modules():
        for name, p in module.named_parameters(recurse=False):
            is_weight = name == "weight" and isinstance(module, (torch.nn.Conv2d, torch.nn.Linear))
            (decay if is_weight else no_decay).append(p)
    return [{"params": decay, "name": "decay"}, {"params": no_decay, "name": "no_decay", "weight_decay": 0.0}]


def _optimizer_tensors(optimizer: torch.optim.SGD, net: torch.nn.Module) -> dict[str, torch.Tensor]:
    names = {id(p): n for n, p in net.named_parameters()}
    out = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            buf = optimizer.state.get(p, {}).get("momentum_buffer")
            if buf is not None:
                out[f"momentum.{names[id(p)]}"] = buf
    return out


def _restore_optimizer(optimizer: torch.optim.SGD, net: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    for name, p in net.named_parameters():
        buf = tensors.get(f"momentum.{name}")
        if buf is not None:
            if buf.shape != p.shape:
                raise CheckpointError(f"optimizer state for {name} has shape {tuple(buf.shape)}, expected {tuple(p.shape)}")
            optimizer.state[p]["momentum_buffer"] = buf.to(p.device, p.dtype).clone()


class BatchSampler:
    """Seeded epoch permutations: the batch of step s depends only on (seed, s)."""

    def __init__(self, n: int, batch_size: int, seed: int):
        self.n, self.batch_size, self.seed = n, min(batch_size, n), seed
        self.per_epoch = max(1, n // self.batch_size)
        self._epoch, self._perm = -1, None

    def indices(self, step: int) -> torch.Tensor:
        epoch, k = divmod(step, self.per_epoch)
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm, self._epoch = torch.randperm(self.n, generator=g), epoch
        return self._perm[k * self.batch_size : (k + 1) * self.batch_size]


def _check_loss(finite: bool, step: int, lr: float) -> None:
    if not finite:
        raise TrainingError(f"training diverged: the loss became NaN or infinite by step {step} (learning rate "
                            f"{lr:g}); nothing after the last checkpoint was saved; lower lr_values or check the data")


def _check_finite(net: torch.nn.Module, step: int) -> None:
    """Never save a broken model: every weight and buffer must be finite."""
    for name, t in net.state_dict().items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise TrainingError(f"training diverged: {name} holds NaN or infinite values at step {step}; the model "
                                "was not saved; lower lr_values or check momentum and weight_decay")


def _parallel(net: torch.nn.Module, device: torch.device, world: distributed.World, batch_size: int
              ) -> tuple[torch.nn.Module, slice]:
    """(the module to call, this rank's slice of each global batch): ``net`` and the whole batch in one process;
    under torchrun, DistributedDataParallel with batch statistics over all ranks and an equal contiguous share."""
    if not world.active:
        return net, slice(None)
    if batch_size % world.size:
        raise ConfigError(f"batch_size {batch_size} does not split evenly over {world.size} processes; "
                          "choose a multiple of the process count")
    from torch.nn.parallel import DistributedDataParallel

    distributed.global_batch_norm(net)
    model = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    k = batch_size // world.size
    return model, slice(world.rank * k, (world.rank + 1) * k)


@torch.no_grad()
def accuracy(classifier: Classifier, x_uint8: torch.Tensor, y: torch.Tensor, batch_size: int = 500) -> float:
    """Share of ``x`` (uint8 NCHW) that ``classifier`` labels correctly, in eval mode."""
    was_training = classifier.training
    classifier.eval()
    device = classifier.device
    correct = 0
    for i in range(0, len(x_uint8), batch_size):
        xb = data.to_float(x_uint8[i : i + batch_size].to(device))
        correct += int((classifier.predict(xb).cpu() == y[i : i + batch_size]).sum())
    classifier.train(was_training)
    return correct / max(1, len(x_uint8))


def step_costs(seconds: float, steps: int, adv_seconds: float | None) -> dict[str, float]:
    """What the steps of this invocation cost: ``seconds_per_step`` (evaluation and checkpoints included) and, for
    adversarial training, ``adv_seconds`` (crafting the adversarial batches) and its share ``adv_share``; for
    PGD-AT, whose step is otherwise a standard one, the cost relative to standard training is about
    1 / (1 − adv_share)."""
    out = {"seconds_per_step": round(seconds / max(1, steps), 5)}
    if adv_seconds is not None:
        out.update(adv_seconds=round(adv_seconds, 2), adv_share=round(adv_seconds / max(1e-9, seconds), 4))
    return out


def fit(cfg: TrainConfig, run_dir: str | Path, *, dataset: data.Dataset | None = None, resume: bool = False,
        progress: bool = True, step_callback: Callable[[int], None] | None = None) -> Classifier:
    """Train a classifier with ``cfg``, checkpointing into ``run_dir``; with ``resume``, continue from its checkpoint.

    ``step_callback(step)`` runs after each completed step (after any checkpoint of that step); tests use it
    to simulate a crash.
    """
    run_dir = Path(run_dir)
    device = resolve(cfg.device)
    world = distributed.init(device)
    ds = dataset or data.load(cfg.dataset, data_dir=cfg.data_dir or None, data_file=cfg.data_file or None)
    torch.manual_seed(cfg.seed)
    net = models.from_config(cfg, ds)
    classifier = Classifier(net, cfg.objective, input_shape=ds.image_shape).to(device)
    if cfg.channels_last:
        net.to(memory_format=torch.channels_last)
    groups = parameter_groups(net)
    optimizer = torch.optim.SGD(groups, lr=cfg.learning_rate(0, ds.num_classes), momentum=cfg.momentum, weight_decay=cfg.weight_decay)

    start, log = 0, []
    if resume:
        ckpt = checkpoint.load(run_dir, device=device, with_optimizer=True)
        if not same_training(ckpt.config, cfg):
            raise CheckpointError(f"{run_dir} was trained with another config; resume with the same preset and --set values")
        net.load_state_dict(ckpt.classifier.net.state_dict())
        _restore_optimizer(optimizer, net, ckpt.optimizer_state)
        start = ckpt.step
        log = ckpt.meta.get("metrics", {}).get("log", [])
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
    if world.main:
        write_json(run_dir / "config.json", {"train": cfg.to_dict()})

    x_train, y_train = ds.x_train.to(device), ds.y_train.to(device)
    sampler = BatchSampler(len(x_train), cfg.batch_size, cfg.seed)
    model, share = _parallel(net, device, world, sampler.batch_size)
    if cfg.compile:
        model = torch.compile(model)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if cfg.amp else nullcontext()
    classifier.train()

    def save(step: int, metrics: dict) -> None:
        _check_finite(net, step)
        if world.main:
            checkpoint.save(run_dir, classifier, step=step, config=cfg.to_dict(), dataset=ds.name,
                            metrics=metrics, optimizer_state=_optimizer_tensors(optimizer, net))
        distributed.barrier()

    progress = progress and world.main
    bar = tqdm(total=cfg.steps, initial=start, desc=f"train {cfg.arch}/{cfg.objective}", disable=not progress,
               dynamic_ncols=True)
    t0, seen = time.perf_counter(), 0
    finite = torch.ones((), dtype=torch.bool, device=device)  # every loss so far finite (read without a sync)
    adv, trades = cfg.adversarial, cfg.trades_beta is not None
    adv_timer = adversarial_training.SectionTimer(device)
    for step in range(start, cfg.steps):
        lr = cfg.learning_rate(step, ds.num_classes)
        for group in optimizer.param_groups:
            group["lr"] = lr
        idx = sampler.indices(step).to(device)
        xb, yb = data.to_float(x_train[idx]), y_train[idx]
        if cfg.augment:
            xb = data.augment(xb, cfg.pad, torch.Generator().manual_seed(cfg.seed * 7_919 + step))
        if cfg.channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        x_adv = None
        if adv is not None:  # on the bare network in eval mode, this rank's share of the whole batch's starts
            with adv_timer:
                x_adv = adversarial_training.adversarial_batch(
                    classifier, xb, yb, adv, seed=adversarial_training.attack_seed(cfg.seed, step), trades=trades,
                    rows=share, autocast=autocast)
        xb, yb = xb[share], yb[share]  # this rank's part of the global batch (all of it in one process)
        with autocast:
            raw = model(xb if x_adv is None or trades else x_adv)
        if trades:
            with autocast:
                raw_adv = model(x_adv)
            loss = adversarial_training.trades_loss(cfg.objective, raw.float(), raw_adv.float(), yb, cfg.trades_beta)
        else:
            phase = cfg.step_objective(step)
            loss = objective_loss("ce", -raw.float(), yb) if phase == "ce_reversed" else \
                objective_loss(phase, raw.float(), yb)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        seen += len(idx)
        done = step + 1
        finite &= torch.isfinite(loss.detach())
        if done % 10 == 0 or done == cfg.steps or done % cfg.eval_every == 0 or done % cfg.checkpoint_every == 0:
            _check_loss(distributed.all_true(finite), done, lr)
        if progress and (done % 10 == 0 or done == cfg.steps):
            with torch.no_grad():
                acc = float((classifier.effective_logits(raw.float()).argmax(1) == yb).float().mean())
            elapsed = max(1e-9, time.perf_counter() - t0)
            extra = {"adv": f"{adv_timer.seconds() / elapsed:.0%}"} if adv is not None else {}
            bar.set_postfix(loss=f"{loss.item():.4f}", acc=f"{acc:.3f}", lr=f"{lr:g}", img_s=f"{seen / elapsed:.0f}",
                            **extra)
        bar.update(1)
        last = done == cfg.steps
        if done % cfg.eval_every == 0 or last:
            test_acc = accuracy(classifier, ds.x_test, ds.y_test)
            log.append({"step": done, "test_accuracy": test_acc, "loss": loss.item()})
            if adv is not None:  # the share of this invocation's time so far spent crafting adversarial batches
                log[-1]["adv_share"] = round(adv_timer.seconds() / max(1e-9, time.perf_counter() - t0), 4)
            if progress:
                bar.write(json.dumps(log[-1]), file=sys.stderr)  # a log, not the output: stdout stays the results
        if done % cfg.checkpoint_every == 0 or last:
            metrics = {"log": log}
            if last:
                seconds = time.perf_counter() - t0
                metrics.update(test_accuracy=log[-1]["test_accuracy"], test_error=1 - log[-1]["test_accuracy"],
                               train_seconds=round(seconds, 2), **step_costs(seconds, cfg.steps - start,
                                                                             adv_timer.seconds() if adv else None))
            save(done, metrics)
        if step_callback is not None:
            step_callback(done)
    bar.close()
    distributed.global_batch_norm(net, on=False)
    classifier.eval()
    return classifier
