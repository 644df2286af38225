"""torchrun with 2 processes on the CPU (gloo): DDP training follows the one-process run to 1e-5 with the same
checkpoint format; a sharded attack writes, bit for bit, the parts one process writes; a killed shard resumes
with any number of processes; more processes than batches is one line and a failed exit."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from rcedetect.models import checkpoint

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not built in")

TRAIN = ["train", "--preset", "cpu-mnist5k-ce", "--set", 'dataset="synthetic"', "--set", "steps=6", "--set",
         "batch_size=32", "--set", "eval_every=3", "--set", "checkpoint_every=3", "--set", "lr_boundaries=[4]",
         "--set", "lr_values=[0.05,0.005]", "--device", "cpu", "--quiet"]
ATTACK = ["attack", "--attack", "bim", "--eps", "0.1", "--images", "12", "--batch-size", "4", "--device", "cpu",
          "--quiet", "--set", "steps=3"]


def rce(args: list[str], processes: int = 1) -> subprocess.CompletedProcess:
    """``rce ARGS`` in 1 process, or under ``torchrun --nproc_per_node N``; one thread per process either way
    (float reductions split over other thread counts round differently)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if processes == 1:
        cmd = [sys.executable, "-m", "rcedetect.cli", *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
               "--standalone", "-m", "rcedetect.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, check=False)


def parts(folder) -> dict[str, dict[str, torch.Tensor]]:
    return {p.name: load_file(p) for p in sorted(folder.glob("part-*.safetensors"))}


def same_parts(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(a[k].keys() == b[k].keys() and all(torch.equal(a[k][t], b[k][t])
                                                                        for t in a[k]) for k in a)


def test_ddp_training_matches_one_process(tmp_path):
    one, two = rce([*TRAIN, "--out", str(tmp_path / "one")]), rce([*TRAIN, "--out", str(tmp_path / "two")], 2)
    assert one.returncode == 0 and two.returncode == 0, two.stderr[-2000:]
    assert two.stdout.count("test accuracy") == 1  # rank 0 alone reports
    a, b = checkpoint.load(tmp_path / "one"), checkpoint.load(tmp_path / "two")  # the same format
    assert a.meta["step"] == b.meta["step"] == 6
    sa, sb = a.classifier.net.state_dict(), b.classifier.net.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.allclose(sa[k].double(), sb[k].double(), atol=1e-5, rtol=0), k
    assert any(not torch.equal(sa[k], sa[k].clone().zero_()) for k in sa)  # trained, not all zeros


def test_sharded_attack_equals_one_process_and_a_killed_shard_resumes(trained_runs, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    for dst in (one, two):  # the run alone: other tests may have attacked the shared run already
        shutil.copytree(trained_runs["ce"], dst, ignore=shutil.ignore_patterns("attacks", "detector-*"))
    r1, r2 = rce([ATTACK[0], str(one), *ATTACK[1:]]), rce([ATTACK[0], str(two), *ATTACK[1:]], 2)
    assert r1.returncode == 0 and r2.returncode == 0, r2.stderr[-2000:]
    (f1,), (f2,) = list((one / "attacks").iterdir()), list((two / "attacks").iterdir())
    assert f1.name == f2.name and len(parts(f1)) == 3
    assert same_parts(parts(f1), parts(f2))
    s1, s2 = (json.loads((f / "summary.json").read_text()) for f in (f1, f2))
    for k in ("success_rate", "mean_l2", "n_pairs", "detection"):
        assert s1[k] == s2[k]
    # rank 1's shard (batch 1) lost in a kill: two processes redo it alone; then one process redoes rank 0's
    for missing, processes in (("part-0001.safetensors", 2), ("part-0000.safetensors", 1)):
        (f2 / missing).unlink()
        (f2 / "summary.json").unlink()
        kept = {p.name: p.stat().st_mtime_ns for p in f2.glob("part-*") if p.name != missing}
        r = rce([ATTACK[0], str(two), *ATTACK[1:]], processes)
        assert r.returncode == 0, r.stderr[-2000:]
        assert {p.name: p.stat().st_mtime_ns for p in f2.glob("part-*") if p.name != missing} == kept
        assert same_parts(parts(f1), parts(f2))


def test_more_processes_than_batches_is_one_line(trained_runs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_runs["ce"], run, ignore=shutil.ignore_patterns("attacks", "detector-*"))
    r = rce(["attack", str(run), "--attack", "fgsm", "--eps", "0.1", "--images", "4", "--batch-size", "2",
             "--device", "cpu", "--quiet"], 3)
    assert r.returncode != 0
    ours = [line for line in r.stderr.splitlines() if line.startswith("rce attack: error:")]
    assert len(ours) == 1 and "3 processes for 2 batch(es)" in ours[0], r.stderr[-2000:]
    assert not list(run.glob("attacks/*/part-*"))
