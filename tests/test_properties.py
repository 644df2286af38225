"""Property-based tests of every loader and of the config layer: random bytes, truncated and mutated valid files,
random JSON values, random ``--set`` values. Each either succeeds or raises one of rcedetect's own errors
(:class:`RceError`), never another exception."""

from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from PIL import Image
from safetensors.torch import save

from rcedetect import data
from rcedetect.core import schemas
from rcedetect.core.errors import RceError
from rcedetect.core.io import load_tensors, read_json, sha256_file
from rcedetect.detectors import Detector
from rcedetect.models import checkpoint
from rcedetect.reproduce import resolve_config
from rcedetect.training.config import TrainConfig, train_config_from_preset

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=8,
)


def mutate(blob: bytes, cut: int, flips: list[tuple[int, int]]) -> bytes:
    """``blob`` truncated to ``cut`` bytes with some bytes xor-ed."""
    b = bytearray(blob[:cut])
    for pos, val in flips:
        if b:
            b[pos % len(b)] ^= val
    return bytes(b)


mutations = st.tuples(st.integers(0, 10**6), st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 255)), max_size=4))


def only_our_errors(fn, *args, **kw):
    try:
        return fn(*args, **kw)
    except RceError:
        return None


# ------------------------------------------------------------------------------------------- checkpoints
@pytest.fixture(scope="module")
def run(trained_runs, tmp_path_factory):
    dst = tmp_path_factory.mktemp("prop") / "run"
    shutil.copytree(trained_runs["ce"], dst)
    return dst


@SETTINGS
@given(field=st.sampled_from(sorted(schemas.CHECKPOINT) + ["extra"]), value=json_values)
def test_a_checkpoint_index_with_any_field_changed_loads_or_is_refused(run, field, value):
    original = (run / "checkpoint.json").read_text()
    try:
        meta = json.loads(original)
        meta[field] = value
        (run / "checkpoint.json").write_text(json.dumps(meta))
        ckpt = only_our_errors(checkpoint.load, run)
        if ckpt is not None:
            assert ckpt.classifier.num_classes >= 1
    finally:
        (run / "checkpoint.json").write_text(original)


@SETTINGS
@given(blob=st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v).encode()))
def test_any_bytes_as_checkpoint_index_are_refused(run, blob):
    original = (run / "checkpoint.json").read_bytes()
    try:
        (run / "checkpoint.json").write_bytes(blob)
        with pytest.raises(RceError):
            checkpoint.load(run)
    finally:
        (run / "checkpoint.json").write_bytes(original)


@SETTINGS
@given(m=mutations)
def test_truncated_or_mutated_weights_signed_again_load_or_are_refused(run, m):
    """A forger who re-signs changed weights: the file parses and is finite, or it is refused."""
    meta = json.loads((run / "checkpoint.json").read_text())
    path = run / meta["weights"]
    original, index = path.read_bytes(), (run / "checkpoint.json").read_text()
    try:
        path.write_bytes(mutate(original, min(len(original), m[0]), m[1]))
        (run / "checkpoint.json").write_text(json.dumps({**meta, "weights_sha256": sha256_file(path)}))
        ckpt = only_our_errors(checkpoint.load, run)
        if ckpt is not None:
            assert all(bool(torch.isfinite(p).all()) for p in ckpt.classifier.parameters())
    finally:
        path.write_bytes(original)
        (run / "checkpoint.json").write_text(index)


@SETTINGS
@given(blob=st.binary(max_size=400), m=mutations)
def test_safetensors_reader_takes_any_bytes(tmp_path, blob, m):
    valid = save({"x": torch.rand(2, 3), "y": torch.arange(4)})
    for candidate in (blob, mutate(valid, m[0], m[1])):
        (tmp_path / "t.safetensors").write_bytes(candidate)
        only_our_errors(load_tensors, tmp_path / "t.safetensors")


# ------------------------------------------------------------------------------------------- detectors
@pytest.fixture(scope="module")
def detector_dir(run, synthetic, tmp_path_factory):
    clf = checkpoint.load(run).classifier
    det = Detector(clf, "kd", per_class=20).fit(synthetic.train_images()[:200], synthetic.y_train[:200])
    det.calibrate(synthetic.test_images()[:50])
    folder = tmp_path_factory.mktemp("det")
    det.save(folder)
    return folder, clf


@SETTINGS
@given(field=st.sampled_from(sorted(schemas.DETECTOR)), value=json_values, sub=st.booleans())
def test_a_detector_file_with_any_field_changed_loads_or_is_refused(detector_dir, synthetic, field, value, sub):
    folder, clf = detector_dir
    original = (folder / "detector.json").read_text()
    try:
        meta = json.loads(original)
        if sub and isinstance(meta.get(field), dict) and meta[field]:  # change a value inside settings / state
            key = sorted(meta[field])[hash(json.dumps(value, default=str)) % len(meta[field])]
            meta[field][key] = value
        else:
            meta[field] = value
        (folder / "detector.json").write_text(json.dumps(meta))
        det = only_our_errors(Detector.load, folder, clf)
        if det is not None and det.calibrated:
            only_our_errors(det.predict, synthetic.test_images()[:4])
    finally:
        (folder / "detector.json").write_text(original)


@SETTINGS
@given(m=mutations)
def test_mutated_kernel_points_load_or_are_refused(detector_dir, synthetic, m):
    folder, clf = detector_dir
    path = folder / "kd.safetensors"
    original = path.read_bytes()
    try:
        path.write_bytes(mutate(original, min(len(original), m[0]), m[1]))
        det = only_our_errors(Detector.load, folder, clf)
        if det is not None:
            only_our_errors(det.predict, synthetic.test_images()[:4])
    finally:
        path.write_bytes(original)


# ------------------------------------------------------------------------------------------- images, data, results
def _valid_files() -> dict[str, bytes]:
    png = io.BytesIO()
    Image.fromarray(np.zeros((12, 12), np.uint8)).save(png, format="PNG")
    npy, npz = io.BytesIO(), io.BytesIO()
    np.save(npy, np.zeros((2, 1, 12, 12), np.float32))
    np.savez(npz, x=np.zeros((2, 12, 12), np.uint8))
    return {".png": png.getvalue(), ".npy": npy.getvalue(), ".npz": npz.getvalue(),
            ".safetensors": save({"x": torch.zeros(2, 1, 12, 12)})}


VALID = _valid_files()


@SETTINGS
@given(suffix=st.sampled_from(sorted(VALID)), blob=st.binary(max_size=300), m=mutations, random=st.booleans())
def test_image_inputs_of_any_bytes_are_read_or_refused(tmp_path, suffix, blob, m, random):
    path = tmp_path / f"in{suffix}"
    path.write_bytes(blob if random else mutate(VALID[suffix], m[0], m[1]))
    x = only_our_errors(data.read_images, path, 1)
    if x is not None:
        assert x.dtype == torch.float32 and x.dim() == 4 and len(x) > 0
        assert float(x.min()) >= 0 and float(x.max()) <= 1


@SETTINGS
@given(blob=st.binary(max_size=300), m=mutations, random=st.booleans())
def test_npz_datasets_of_any_bytes_are_read_or_refused(tmp_path, blob, m, random):
    buf = io.BytesIO()
    np.savez(buf, x_train=np.zeros((4, 8, 8), np.uint8), y_train=np.arange(4) % 2,
             x_test=np.zeros((2, 8, 8), np.uint8), y_test=np.arange(2))
    (tmp_path / "d.npz").write_bytes(blob if random else mutate(buf.getvalue(), m[0], m[1]))
    only_our_errors(data.load, "npz", data_file=tmp_path / "d.npz")


@SETTINGS
@given(value=json_values, field=st.sampled_from(sorted(schemas.RESULTS) + ["models", "attacks"]))
def test_results_files_of_any_shape_are_checked_or_refused(tmp_path, value, field):
    results = {"format": "rcedetect-results", "models": {"ce": {"role": "main", "arch": "resnet8", "objective": "ce"}},
               "attacks": [{"model": "ce", "attack": "fgsm", "eps": 0.1}]}
    results[field] = value
    (tmp_path / "results.json").write_text(json.dumps(results))
    loaded = only_our_errors(read_json, tmp_path / "results.json")
    only_our_errors(schemas.check_results, loaded, tmp_path / "results.json")


# ------------------------------------------------------------------------------------------- the config layer
set_values = st.one_of(
    st.sampled_from(["nan", "inf", "-inf", "-1", "0", "1e309", "true", "[]", "[nan]", "[-1]", "{}", '""', '"x"',
                     "[1, 2, 3]", "1.5", "[0.1, 2]", "{a = 1}", "[[1]]", "0x10", "1_000"]),
    st.text(max_size=10),
    json_values.map(json.dumps),
)


@SETTINGS
@given(key=st.sampled_from(sorted(TrainConfig().to_dict())), value=set_values)
def test_any_train_setting_is_taken_or_refused(key, value):
    cfg = only_our_errors(train_config_from_preset, "cpu-mnist5k-ce", [f"{key}={value}"])
    if cfg is not None:
        assert all(lr > 0 for lr in cfg.lr_values) and 0 <= cfg.momentum < 1 and cfg.weight_decay >= 0


def _keys(node, prefix=""):
    for k, v in node.items():
        yield f"{prefix}{k}"
        if isinstance(v, dict):
            yield from _keys(v, f"{prefix}{k}.")


TINY_KEYS = sorted(_keys(resolve_config("tiny")))


@SETTINGS
@given(key=st.sampled_from(TINY_KEYS), value=set_values)
def test_any_reproduce_setting_is_taken_or_refused_before_any_work(key, value):
    assume(not key.startswith("cuts"))
    cfg = only_our_errors(resolve_config, "tiny", [f"{key}={value}"])
    if cfg is not None:
        for a in cfg["attacks"].values():
            assert all(0 <= e <= 1 for e in a.get("eps", []))


def _paths(node, prefix=()):
    """Every (path, value) inside a JSON tree."""
    yield prefix, node
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for k, v in items:
        yield from _paths(v, (*prefix, k))


@pytest.fixture(scope="module")
def tiny_results(tiny_run):
    return json.loads((tiny_run[0] / "results.json").read_text())


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pick=st.integers(0, 10**9), value=json_values)
def test_rce_report_on_any_mutated_results_file_renders_or_says_why(tiny_results, tmp_path_factory, pick, value):
    from rcedetect.cli import main

    paths = [p for p, _ in _paths(tiny_results) if p and p[0] != "config"]
    path = paths[pick % len(paths)]
    results = json.loads(json.dumps(tiny_results))
    node = results
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    out = tmp_path_factory.mktemp("report")
    (out / "results.json").write_text(json.dumps(results))
    assert main(["report", str(out)]) in (0, 2)


# ------------------------------------------------------------------------------------------- text readers (Hardening II)
nested_text = st.builds(lambda depth, opener, tail: opener * depth + tail, st.integers(0, 3000),
                        st.sampled_from(["[", "{\"a\": ", "{a = "]), st.text(max_size=20))


@SETTINGS
@given(blob=st.binary(max_size=300) | st.text(max_size=300).map(str.encode) | nested_text.map(str.encode)
       | json_values.map(lambda v: json.dumps(v).encode()))
def test_the_json_reader_takes_any_bytes(blob):
    from rcedetect.core.textfiles import MAX_DEPTH, loads_json

    obj = only_our_errors(loads_json, blob, "the body")
    if obj is not None:  # whatever it returns, the rest of the package can copy and hash
        import copy

        from rcedetect.core.io import config_hash

        copy.deepcopy(obj)
        config_hash(obj)
        assert MAX_DEPTH >= 1


@SETTINGS
@given(blob=st.binary(max_size=300) | st.text(max_size=300).map(str.encode)
       | nested_text.map(lambda t: ("a = " + t).encode()))
def test_the_toml_reader_and_preset_loader_take_any_bytes(tmp_path, blob):
    from rcedetect.core.textfiles import loads_toml

    only_our_errors(loads_toml, blob, "the preset")
    (tmp_path / "p.toml").write_bytes(blob)
    only_our_errors(train_config_from_preset, str(tmp_path / "p.toml"))
    only_our_errors(resolve_config, str(tmp_path / "p.toml"))


@SETTINGS
@given(key=st.sampled_from(["experiment", "detector", "adaptive", "cuts", "attacks.fgsm", "models.ce",
                            "models.ce.train"]), name=st.text(min_size=1, max_size=10), value=set_values)
def test_any_key_added_to_a_preset_table_is_taken_or_refused(tmp_path, key, name, value):
    from rcedetect.core.textfiles import loads_toml
    from rcedetect.training.config import PRESET_DIR

    text = (PRESET_DIR / "tiny.toml").read_text()
    line = f"{json.dumps(name)} = {value}\n"
    only = only_our_errors(loads_toml, line, "line")
    assume(only is not None)
    header = f"[{key}]\n"
    assume(header in text)
    (tmp_path / "p.toml").write_text(text.replace(header, header + line, 1))
    cfg = only_our_errors(resolve_config, str(tmp_path / "p.toml"))
    if cfg is not None:  # taken: only a key the code reads
        assert name in {"experiment": cfg["experiment"], "detector": cfg["detector"], "cuts": cfg["cuts"],
                        "adaptive": cfg.get("adaptive", {}), "attacks.fgsm": cfg["attacks"]["fgsm"],
                        "models.ce": cfg["models"]["ce"], "models.ce.train": cfg["models"]["ce"]["train"]}[key]


@SETTINGS
@given(width=st.integers(1, 70_000), height=st.integers(1, 70_000), m=mutations)
def test_image_headers_claiming_any_size_are_read_or_refused(tmp_path, width, height, m):
    import struct
    import zlib

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    blob = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    path = tmp_path / "claim.png"
    path.write_bytes(mutate(blob, m[0], m[1]) if m[1] else blob)
    from rcedetect.data.images import MAX_PIXELS

    x = only_our_errors(data.read_images, path, 1)
    if x is not None:
        assert x.shape[2] * x.shape[3] <= MAX_PIXELS


@SETTINGS
@given(value=json_values, field=st.sampled_from(["n_images", "n_pairs", "attack_seconds", "success_rate", "n"]))
def test_results_values_are_checked_or_refused(tmp_path, value, field):
    results = {"format": "rcedetect-results", "models": {"ce": {"role": "main", "arch": "resnet8", "objective": "ce"}},
               "attacks": [{"model": "ce", "attack": "fgsm", "eps": 0.1, "detection": {"kd": {field: value}}}],
               "timings": {"stage_seconds": {"train": value}}}
    only_our_errors(schemas.check_result_values, results, tmp_path / "results.json")
