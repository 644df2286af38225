"""Image folders in torchvision's ImageFolder layout: ``dataset = "imagefolder:PATH"``.

``PATH/<class>/<image>`` (split into train and test by a fixed seed, :data:`TEST_SHARE` of each class to test), or
``PATH/train/<class>/...`` beside ``PATH/test/<class>/...`` (or ``val/``). Classes are the sub-folder names in sorted
order (torchvision's ``find_classes``); the image files are the ones torchvision's ``make_dataset`` accepts. Every
image is decoded once into memory as uint8 (the package's dataset convention); image size and channels are read
from the data: 1 channel when every image is greyscale, else 3 (RGB). Images of different sizes are refused, since
one classifier input size is needed; resize them first.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..core.errors import DataError

PREFIX = "imagefolder:"
SPLIT_SEED = 20180101
TEST_SHARE = 0.2
TEST_NAMES = ("test", "val")


def is_imagefolder(name: str | None) -> bool:
    return isinstance(name, str) and name.startswith(PREFIX)


def cifar_like(image_shape) -> bool:
    """Colour images of at most 64x64 pixels: what the paper's CIFAR augmentation (pad, crop, flip) is for."""
    c, h, w = image_shape
    return c == 3 and max(h, w) <= 64


def _samples(root: Path, what: str, seen: dict) -> tuple[list[str], list[tuple[str, int]]]:
    """The class names and (path, class index) of every image under ``root``, in torchvision's order (sorted
    class folders; within one, sorted by folder then file name). Symbolic links are followed, but a folder or file
    reached twice (a link cycle, or one image under two names) is refused: ``seen`` maps each one met so far, across
    the train and test folders, to its path."""
    from torchvision.datasets.folder import IMG_EXTENSIONS

    try:
        classes = sorted(e.name for e in os.scandir(root) if e.is_dir())
    except OSError as e:
        raise DataError(f"{what} {root} cannot be read: {e.strerror or e}") from e
    if len(classes) < 2:
        raise DataError(f"{what} {root} holds {len(classes)} class folder(s) ({', '.join(classes) or 'none'}); "
                        "a classifier needs at least 2 (one sub-folder of images per class)")
    samples = []
    for index, name in enumerate(classes):
        found = sorted(_walk(os.path.join(str(root), name), seen, IMG_EXTENSIONS))
        if not found:
            raise DataError(f"{what} {root}: class folder {name!r} holds no image file (extensions: "
                            f"{', '.join(IMG_EXTENSIONS)})")
        samples += [(os.path.join(folder, file), index) for folder, file in found]
    return classes, samples


def _identity(path: str) -> tuple[int, int]:
    st = os.stat(path)  # follows links: the file or folder itself
    return st.st_dev, st.st_ino


def _walk(top: str, seen: dict, extensions: tuple[str, ...]) -> list[tuple[str, str]]:
    """(folder, file name) of every image file under ``top`` (an explicit stack; links followed once at most)."""
    out, stack = [], [top]
    while stack:
        folder = stack.pop()
        key = ("dir", *_identity(folder))
        if key in seen:
            raise DataError(f"image folder: {folder} is {seen[key]} again (a symbolic link cycle, or one folder linked "
                            "twice); each image must be reached once, or it would be counted twice and could land in "
                            "both the train and the test split")
        seen[key] = folder
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as e:
            raise DataError(f"image folder: {folder} cannot be read: {e.strerror or e}") from e
        for entry in entries:
            path = os.path.join(folder, entry.name)
            try:
                is_dir = entry.is_dir()
            except OSError:
                is_dir = False
            if is_dir:
                stack.append(path)
            elif entry.name.lower().endswith(extensions) and os.path.isfile(path):
                key = ("file", *_identity(path))
                if key in seen:
                    raise DataError(f"image folder: {path} is the same file as {seen[key]} (a link or hard link); "
                                    "one image must be in one class and one split only: remove one of them")
                seen[key] = path
                out.append((folder, entry.name))
    return out


def _decode(paths: list[str]) -> list[np.ndarray]:
    """Each file as an HxW (grey) or HxWx3 (colour) uint8 array; DataError names an unreadable file."""
    from .images import decode

    return [decode(p, f"image {p}", DataError) for p in paths]


def _stack(arrays: list[np.ndarray], paths: list[str], channels: int) -> torch.Tensor:
    sizes = {a.shape[:2] for a in arrays}
    if len(sizes) > 1:
        first = arrays[0].shape[:2]
        other = next(i for i, a in enumerate(arrays) if a.shape[:2] != first)
        raise DataError(f"the image folder mixes image sizes: {paths[0]} is {first[1]}x{first[0]}, {paths[other]} is "
                        f"{arrays[other].shape[1]}x{arrays[other].shape[0]}; resize every image to one size first")
    if channels == 3:
        arrays = [np.repeat(a[:, :, None], 3, axis=2) if a.ndim == 2 else a for a in arrays]
        x = np.stack(arrays).transpose(0, 3, 1, 2)
    else:
        x = np.stack(arrays)[:, None]
    return torch.from_numpy(np.ascontiguousarray(x))


def _split(labels: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Per class, a seeded :data:`TEST_SHARE` to test (at least one image where a class has two or more)."""
    g = np.random.default_rng(SPLIT_SEED)
    train, test = [], []
    for c in range(num_classes):
        idx = np.flatnonzero(labels == c)
        idx = idx[g.permutation(len(idx))]
        k = max(round(TEST_SHARE * len(idx)), 1) if len(idx) > 1 else 0
        test.append(idx[:k])
        train.append(idx[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def load_imagefolder(name: str):
    """The :class:`~rcedetect.data.Dataset` of ``imagefolder:PATH`` (see the module docstring)."""
    from .dataset import Dataset

    root = Path(name[len(PREFIX):] if is_imagefolder(name) else name).expanduser()
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist (dataset = imagefolder:PATH, PATH/<class>/<image>)")
    test_dir = next((root / t for t in TEST_NAMES if (root / t).is_dir()), None)
    if (root / "train").is_dir() and test_dir is not None:
        seen: dict = {}
        classes, train = _samples(root / "train", "training folder", seen)
        test_classes, test = _samples(test_dir, "test folder", seen)
        if test_classes != classes:
            extra = sorted(set(test_classes) ^ set(classes))[:4]
            raise DataError(f"{root}/train and {test_dir} have different class folders (e.g. {', '.join(extra)})")
        samples = train + test
        is_test = np.array([False] * len(train) + [True] * len(test))
    else:
        classes, samples = _samples(root, "image folder", {})
        is_test = None
    paths = [p for p, _ in samples]
    labels = np.array([c for _, c in samples], dtype=np.int64)
    arrays = _decode(paths)
    channels = 1 if all(a.ndim == 2 for a in arrays) else 3
    x = _stack(arrays, paths, channels)
    if is_test is None:
        tr, te = _split(labels, len(classes))
    else:
        tr, te = np.flatnonzero(~is_test), np.flatnonzero(is_test)
    if len(te) == 0 or len(tr) == 0:
        raise DataError(f"image folder {root} has too few images to split into train and test "
                        f"({len(samples)} images in {len(classes)} classes)")
    y, tr, te = torch.from_numpy(labels), torch.from_numpy(tr), torch.from_numpy(te)
    return Dataset(root.name or str(root), x[tr], y[tr], x[te], y[te], num_classes=len(classes), classes=tuple(classes))
