"""Request bodies to images: float NCHW tensors in [0, 1] that the model takes, or an :class:`HttpError`.

Read in memory only (nothing is written to disk) and without pickle:

- ``image/png``, ``image/jpeg``: one image, converted to the model's channels (as ``rce detect`` reads files);
- ``application/json``: an array of images, or ``{"images": [...]}``; each image a nested list (H, W) for one
  channel or (C, H, W), numbers in [0, 1];
- ``application/x-npy``: a ``.npy`` array, uint8 (N)HW / NHWC / NCHW or float (N)(C)HW in [0, 1]; its header is
  checked (dtype, shape, size) before ``np.load(..., allow_pickle=False)`` reads it;
- ``application/x-safetensors``: a tensor ``x`` in the same layouts;
- ``application/octet-stream``: any of the above, recognised by its first bytes;
- ``multipart/form-data``: one or more files of those kinds (the browser's upload), parsed from memory.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass

import numpy as np
import torch

from ..core.errors import InputError
from ..data import CORRUPT, images_from_array
from .limits import HttpError

NPY_MAGIC = b"\x93NUMPY"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the end chunk with its CRC
JPEG_MAGIC = b"\xff\xd8\xff"
NPY_DTYPES = {"u1", "f2", "f4", "f8"}

CONTENT_TYPES = {"image/png": "png", "image/jpeg": "jpeg", "image/jpg": "jpeg", "application/json": "json",
                 "application/x-npy": "npy", "application/npy": "npy", "application/x-safetensors": "safetensors",
                 "application/safetensors": "safetensors", "application/octet-stream": "bytes",
                 "multipart/form-data": "multipart"}


@dataclass(frozen=True)
class ImageSpec:
    """What the model takes: (C, H, W), and how many images one request may hold."""

    shape: tuple[int, int, int]
    max_batch: int

    @property
    def channels(self) -> int:
        return self.shape[0]


def media_type(content_type: str | None) -> str:
    """The body's kind from its Content-Type (415 when it is none the service reads)."""
    base = (content_type or "").split(";", 1)[0].strip().lower()
    if base not in CONTENT_TYPES:
        shown = f"{base!r}" if base else "none"
        raise HttpError(415, f"Content-Type {shown} is not read here; send image/png, image/jpeg, application/json, "
                             "application/x-npy, application/x-safetensors or multipart/form-data")
    return CONTENT_TYPES[base]


def decode(body: bytes, content_type: str | None, spec: ImageSpec) -> torch.Tensor:
    """The images in one request body, checked against ``spec``."""
    kind = media_type(content_type)
    if not body:
        raise HttpError(422, "the body is empty; send one image or a batch of images")
    if kind == "multipart":
        parts = [_decode_file(data, name, spec) for name, data in _files(body, content_type or "", spec)]
        x = torch.cat(parts) if parts else torch.empty(0)
    elif kind == "json":
        x = _from_json(body, spec)
    else:
        x = _decode_file(body, "the body", spec, None if kind == "bytes" else kind)
    return check(x, spec, "the request")


def check(x: torch.Tensor, spec: ImageSpec, where: str) -> torch.Tensor:
    if len(x) == 0:
        raise HttpError(422, f"{where} holds no images")
    if len(x) > spec.max_batch:
        raise HttpError(413, f"{where} holds {len(x)} images; this server takes at most {spec.max_batch} per request")
    if tuple(x.shape[1:]) != spec.shape:
        c, h, w = spec.shape
        raise HttpError(422, f"{where} holds {x.shape[3]}x{x.shape[2]} images with {x.shape[1]} channel(s) but the "
                             f"model takes {w}x{h} with {c}")
    return x


def sniff(data: bytes) -> str | None:
    if data.startswith(PNG_MAGIC):
        return "png"
    if data.startswith(JPEG_MAGIC):
        return "jpeg"
    if data.startswith(NPY_MAGIC):
        return "npy"
    if len(data) > 9 and int.from_bytes(data[:8], "little") < len(data) and data[8:9] == b"{":
        return "safetensors"
    return None


def _decode_file(data: bytes, where: str, spec: ImageSpec, kind: str | None = None) -> torch.Tensor:
    kind = kind or sniff(data)
    if kind in ("png", "jpeg"):
        return _from_image(data, where, spec)
    if kind == "npy":
        return _from_array(_npy(data, where, spec), where, spec)
    if kind == "safetensors":
        return _from_safetensors(data, where, spec)
    raise HttpError(415, f"{where} is not a PNG, JPEG, .npy or .safetensors file")


def _from_image(data: bytes, where: str, spec: ImageSpec) -> torch.Tensor:
    """One PNG or JPEG through the package's decoder (:mod:`rcedetect.data.images`: pixel limit, faithful bit
    depths): a bomb is 413, a mode without a faithful conversion or another size than the model's 422."""
    from ..data.images import open_image, pixels

    def status(code: int):
        return lambda message: HttpError(code, message)

    img = open_image(data, where, status(400), formats=["PNG", "JPEG"], too_large=status(413),
                     unfaithful=status(422))
    try:
        if img.format == "PNG":  # every chunk's CRC and the end chunk: a truncated or altered PNG is refused
            if PNG_END not in data:
                raise ValueError("no end chunk (truncated?)")
            img.verify()
            img = open_image(data, where, status(400), formats=["PNG"])
    except CORRUPT as e:
        raise HttpError(400, f"{where} is not a readable PNG or JPEG image: {e or type(e).__name__}") from e
    c, h, w = spec.shape
    if img.size != (w, h):  # checked on the header, before any pixel is decoded
        raise HttpError(422, f"{where} is a {img.size[0]}x{img.size[1]} image but the model takes {w}x{h}; resize it")
    a = pixels(img, where, status(400), channels=c)
    return _from_array(a[None], where, spec)


def _npy(data: bytes, where: str, spec: ImageSpec) -> np.ndarray:
    """A ``.npy`` array, its header checked before numpy reads (or allocates) anything."""
    fmt = np.lib.format
    f = io.BytesIO(data)
    try:
        version = fmt.read_magic(f)
        reader = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}.get(version)
        if reader is None:
            raise ValueError(f"version {version[0]}.{version[1]} is not read here (1.0 or 2.0)")
        shape, _, dtype = reader(f)
    except CORRUPT as e:
        raise HttpError(400, f"{where} is not a readable .npy array: {e}") from e
    if dtype.hasobject or dtype.fields is not None or f"{dtype.kind}{dtype.itemsize}" not in NPY_DTYPES:
        raise HttpError(422, f"{where}: images must be uint8 or float16/32/64, got dtype {dtype} "
                             "(object arrays are never unpickled)")
    if shape and shape[0] > spec.max_batch and len(shape) >= 3:
        raise HttpError(413, f"{where} holds {shape[0]} images; this server takes at most {spec.max_batch} per request")
    if len(f.getvalue()) - f.tell() != math.prod(shape) * dtype.itemsize:
        raise HttpError(400, f"{where}: the .npy header promises shape {shape} of {dtype}, which the data does not "
                             "match (truncated?)")
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except CORRUPT as e:
        raise HttpError(400, f"{where} is not a readable .npy array: {e}") from e


def _from_safetensors(data: bytes, where: str, spec: ImageSpec) -> torch.Tensor:
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        tensors = load(data)
    except (SafetensorError, *CORRUPT) as e:
        raise HttpError(400, f"{where} is not a readable .safetensors file: {e}") from e
    x = tensors.get("x")
    if x is None:
        raise HttpError(422, f"{where} has no tensor 'x' (it has {', '.join(sorted(tensors)) or 'none'})")
    if x.dim() >= 3 and x.shape[0] > spec.max_batch:
        raise HttpError(413, f"{where} holds {x.shape[0]} images; this server takes at most {spec.max_batch} per request")
    return _from_array((x.float() if x.is_floating_point() else x).numpy(), where, spec)


def _from_json(body: bytes, spec: ImageSpec) -> torch.Tensor:
    try:
        obj = json.loads(body)
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise HttpError(400, f"the body is not valid JSON: {e}") from e
    if isinstance(obj, dict):
        if "images" not in obj:
            raise HttpError(422, f"a JSON object body needs the key 'images' (it has {', '.join(map(str, obj))[:80]})")
        obj = obj["images"]
    if not isinstance(obj, list):
        raise HttpError(422, f"the JSON images must be an array of images, got {type(obj).__name__}")
    if len(obj) > spec.max_batch:
        raise HttpError(413, f"the request holds {len(obj)} images; this server takes at most {spec.max_batch} "
                             "per request")
    try:
        a = np.asarray(obj)
    except (ValueError, TypeError, OverflowError, RecursionError) as e:
        raise HttpError(422, "the JSON images must be nested arrays of numbers, all of one shape") from e
    if a.dtype.kind not in "iuf" or a.size == 0 and len(obj):
        raise HttpError(422, "the JSON images must be nested arrays of numbers, all of one shape")
    return _from_array(a.astype(np.float32), "the JSON images", spec)


def _from_array(a: np.ndarray, where: str, spec: ImageSpec) -> torch.Tensor:
    """``images_from_array`` (uint8 NHW / NHWC / NCHW, float NCHW) plus one image (H, W) and float (N, H, W)
    for a one-channel model."""
    if spec.channels == 1 and a.ndim == 2:
        a = a[None]
    if spec.channels == 1 and a.ndim == 3 and a.dtype != np.uint8:
        a = a[:, None]
    if a.ndim not in (3, 4):
        raise HttpError(422, f"{where}: expected images as (N, H, W) or (N, C, H, W), got shape {a.shape}")
    if len(a) > spec.max_batch:
        raise HttpError(413, f"{where} holds {len(a)} images; this server takes at most {spec.max_batch} per request")
    try:
        return images_from_array(a, spec.channels, where)
    except InputError as e:
        raise HttpError(422, str(e)) from e


def _files(body: bytes, content_type: str, spec: ImageSpec) -> list[tuple[str, bytes]]:
    """(name, bytes) of each file of a multipart body, parsed in memory."""
    from python_multipart.multipart import MultipartParser, parse_options_header

    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise HttpError(400, "a multipart/form-data body needs a boundary in its Content-Type")
    parts: list[dict] = []
    header: list[bytes] = [b"", b""]

    def on_part_begin():
        parts.append({"headers": {}, "data": []})
        if len(parts) > spec.max_batch:
            raise HttpError(413, f"the request holds more than {spec.max_batch} files, the most this server takes")

    def on_header_field(data, start, end):
        header[0] += data[start:end]

    def on_header_value(data, start, end):
        header[1] += data[start:end]

    def on_header_end():
        parts[-1]["headers"][header[0].lower()] = header[1]
        header[0] = header[1] = b""

    def on_part_data(data, start, end):
        parts[-1]["data"].append(data[start:end])

    callbacks = {"on_part_begin": on_part_begin, "on_header_field": on_header_field,
                 "on_header_value": on_header_value, "on_header_end": on_header_end, "on_part_data": on_part_data}
    try:
        parser = MultipartParser(boundary, callbacks)
        parser.write(body)
        parser.finalize()
    except HttpError:
        raise
    except Exception as e:  # python-multipart raises its own error types
        raise HttpError(400, f"the multipart body does not parse: {e}") from e
    files = []
    for i, p in enumerate(parts):
        _, disp = parse_options_header(p["headers"].get(b"content-disposition", b""))
        if b"filename" not in disp:
            continue  # a plain form field
        name = disp[b"filename"].decode("utf-8", "replace") or f"file {i + 1}"
        files.append((f"file {name!r}", b"".join(p["data"])))
    if not files:
        raise HttpError(422, "the multipart body holds no file; upload images in a file field")
    return files
