import json
import shutil

import pytest
import torch

from rcedetect.core.errors import CheckpointError
from rcedetect.models import checkpoint


@pytest.fixture()
def run_copy(trained_runs, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(trained_runs["ce"], dst)
    return dst


def test_round_trip_gives_identical_predictions(trained_runs, synthetic):
    a = checkpoint.load(trained_runs["rce"]).classifier
    b = checkpoint.load(trained_runs["rce"]).classifier
    x = synthetic.test_images()[:8]
    assert not a.training
    assert torch.equal(a.logits(x), b.logits(x))
    meta = checkpoint.read_meta(trained_runs["rce"])
    assert meta["objective"] == "rce" and meta["arch"] == "resnet8" and meta["versions"]["torch"]
    assert meta["config"]["steps"] == meta["step"]


def _weights_file(run):
    return run / json.loads((run / "checkpoint.json").read_text())["weights"]


def test_truncated_weights(run_copy):
    w = _weights_file(run_copy)
    w.write_bytes(w.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="sha256"):
        checkpoint.load(run_copy)


def test_corrupted_weights_with_matching_hash_are_still_caught(run_copy):
    w = _weights_file(run_copy)
    w.write_bytes(b"\x00" * 64)
    meta = json.loads((run_copy / "checkpoint.json").read_text())
    from rcedetect.core.io import sha256_file

    meta["weights_sha256"] = sha256_file(w)
    (run_copy / "checkpoint.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="safetensors"):
        checkpoint.load(run_copy)


def test_truncated_index(run_copy):
    idx = run_copy / "checkpoint.json"
    idx.write_text(idx.read_text()[:40])
    with pytest.raises(CheckpointError, match="not valid JSON"):
        checkpoint.load(run_copy)


def test_foreign_json(run_copy):
    (run_copy / "checkpoint.json").write_text('{"model": "something else"}')
    with pytest.raises(CheckpointError, match="not an rcedetect checkpoint"):
        checkpoint.load(run_copy)


def test_mismatched_architecture(run_copy):
    meta = json.loads((run_copy / "checkpoint.json").read_text())
    meta["arch"] = "resnet14"
    (run_copy / "checkpoint.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="do not fit resnet14"):
        checkpoint.load(run_copy)


def test_pickle_file_is_never_unpickled(run_copy):
    """A torch.save pickle in place of the weights is rejected without being executed."""
    w = _weights_file(run_copy)
    torch.save({"x": torch.zeros(1)}, w)
    meta = json.loads((run_copy / "checkpoint.json").read_text())
    from rcedetect.core.io import sha256_file

    meta["weights_sha256"] = sha256_file(w)
    (run_copy / "checkpoint.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError):
        checkpoint.load(run_copy)


def test_missing_run(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        checkpoint.load(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="checkpoint.json"):
        checkpoint.load(tmp_path / "empty")
