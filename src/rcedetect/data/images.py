"""The one decoder of image files (PNG, JPEG, BMP, GIF, TIFF, WebP) into uint8 pixels: the files of an image folder,
``rce detect --input`` and the images posted to ``rce serve``.

Refused before any pixel is decoded: a file that claims more than :data:`MAX_PIXELS` pixels (a decompression bomb:
a 2 KB PNG can claim 30,000 x 30,000). Pixels are converted faithfully or the file is refused: 8-bit modes
through Pillow, 16-bit greyscale (``I;16``) scaled by 255/65535 (Pillow's own ``convert("L")`` clips it, which
saturates nearly every pixel), and 32-bit integer or float pixels (``I``, ``F``), whose scale the file does not
say, refused with the fix.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np

from ..core.errors import InputError
from .dataset import CORRUPT

#: the most pixels (width x height) one image file may claim: 32 MiB pixels (about 5,800 x 5,800)
MAX_PIXELS = 1 << 25
#: 8-bit modes Pillow converts to L / RGB without loss of meaning
EIGHT_BIT = {"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr"}
#: 16-bit greyscale, scaled to 8 bits here
SIXTEEN_BIT = {"I;16", "I;16L", "I;16B", "I;16N"}
#: modes read as one grey channel
GREY = {"1", "L", "LA", "La"} | SIXTEEN_BIT


def open_image(source: str | Path | bytes, where: str, error=InputError, formats: list[str] | None = None,
               max_pixels: int = MAX_PIXELS, too_large=None, unfaithful=None):
    """The Pillow image of ``source`` (a path or the file's bytes), its header read, its pixel count and mode
    checked; nothing decoded yet. ``error(message)`` (one line naming ``where``) for a file that is no image,
    ``too_large`` for one that claims too many pixels and ``unfaithful`` for a mode without a faithful 8-bit
    conversion (both default to ``error``)."""
    too_large, unfaithful = too_large or error, unfaithful or error
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the limit is checked below
            img = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source, formats=formats)
    except Image.DecompressionBombError as e:
        raise too_large(f"{where} claims more pixels than {max_pixels:,} (a decompression bomb?): {e}") from e
    except (UnidentifiedImageError, *CORRUPT) as e:
        raise error(f"{where} is not a readable image: {e or type(e).__name__}") from e
    w, h = img.size
    if w * h > max_pixels:
        img.close()
        raise too_large(f"{where} claims {w}x{h} pixels, more than the {max_pixels:,} an image may have here "
                    "(a decompression bomb?); resize it")
    if img.mode not in EIGHT_BIT | SIXTEEN_BIT:
        mode = img.mode
        img.close()
        kind = {"I": "32-bit integer", "F": "32-bit float"}.get(mode, f"mode {mode}")
        raise unfaithful(f"{where} holds {kind} pixels ({mode}), whose 0..255 scale the file does not say; save it as "
                    "an 8-bit (or 16-bit greyscale) image")
    return img


def pixels(img, where: str, error=InputError, channels: int | None = None) -> np.ndarray:
    """The pixels of ``img`` (from :func:`open_image`) as uint8: H x W for a grey image and H x W x 3 for a colour one
    (``channels`` None), else as ``channels`` (1: grey, converted from colour by luminance; 3: RGB)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if img.mode in SIXTEEN_BIT:
                wide = np.asarray(img).astype(np.uint32)
                grey = ((wide * 255 + 32767) // 65535).astype(np.uint8)
                return np.repeat(grey[:, :, None], 3, axis=2) if channels == 3 else grey
            grey = img.mode in GREY if channels is None else channels == 1
            return np.asarray(img.convert("L" if grey else "RGB"), dtype=np.uint8)
    except CORRUPT as e:
        raise error(f"{where} is a truncated or corrupted image: {e or type(e).__name__}") from e


def decode(source: str | Path | bytes, where: str, error=InputError, channels: int | None = None) -> np.ndarray:
    """:func:`open_image` then :func:`pixels`: one image file as uint8 pixels, or ``error``."""
    img = open_image(source, where, error)
    try:
        return pixels(img, where, error, channels)
    finally:
        img.close()
