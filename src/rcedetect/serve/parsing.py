"""Request bodies to images: float NCHW tensors in [0, 1] that the model takes, or an :class:`HttpError`.

The kinds of body are those of ``POST /v1/predict`` (:data:`.app.PREDICT_DOC`). A body is read in memory only
(nothing is written to disk, a multipart body is parsed from memory) and never unpickled: a ``.npy`` header is
checked (dtype, shape, size) before ``np.load(..., allow_pickle=False)`` reads it. ``application/octet-stream``
is recognised by its first bytes.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch

from ..core.errors import InputError
from ..data import CORRUPT, images_from_array
from .limits import HttpError

MAGIC = {b"\x89PNG\r\n\x1a\n": "png", b"\xff\xd8\xff": "jpeg", b"\x93NUMPY": "npy"}
PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the end chunk with its CRC
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
        x = torch.cat([_decode_file(data, name, spec) for name, data in _files(body, content_type or "", spec)])
    elif kind == "json":
        x = _from_json(body, spec)
    else:
        x = _decode_file(body, "the body", spec, None if kind == "bytes" else kind)
    if len(x) == 0:
        raise HttpError(422, "the request holds no images")
    _at_most(len(x), "the request", spec)
    if tuple(x.shape[1:]) != spec.shape:
        c, h, w = spec.shape
        raise HttpError(422, f"the request holds {x.shape[3]}x{x.shape[2]} images with {x.shape[1]} channel(s) but "
                             f"the model takes {w}x{h} with {c}")
    return x


def _at_most(n: int, where: str, spec: ImageSpec) -> None:
    """413 when ``where`` holds more images than one request may."""
    if n > spec.max_batch:
        raise HttpError(413, f"{where} holds {n} images; this server takes at most {spec.max_batch} per request")


def sniff(data: bytes) -> str | None:
    kind = next((k for magic, k in MAGIC.items() if data.startswith(magic)), None)
    if kind is None and len(data) > 9 and int.from_bytes(data[:8], "little") < len(data) and data[8:9] == b"{":
        return "safetensors"
    return kind


def _decode_file(data: bytes, where: str, spec: ImageSpec, kind: str | None = None) -> torch.Tensor:
    read = {"png": _from_image, "jpeg": _from_image, "npy": _from_npy, "safetensors": _from_safetensors}.get(
        kind or sniff(data))
    if read is None:
        raise HttpError(415, f"{where} is not a PNG, JPEG, .npy or .safetensors file")
    return read(data, where, spec)


def _from_image(data: bytes, where: str, spec: ImageSpec) -> torch.Tensor:
    """One PNG or JPEG through the package's decoder (:mod:`rcedetect.data.images`: pixel limit, faithful bit
    depths): a bomb is 413, a mode without a faithful conversion or another size than the model's 422."""
    from ..data.images import open_image, pixels

    unreadable = partial(HttpError, 400)
    img = open_image(data, where, unreadable, formats=["PNG", "JPEG"], too_large=partial(HttpError, 413),
                     unfaithful=partial(HttpError, 422))
    try:
        if img.format == "PNG":  # every chunk's CRC and the end chunk: a truncated or altered PNG is refused
            if PNG_END not in data:
                raise ValueError("no end chunk (truncated?)")
            img.verify()
            img = open_image(data, where, unreadable, formats=["PNG"])
    except CORRUPT as e:
        raise HttpError(400, f"{where} is not a readable PNG or JPEG image: {e or type(e).__name__}") from e
    c, h, w = spec.shape
    if img.size != (w, h):  # checked on the header, before any pixel is decoded
        raise HttpError(422, f"{where} is a {img.size[0]}x{img.size[1]} image but the model takes {w}x{h}; resize it")
    return _from_array(pixels(img, where, unreadable, channels=c)[None], where, spec)


def _from_npy(data: bytes, where: str, spec: ImageSpec) -> torch.Tensor:
    """A ``.npy`` array, its header checked before numpy reads (or allocates) anything."""
    fmt, f = np.lib.format, io.BytesIO(data)
    try:  # numpy's errors: unreadable (400); the checks' own HttpErrors pass through
        version = fmt.read_magic(f)
        reader = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}.get(version)
        if reader is None:
            raise ValueError(f"version {version[0]}.{version[1]} is not read here (1.0 or 2.0)")
        shape, _, dtype = reader(f)
        if dtype.hasobject or dtype.fields is not None or f"{dtype.kind}{dtype.itemsize}" not in NPY_DTYPES:
            raise HttpError(422, f"{where}: images must be uint8 or float16/32/64, got dtype {dtype} "
                                 "(object arrays are never unpickled)")
        if len(shape) >= 3:
            _at_most(shape[0], where, spec)
        if len(data) - f.tell() != math.prod(shape) * dtype.itemsize:
            raise HttpError(400, f"{where}: the .npy header promises shape {shape} of {dtype}, which the data does "
                                 "not match (truncated?)")
        a = np.load(io.BytesIO(data), allow_pickle=False)
    except CORRUPT as e:
        raise HttpError(400, f"{where} is not a readable .npy array: {e}") from e
    return _from_array(a, where, spec)


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
    if x.dim() >= 3:
        _at_most(x.shape[0], where, spec)
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
    _at_most(len(obj), "the request", spec)
    try:
        a = np.asarray(obj)
    except (ValueError, TypeError, OverflowError, RecursionError):
        a = None  # ragged, or not numbers
    if a is None or a.dtype.kind not in "iuf" or a.size == 0 and len(obj):
        raise HttpError(422, "the JSON images must be nested arrays of numbers, all of one shape")
    return _from_array(a.astype(np.float32), "the JSON images", spec)


def _from_array(a: np.ndarray, where: str, spec: ImageSpec) -> torch.Tensor:
    """``images_from_array`` (uint8 NHW / NHWC / NCHW, float NCHW) plus one image (H, W) and float (N, H, W)
    for a one-channel model."""
    channels = spec.shape[0]
    if channels == 1 and a.ndim == 2:
        a = a[None]
    if channels == 1 and a.ndim == 3 and a.dtype != np.uint8:
        a = a[:, None]
    if a.ndim not in (3, 4):
        raise HttpError(422, f"{where}: expected images as (N, H, W) or (N, C, H, W), got shape {a.shape}")
    _at_most(len(a), where, spec)
    try:
        return images_from_array(a, channels, where)
    except InputError as e:
        raise HttpError(422, str(e)) from e


def _files(body: bytes, content_type: str, spec: ImageSpec) -> list[tuple[str, bytes]]:
    """(name, bytes) of each file of a multipart body, parsed in memory."""
    from python_multipart.multipart import MultipartParser, parse_options_header

    boundary = parse_options_header(content_type)[1].get(b"boundary")
    if not boundary:
        raise HttpError(400, "a multipart/form-data body needs a boundary in its Content-Type")
    parts: list[tuple[dict, list]] = []  # (headers, chunks of data) per part
    field, value = bytearray(), bytearray()  # the header being read

    def on_part_begin():
        parts.append(({}, []))
        if len(parts) > spec.max_batch:
            raise HttpError(413, f"the request holds more than {spec.max_batch} files, the most this server takes")

    def on_header_end():
        parts[-1][0][bytes(field).lower()] = bytes(value)
        field.clear()
        value.clear()

    callbacks = {"on_part_begin": on_part_begin, "on_header_end": on_header_end,
                 "on_header_field": lambda data, start, end: field.extend(data[start:end]),
                 "on_header_value": lambda data, start, end: value.extend(data[start:end]),
                 "on_part_data": lambda data, start, end: parts[-1][1].append(data[start:end])}
    try:
        parser = MultipartParser(boundary, callbacks)
        parser.write(body)
        parser.finalize()
    except HttpError:
        raise
    except Exception as e:  # python-multipart raises its own error types
        raise HttpError(400, f"the multipart body does not parse: {e}") from e
    files = []
    for i, (headers, chunks) in enumerate(parts):
        _, disp = parse_options_header(headers.get(b"content-disposition", b""))
        if b"filename" in disp:  # else a plain form field
            name = disp[b"filename"].decode("utf-8", "replace") or f"file {i + 1}"
            files.append((f"file {name!r}", b"".join(chunks)))
    if not files:
        raise HttpError(422, "the multipart body holds no file; upload images in a file field")
    return files
