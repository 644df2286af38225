"""The in-memory dataset (uint8 NCHW images, int64 labels) and what a corrupted data file raises: the pieces every
loader of :mod:`rcedetect.data` shares."""

from __future__ import annotations

import tokenize
import zipfile
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Dataset:
    """A whole image dataset in memory: uint8 NCHW images and int64 labels."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int = 10
    classes: tuple = ()  # class names, where the data has them (an image folder's sub-folders)

    @property
    def channels(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])  # type: ignore[return-value]

    def train_images(self) -> torch.Tensor:
        return to_float(self.x_train)

    def test_images(self) -> torch.Tensor:
        return to_float(self.x_test)


def to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float32 in [0, 1]."""
    return x.to(torch.float32) / 255.0


#: what numpy, zipfile and PIL raise on a truncated or corrupted file (their parsers raise many kinds: a header
#: that does not parse, an unknown compression, a claimed size too large for memory)
CORRUPT = (ValueError, OSError, EOFError, SyntaxError, NotImplementedError, zipfile.BadZipFile, tokenize.TokenError,
           MemoryError, RuntimeError)
