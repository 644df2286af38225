"""Adversarial training (protocol §19): PGD-AT (Madry et al. 2018) and TRADES (Zhang et al. 2019) as training
settings. ε = 0 is standard training bit for bit; PGD-AT is more robust than its CE twin; TRADES' loss by hand;
resume is exact; the RCE attack ascends the RCE loss with the registry's PGD; bad settings are one line, exit 2;
configs without the settings keep their hashes; under torchrun PGD-AT follows the one-process run."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest
import torch
from conftest import tiny_train_config
from tiny_nets import LinearNet

from rcedetect import attacks, models
from rcedetect.cli import main
from rcedetect.core.errors import ConfigError
from rcedetect.core.io import config_hash
from rcedetect.models import checkpoint
from rcedetect.models.classifier import Classifier
from rcedetect.models.losses import reverse_cross_entropy
from rcedetect.reproduce.layout import train_dict_for_hash
from rcedetect.training import fit
from rcedetect.training.adversarial import (
    adversarial_batch,
    attack_seed,
    kl_divergence,
    objective_loss_fn,
    trades_loss,
)
from rcedetect.training.config import (
    AdversarialSettings,
    TrainConfig,
    apply_overrides,
    same_training,
    train_config_from_preset,
)

#: a short PGD-AT run of the tiny preset (synthetic 12x12, ResNet-8)
SHORT = {"steps": 8, "eval_every": 8, "checkpoint_every": 8}


def _weights(run_dir):
    return checkpoint.load(run_dir).classifier.net.state_dict()


def _same_weights(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _unchecked(settings: AdversarialSettings, **values) -> AdversarialSettings:
    """``settings`` with ``values`` set past validation (ε = 0, which a config refuses): a test-only path."""
    for k, v in values.items():
        object.__setattr__(settings, k, v)
    return settings


def _resnet(objective: str, seed: int = 0) -> Classifier:
    torch.manual_seed(seed)
    return Classifier(models.create("resnet8", in_channels=1, num_classes=4), objective, input_shape=(1, 12, 12))


# ------------------------------------------------------------------------------------------ ε = 0 is standard


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("trades", [False, True])
def test_adversarial_batch_with_eps_0_is_the_input(synthetic, norm, trades):
    x, y = synthetic.test_images()[:16], synthetic.y_test[:16]
    settings = _unchecked(AdversarialSettings(eps=0.1, norm=norm, steps=3), eps=0.0)
    classifier = _resnet("rce").train()
    x_adv = adversarial_batch(classifier, x, y, settings, seed=5, trades=trades)
    assert torch.equal(x_adv, x)
    assert classifier.training  # the attack ran in eval mode and gave the model back in train mode
    rows = adversarial_batch(classifier, x, y, settings, seed=5, trades=trades, rows=slice(4, 12))
    assert torch.equal(rows, x[4:12])


@pytest.mark.parametrize("objective", ["ce", "rce"])
def test_pgd_at_with_eps_0_trains_the_standard_weights_bit_for_bit(tmp_path, synthetic, objective):
    fit(tiny_train_config(objective, **SHORT), tmp_path / "standard", dataset=synthetic, progress=False)
    cfg = tiny_train_config(objective, adversarial={"eps": 0.1, "steps": 2}, **SHORT)
    _unchecked(cfg.adversarial, eps=0.0)
    fit(cfg, tmp_path / "eps0", dataset=synthetic, progress=False)
    assert _same_weights(_weights(tmp_path / "standard"), _weights(tmp_path / "eps0"))
    meta = checkpoint.read_meta(tmp_path / "eps0")
    assert meta["config"]["adversarial"]["eps"] == 0.0 and meta["metrics"]["adv_seconds"] >= 0


# ------------------------------------------------------------------------------------------ robustness


def test_pgd_at_is_more_robust_than_its_ce_twin_at_the_training_eps(tmp_path, synthetic):
    eps, n = 0.2, 200
    fit(tiny_train_config("ce"), tmp_path / "ce", dataset=synthetic, progress=False)
    fit(tiny_train_config("ce", adversarial={"eps": eps, "steps": 5}), tmp_path / "at", dataset=synthetic,
        progress=False)
    x, y = synthetic.test_images()[:n], synthetic.y_test[:n]
    robust = {}
    for name in ("ce", "at"):
        classifier = checkpoint.load(tmp_path / name).classifier.eval()
        result = attacks.create("pgd", eps=eps, steps=20, label="true", seed=0)(classifier, x, y)
        robust[name] = float((~result.success & (classifier.predict(x) == y)).float().mean())
    clean_at = checkpoint.read_meta(tmp_path / "at")["metrics"]["test_accuracy"]
    gap = robust["at"] - robust["ce"]
    assert gap >= 0.3 and clean_at > 0.9, (f"robust accuracy at eps {eps} under PGD-20 on {n} test images: "
                                           f"PGD-AT {robust['at']:.3f}, CE twin {robust['ce']:.3f} (gap {gap:.3f}); "
                                           f"PGD-AT clean accuracy {clean_at:.3f}")
    metrics = checkpoint.read_meta(tmp_path / "at")["metrics"]
    assert metrics["seconds_per_step"] > 0 and 0 < metrics["adv_share"] < 1 and metrics["adv_seconds"] > 0
    assert "adv_share" in metrics["log"][-1]
    assert "adv_seconds" not in checkpoint.read_meta(tmp_path / "ce")["metrics"]


# ------------------------------------------------------------------------------------------ TRADES by hand


def _softmax(v: list[float]) -> list[float]:
    m = max(v)
    e = [math.exp(a - m) for a in v]
    return [a / sum(e) for a in e]


def _kl(p: list[float], q: list[float]) -> float:
    return sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q))


@pytest.mark.parametrize("objective", ["ce", "rce"])
def test_trades_loss_against_a_hand_computation(objective):
    w = torch.tensor([[1.0, -2.0], [0.5, 0.25], [-1.0, 1.5]])
    net = LinearNet(w, torch.tensor([0.1, 0.0, -0.2]), flatten=False)
    x = torch.tensor([[0.2, 0.4], [0.9, 0.1]])
    x_adv = torch.tensor([[0.3, 0.3], [0.8, 0.25]])
    y = torch.tensor([2, 0])
    beta = 6.0
    raw_clean, raw_adv = net.head(x), net.head(x_adv)

    def z(row):  # W x + b, by hand
        return [sum(w[k, j].item() * row[j] for j in range(2)) + net.fc.bias[k].item() for k in range(3)]

    sign = -1.0 if objective == "rce" else 1.0
    total_obj, total_kl = 0.0, 0.0
    for n in range(2):
        zc, za = z(x[n].tolist()), z(x_adv[n].tolist())
        if objective == "ce":
            total_obj += -math.log(_softmax(zc)[y[n]])
        else:  # −R_yᵀ log softmax(Z), R_y = 1/(L−1) off the true class
            total_obj += -sum(math.log(p) / 2 for k, p in enumerate(_softmax(zc)) if k != y[n])
        total_kl += _kl(_softmax([sign * v for v in zc]), _softmax([sign * v for v in za]))
    expected = total_obj / 2 + beta * total_kl / 2
    got = trades_loss(objective, raw_clean, raw_adv, y, beta)
    assert got.item() == pytest.approx(expected, rel=1e-5, abs=1e-7)
    assert trades_loss(objective, raw_clean, raw_clean, y, beta).item() == pytest.approx(total_obj / 2, rel=1e-5)
    per = kl_divergence(sign * raw_clean, sign * raw_adv)
    assert per.shape == (2,) and (per >= 0).all()


def test_the_trades_attack_ascends_the_kl_of_the_effective_outputs(synthetic):
    x, y = synthetic.test_images()[:32], synthetic.y_test[:32]
    classifier = _resnet("rce").eval()
    settings = AdversarialSettings(eps=0.1, steps=5)
    x_adv = adversarial_batch(classifier, x, y, settings, seed=3, trades=True)
    assert (x_adv - x).abs().max() <= 0.1 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    with torch.no_grad():
        kl = kl_divergence(classifier.logits(x), classifier.logits(x_adv)).mean()
        start = (x + 0.001 * torch.randn(x.shape, generator=torch.Generator().manual_seed(3))).clamp(0, 1)
        kl_start = kl_divergence(classifier.logits(x), classifier.logits(start)).mean()
    assert kl > 10 * kl_start, (float(kl), float(kl_start))


def test_pgd_at_and_trades_run_with_channels_last_and_bf16_autocast(tmp_path, synthetic):
    x, y = synthetic.test_images()[:8], synthetic.y_test[:8]
    nhwc = x.contiguous(memory_format=torch.channels_last)
    classifier = _resnet("ce").to(memory_format=torch.channels_last)
    x_adv = adversarial_batch(classifier, nhwc, y, AdversarialSettings(eps=0.1, steps=2), seed=1)
    assert x_adv.is_contiguous(memory_format=torch.channels_last)
    for trades_beta in (None, 6.0):
        cfg = tiny_train_config("rce", channels_last=True, amp=True, adversarial={"eps": 0.1, "steps": 2},
                                trades_beta=trades_beta, steps=3, eval_every=3, checkpoint_every=3)
        fit(cfg, tmp_path / str(trades_beta), dataset=synthetic, progress=False)
        weights = _weights(tmp_path / str(trades_beta))
        assert all(w.dtype != torch.bfloat16 and torch.isfinite(w.float()).all() for w in weights.values())


# ------------------------------------------------------------------------------------------ resume


class Crash(Exception):
    pass


@pytest.mark.parametrize("kind", ["pgd-at rce", "trades ce"])
def test_resume_of_an_adversarial_run_is_exact(tmp_path, synthetic, kind):
    objective = kind.split()[1]
    extra = {"trades_beta": 6.0} if kind.startswith("trades") else {}
    cfg = tiny_train_config(objective, steps=14, eval_every=7, checkpoint_every=5, lr_boundaries=(7,),
                            lr_values=(0.05, 0.01), adversarial={"eps": 0.15, "steps": 3}, **extra)
    fit(cfg, tmp_path / "whole", dataset=synthetic, progress=False)

    def crash(step):
        if step == 12:  # after the checkpoint at step 10, two steps are lost
            raise Crash

    with pytest.raises(Crash):
        fit(cfg, tmp_path / "killed", dataset=synthetic, progress=False, step_callback=crash)
    assert checkpoint.read_meta(tmp_path / "killed")["step"] == 10
    # the resumed run's global RNG is where initialisation left it, not where step 10 did: the starts must not
    # come from it
    fit(cfg, tmp_path / "killed", dataset=synthetic, progress=False, resume=True)
    assert _same_weights(_weights(tmp_path / "whole"), _weights(tmp_path / "killed"))


# ------------------------------------------------------------------------------------------ RCE


def test_rce_pgd_at_runs_and_its_attack_ascends_the_rce_loss_with_the_registrys_pgd(tmp_path, synthetic):
    cfg = tiny_train_config("rce", adversarial={"eps": 0.2, "steps": 4}, steps=20, eval_every=20,
                            checkpoint_every=20)
    classifier = fit(cfg, tmp_path / "rce-at", dataset=synthetic, progress=False)
    meta = checkpoint.read_meta(tmp_path / "rce-at")
    assert meta["objective"] == "rce" and meta["step"] == 20 and math.isfinite(meta["metrics"]["log"][-1]["loss"])
    x, y = synthetic.test_images()[:64], synthetic.y_test[:64]
    seed = attack_seed(0, 7)
    x_adv = adversarial_batch(classifier, x, y, cfg.adversarial, seed=seed)
    with torch.no_grad():
        rce = {name: reverse_cross_entropy(classifier.net(v), y).item() for name, v in [("clean", x), ("adv", x_adv)]}
    assert rce["adv"] > rce["clean"], rce
    # the same examples as the registry's PGD with the objective's loss: one PGD implementation
    pgd = attacks.create("pgd", eps=0.2, steps=4, label="true", seed=seed, loss=objective_loss_fn("rce"))
    assert torch.equal(pgd(classifier, x, y).x_adv, x_adv)
    # the loss is RCE of the raw logits Z = −(effective logits), per example
    eff = classifier.logits(x)
    torch.testing.assert_close(objective_loss_fn("rce")(eff, y), reverse_cross_entropy(-eff, y, reduction="none"))


# ------------------------------------------------------------------------------------------ settings


TRAIN = ["train", "--preset", "cpu-mnist5k-ce", "--set", 'dataset="synthetic"', "--set", "steps=2", "--quiet",
         "--device", "cpu"]
BAD = {
    "eps 2": (["train.adversarial.eps=2"], "adversarial.eps"),
    "eps 0": (["adversarial.eps=0"], "adversarial.eps"),
    "eps NaN": (["adversarial.eps=nan"], "adversarial.eps"),
    "L2 eps -1": (["adversarial.eps=-1", 'adversarial.norm="l2"'], "adversarial.eps"),
    "steps 0": (["adversarial.eps=0.1", "adversarial.steps=0"], "adversarial.steps"),
    "steps 2.5": (["adversarial.eps=0.1", "adversarial.steps=2.5"], "adversarial.steps"),
    "step_size 0": (["adversarial.eps=0.1", "adversarial.step_size=0"], "adversarial.step_size"),
    "not a training attack": (["adversarial.eps=0.1", 'adversarial.attack="fgsm"'], "training attack"),
    "unknown key": (["adversarial.eps=0.1", "adversarial.restarts=2"], "restarts"),
    "no eps": (["adversarial.steps=3"], "eps"),
    "not a table": (["adversarial=3"], "table"),
    "negative beta": (["adversarial.eps=0.1", "trades_beta=-1"], "trades_beta"),
    "NaN beta": (["adversarial.eps=0.1", "trades_beta=nan"], "trades_beta"),
    "beta without adversarial": (["trades_beta=6"], "trades_beta"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_adversarial_settings_are_one_line_and_exit_2_before_training(case, tmp_path, capsys, monkeypatch):
    overrides, word = BAD[case]
    import rcedetect.training

    monkeypatch.setattr(rcedetect.training, "fit", lambda *a, **k: pytest.fail("training started"))
    argv = [*TRAIN, *[a for o in overrides for a in ("--set", o)], "--out", str(tmp_path / "o")]
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("rce "), err
    assert word in err, err
    assert not (tmp_path / "o").exists()


def test_configs_without_the_settings_load_and_hash_as_before():
    cfg = train_config_from_preset("cpu-mnist5k-ce")
    before = {k: v for k, v in cfg.to_dict().items() if k not in ("adversarial", "trades_beta")}  # an old config
    assert TrainConfig.from_dict(before) == cfg
    assert same_training(before, cfg)  # a checkpoint saved before the settings existed resumes
    adv = train_config_from_preset("cpu-mnist5k-ce", ["adversarial.eps=0.3", "adversarial.steps=40",
                                                      "adversarial.step_size=0.01"])
    assert adv.adversarial == AdversarialSettings(eps=0.3, steps=40, step_size=0.01)
    assert adv.to_dict()["adversarial"] == {"eps": 0.3, "attack": "pgd", "norm": "linf", "steps": 40,
                                            "step_size": 0.01}
    assert TrainConfig.from_dict(adv.to_dict()) == adv  # a checkpoint's config reads back
    assert config_hash(train_dict_for_hash(adv.to_dict())) != config_hash(train_dict_for_hash(cfg.to_dict()))
    trades = train_config_from_preset("cpu-mnist5k-ce", ['adversarial={eps = 0.1, norm = "l2"}', "trades_beta=6"])
    assert trades.adversarial.norm == "l2" and trades.trades_beta == 6.0
    # a reproduce preset's model table starts the optional table the same way
    out = apply_overrides({"models": {"ce": {"train": TrainConfig().to_dict()}}},
                          ["models.ce.train.adversarial.eps=0.1"])
    assert out["models"]["ce"]["train"]["adversarial"] == {"eps": 0.1}
    with pytest.raises(ConfigError, match="unknown setting"):
        apply_overrides({"train": {"steps": 1}}, ["train.steps.eps=0.1"])


# ------------------------------------------------------------------------------------------ torchrun


def _rce(args: list[str], processes: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "rcedetect.cli", *args] if processes == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes), "--standalone", "-m",
        "rcedetect.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, check=False)


DDP_TRAIN = ["train", "--preset", "cpu-mnist5k-ce", "--set", 'dataset="synthetic"', "--set", "steps=6", "--set",
             "batch_size=32", "--set", "eval_every=3", "--set", "checkpoint_every=3", "--set", "lr_boundaries=[4]",
             "--set", "lr_values=[0.05,0.005]", "--set", "adversarial.eps=0.2", "--set", "adversarial.steps=3",
             "--device", "cpu", "--quiet"]


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not built in")
def test_pgd_at_under_torchrun_follows_the_one_process_run(tmp_path):
    """Each rank attacks its share of the whole batch's seeded starts on the bare network, then DDP updates.

    PGD's sign steps turn the float rounding of a two-process all-reduce (against one process's sum) into other
    steps where a gradient component is near zero, as for TRADES below; on some CPUs the weights then part at the
    1e-3 level after six steps. So the runs must follow each other to 5e-3 (weights) and 5e-2 (batch-norm running
    statistics); plain DDP training, without an attack, is held to 1e-5 in tests/test_distributed.py."""
    one, two = _rce([*DDP_TRAIN, "--out", str(tmp_path / "one")], 1), _rce([*DDP_TRAIN, "--out", str(tmp_path / "two")], 2)
    assert one.returncode == 0 and two.returncode == 0, two.stderr[-2000:]
    sa, sb = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    assert sa.keys() == sb.keys()
    for k in sa:
        tol = 5e-2 if "running" in k else 5e-3
        assert torch.allclose(sa[k].double(), sb[k].double(), atol=tol, rtol=0), k


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not built in")
def test_trades_trains_under_torchrun(tmp_path):
    """TRADES' two passes (clean, adversarial) through DistributedDataParallel before one backward. (Its weights
    follow the one-process run only in distribution: the sign of the KL's near-zero gradient at x + 0.001·N(0, I)
    turns float rounding into other steps.)"""
    two = _rce([*DDP_TRAIN, "--set", "trades_beta=6", "--out", str(tmp_path / "two")], 2)
    assert two.returncode == 0, two.stderr[-2000:]
    meta = checkpoint.read_meta(tmp_path / "two")
    assert meta["step"] == 6 and meta["config"]["trades_beta"] == 6.0 and meta["metrics"]["adv_seconds"] > 0
