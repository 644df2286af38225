"""Hardening II, silent wrong data: image folders with link cycles or one file twice, bit depths Pillow would
saturate, decompression bombs, datasets with empty splits or labels past the classes, ``--data-file`` ignored,
datasets of another image size than the model, exported labels out of range. Each is refused with one line (or,
for 16-bit images, converted faithfully)."""

from __future__ import annotations

import io
import os
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from rcedetect import data
from rcedetect.cli import main
from rcedetect.core.errors import ConfigError, DataError, InputError
from rcedetect.data.images import MAX_PIXELS, decode


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height grey pixels (a decompression bomb's header)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 1024))
            + chunk(b"IEND", b""))


def save(array: np.ndarray, path, fmt: str = "PNG") -> None:
    Image.fromarray(array).save(path, format=fmt)


def folder(root, classes=("a", "b"), per_class=3, size=6):
    for k, c in enumerate(classes):
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            save(np.full((size, size), 40 * k + i, np.uint8), root / c / f"{i}.png")
    return root


# -- image folders ----------------------------------------------------------------------------------------
def _cycle(root):
    os.symlink(root / "a", root / "a" / "loop")


def _file_in_two_classes(root):
    os.symlink(root / "a" / "0.png", root / "b" / "copy.png")


def _folder_linked_twice(root):
    os.symlink(root / "a", root / "b" / "also_a")


def _hard_link_across_splits(root):
    (root / "x").rename(root / "train")
    folder(root / "test")
    os.link(root / "train" / "a" / "0.png", root / "test" / "b" / "dup.png")


FOLDER_CASES = {
    "a symlink cycle inside a class": (_cycle, "cycle"),
    "one file in two classes": (_file_in_two_classes, "same file"),
    "one folder linked twice": (_folder_linked_twice, "again"),
    "one file in train and test": (_hard_link_across_splits, "same file"),
}


@pytest.mark.parametrize("case", sorted(FOLDER_CASES))
def test_an_image_folder_never_counts_a_file_twice(tmp_path, case):
    make, word = FOLDER_CASES[case]
    root = tmp_path / "d"
    folder(root / "x" if case == "one file in train and test" else root)
    make(root)
    with pytest.raises(DataError, match=word):
        data.load(f"imagefolder:{root}")


def test_an_image_folder_without_links_loads_every_image_once(tmp_path):
    ds = data.load(f"imagefolder:{folder(tmp_path / 'd', per_class=5)}")
    assert len(ds.x_train) + len(ds.x_test) == 10 and ds.classes == ("a", "b")
    # a symlinked image under another name in its own class is one image reached twice: refused, not counted
    os.symlink(tmp_path / "d" / "a" / "0.png", tmp_path / "d" / "a" / "z.png")
    with pytest.raises(DataError, match="same file"):
        data.load(f"imagefolder:{tmp_path / 'd'}")


# -- bit depths and modes ---------------------------------------------------------------------------------
def test_16_bit_grey_png_is_scaled_not_saturated(tmp_path):
    wide = np.array([[0, 257, 32768, 65535]], np.uint16).repeat(4, 0)
    save(wide, tmp_path / "w.png")
    a = decode(tmp_path / "w.png", "w")
    assert a.dtype == np.uint8 and a[0].tolist() == [0, 1, 128, 255]
    assert decode(tmp_path / "w.png", "w", channels=3).shape == (4, 4, 3)


UNFAITHFUL = {
    "float TIFF": (np.full((4, 4), 0.5, np.float32), "TIFF", "float"),
    "32-bit integer TIFF": (np.full((4, 4), 70000, np.int32), "TIFF", "integer"),
}


@pytest.mark.parametrize("case", sorted(UNFAITHFUL))
def test_pixels_of_unknown_scale_are_refused_everywhere(tmp_path, case):
    array, fmt, word = UNFAITHFUL[case]
    save(array, tmp_path / "f.tif", fmt)
    with pytest.raises(InputError, match=word):
        data.read_images(tmp_path / "f.tif", 1)
    root = folder(tmp_path / "d")
    save(array, root / "a" / "f.tif", fmt)
    with pytest.raises(DataError, match=word):
        data.load(f"imagefolder:{root}")


def test_a_decompression_bomb_is_refused_from_its_header(tmp_path):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_claiming(30_000, 30_000))
    assert bomb.stat().st_size < 3000 and 30_000 ** 2 > MAX_PIXELS
    with pytest.raises(InputError, match="decompression bomb"):
        data.read_images(bomb, 1)
    root = folder(tmp_path / "d")
    (root / "b" / "bomb.png").write_bytes(bomb.read_bytes())
    with pytest.raises(DataError, match="decompression bomb"):
        data.load(f"imagefolder:{root}")
    # just over our limit, far under Pillow's own: refused by the same check
    bomb.write_bytes(png_claiming(MAX_PIXELS // 1000 + 1, 1000))
    with pytest.raises(InputError, match="pixels"):
        data.read_images(bomb, 1)


# -- .npz datasets --------------------------------------------------------------------------------------
def _npz(path, **over):
    arrays = {"x_train": np.zeros((4, 6, 6), np.uint8), "y_train": np.array([0, 1, 0, 1]),
              "x_test": np.zeros((2, 6, 6), np.uint8), "y_test": np.array([0, 1])}
    arrays.update(over)
    np.savez(path, **arrays)
    return path


NPZ_CASES = {
    "an empty training set": ({"x_train": np.zeros((0, 6, 6), np.uint8), "y_train": np.zeros(0, np.int64)},
                              "no images"),
    "an empty test set": ({"x_test": np.zeros((0, 6, 6), np.uint8), "y_test": np.zeros(0, np.int64)}, "no images"),
    "images of zero pixels": ({"x_train": np.zeros((4, 0, 6), np.uint8)}, "no images"),
    "a label of 2**40": ({"y_train": np.array([0, 1, 2**40, 1])}, "label"),
    "uint64 labels that wrap to -1": ({"y_test": np.array([0, 2**64 - 1], np.uint64)}, "label"),
    "a negative label": ({"y_test": np.array([0, -1])}, "negative"),
}


@pytest.mark.parametrize("case", sorted(NPZ_CASES))
def test_npz_datasets_with_empty_splits_or_absurd_labels_are_refused(tmp_path, case):
    over, word = NPZ_CASES[case]
    with pytest.raises(DataError, match=word):
        data.load("npz", data_file=_npz(tmp_path / "d.npz", **over))


def test_a_data_file_is_used_or_refused_never_ignored(tmp_path):
    f = _npz(tmp_path / "mine.npz")
    with pytest.raises(ConfigError, match="npz"):
        data.load("mnist5k", data_file=f)
    ds = data.load_for_run({"dataset": "synthetic"}, data_file=f)  # a data file alone is the dataset npz
    assert ds.name == "mine" and ds.image_shape == (1, 6, 6)
    own = data.load_for_run({"dataset": "npz", "data_file": str(f)})
    assert own.name == "mine"


class _Model:
    in_channels, num_classes, input_shape = 1, 2, (1, 6, 6)


FIT_CASES = {
    "3 channels": (lambda d: d.__class__(d.name, d.x_train.repeat(1, 3, 1, 1), d.y_train, d.x_test.repeat(1, 3, 1, 1),
                                         d.y_test, 2), "channel"),
    "another image size": (lambda d: d.__class__(d.name, torch.zeros(4, 1, 8, 8, dtype=torch.uint8), d.y_train,
                                                 torch.zeros(2, 1, 8, 8, dtype=torch.uint8), d.y_test, 2), "8x8"),
    "a label past the classes": (lambda d: d.__class__(d.name, d.x_train, d.y_train, d.x_test,
                                                       torch.tensor([0, 5]), 6), "label 5"),
}


@pytest.mark.parametrize("case", sorted(FIT_CASES))
def test_a_dataset_must_fit_the_model(tmp_path, case):
    change, word = FIT_CASES[case]
    ds = data.load("npz", data_file=_npz(tmp_path / "d.npz"))
    assert data.check_fits(ds, _Model()) is ds
    with pytest.raises(InputError, match=word):
        data.check_fits(change(ds), _Model())


# -- the command line ------------------------------------------------------------------------------------
def test_rce_evaluate_uses_the_data_file_and_refuses_another_image_size(trained_runs, tmp_path, capsys):
    run = trained_runs["ce"]
    g = np.random.default_rng(0)
    f = tmp_path / "other.npz"
    np.savez(f, x_train=g.integers(0, 256, (8, 12, 12), dtype=np.uint8), y_train=np.arange(8) % 4,
             x_test=g.integers(0, 256, (8, 12, 12), dtype=np.uint8), y_test=np.arange(8) % 4)
    assert main(["evaluate", str(run), "--data-file", str(f), "--device", "cpu"]) == 0
    assert (run / "evaluation-other.json").is_file() and "n=8" in capsys.readouterr().out
    assert main(["evaluate", str(run), "--dataset", "mnist5k", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "28x28" in err and "12x12" in err and len(err.strip().splitlines()) == 1
    assert not (run / "evaluation-mnist5k.json").exists()


@pytest.mark.parametrize("labels", [[99, 0, 1, 2], [-5, 0, 1, 2]])
def test_rce_detect_refuses_an_export_with_labels_out_of_range(trained_runs, tmp_path, capsys, labels):
    export = tmp_path / "adv.npz"
    np.savez(export, x_adv=np.zeros((4, 1, 12, 12), np.float32), y=np.array(labels))
    code = main(["detect", str(trained_runs["ce"]), "--metric", "confidence", "--calibration-size", "20", "--quiet",
                 "--input", str(export)])
    err = capsys.readouterr().err
    assert code == 2 and "label" in err and len(err.strip().splitlines()) == 1


def test_rce_detect_refuses_a_bomb_in_one_line(trained_runs, tmp_path, capsys):
    (tmp_path / "bomb.png").write_bytes(png_claiming(30_000, 30_000))
    code = main(["detect", str(trained_runs["ce"]), "--metric", "confidence", "--quiet", "--input",
                 str(tmp_path / "bomb.png")])
    err = capsys.readouterr().err
    assert code == 2 and "decompression bomb" in err and len(err.strip().splitlines()) == 1


def test_png_bytes_are_decoded_like_files(tmp_path):
    buf = io.BytesIO()
    save(np.arange(16, dtype=np.uint8).reshape(4, 4), buf)
    assert decode(buf.getvalue(), "bytes").tolist() == np.arange(16).reshape(4, 4).tolist()


def test_rce_calibrate_uses_the_data_file_not_its_cache(trained_runs, tmp_path):
    import shutil

    from rcedetect.core.io import read_json

    run = tmp_path / "run"
    shutil.copytree(trained_runs["ce"], run)
    args = ["calibrate", str(run), "--metric", "confidence", "--calibration-size", "20", "--quiet", "--device", "cpu"]
    assert main(args) == 0
    assert read_json(run / "detector-confidence" / "detector.json")["extra"]["dataset"] == "synthetic"
    g = np.random.default_rng(1)
    f = tmp_path / "mine.npz"
    np.savez(f, x_train=g.integers(0, 256, (40, 12, 12), dtype=np.uint8), y_train=np.arange(40) % 4,
             x_test=g.integers(0, 256, (40, 12, 12), dtype=np.uint8), y_test=np.arange(40) % 4)
    assert main([*args, "--data-file", str(f)]) == 0
    assert read_json(run / "detector-confidence" / "detector.json")["extra"]["dataset"] == "mine"


def test_rce_adaptive_with_no_clean_correct_image_refuses_before_the_attack(trained_runs, tmp_path, capsys,
                                                                            monkeypatch):
    import shutil

    from rcedetect.models.classifier import Classifier

    run = tmp_path / "run"
    shutil.copytree(trained_runs["ce"], run)
    assert main(["calibrate", str(run), "--metric", "confidence", "--calibration-size", "20", "--quiet"]) == 0
    monkeypatch.setattr(Classifier, "predict_batched", lambda self, x, batch_size=500: torch.full((len(x),), -1))
    code = main(["adaptive", str(run), "--attack", "pgd_detector", "--metric", "confidence", "--eps", "0.1", "--n",
                 "4", "--quiet", "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and "classified correctly" in err and len(err.strip().splitlines()) == 1
    assert not (run / "adaptive").exists()
