"""Request bodies of ``rce serve``: every format decodes to the same images; every malformed body is refused with
the right 4xx. The body builders here also feed the robustness test against a running server (test_serve.py)."""

from __future__ import annotations

import io
import json
import random
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("python_multipart")

from rcedetect.core.io import save_tensors
from rcedetect.serve import parsing
from rcedetect.serve.limits import HttpError

SPEC = parsing.ImageSpec((1, 12, 12), max_batch=8)
#: copy a shared trained run without what other tests may have added to it (attacks, cached detectors)
ONLY_CHECKPOINT = shutil.ignore_patterns("attacks", "adaptive", "detector-*")


def png(a: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    img = Image.fromarray(a)
    (img.convert(mode) if mode else img).save(buf, format="PNG")
    return buf.getvalue()


def jpeg(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def npy(a: np.ndarray, allow_pickle: bool = False) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=allow_pickle)
    return buf.getvalue()


def safetensors_bytes(tensors: dict[str, torch.Tensor], tmp_path) -> bytes:
    return save_tensors(tmp_path / "b.safetensors", tensors).read_bytes()


def multipart(files: list[tuple[str, bytes, str]], fields: dict[str, str] | None = None,
              boundary: str = "rce-test-boundary") -> tuple[bytes, str]:
    out = []
    for name, value in (fields or {}).items():
        out.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for filename, data, ctype in files:
        out.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
                   f"Content-Type: {ctype}\r\n\r\n".encode() + data + b"\r\n")
    out.append(f"--{boundary}--\r\n".encode())
    return b"".join(out), f"multipart/form-data; boundary={boundary}"


def digits(n: int = 3, size: int = 12, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size), dtype=np.uint8)


def malformed(rng: random.Random, size: int = 12, max_batch: int = 8, max_body: int = 1 << 20
              ) -> list[tuple[str, str | None, bytes, int]]:
    """(kind, content type, body, expected status) of malformed requests; ``rng`` varies them."""
    a = digits(2, size, rng.randrange(1000))
    good_png = png(a[0])
    good_npy = npy(a)
    cut = lambda b: b[: rng.randrange(1, len(b) - 1)]
    flips = bytearray(good_png)
    for _ in range(8):
        flips[rng.randrange(40, len(flips))] ^= 0xFF
    nan = json.dumps([[[0.5] * size] * size]).replace("0.5", "NaN", 1 + rng.randrange(5)).encode()
    header_lie = good_npy.replace(f"({len(a)}, {size}, {size})".encode(), f"(99999999, {size}, {size})".encode())
    over = json.dumps([[[0.0] * size] * size] * (max_batch + 1 + rng.randrange(4))).encode()
    return [
        ("truncated png", "image/png", cut(good_png), 400),
        ("corrupted png", "image/png", bytes(flips), 400),
        ("png of another size", "image/png", png(digits(1, size + 1 + rng.randrange(8))[0]), 422),
        ("garbage as png", "image/jpeg", rng.randbytes(rng.randrange(1, 300)), 400),
        ("truncated npy", "application/x-npy", cut(good_npy), 400),
        ("npy header lies", "application/x-npy", header_lie, 413),
        ("pickled npy", "application/x-npy", npy(np.array([{"a": 1}, None], dtype=object), allow_pickle=True), 422),
        ("int64 npy", "application/x-npy", npy(a.astype(np.int64)), 422),
        ("npy wrong shape", "application/x-npy", npy(np.zeros((2, size + 3, size), np.uint8)), 422),
        ("npy NaN", "application/x-npy", npy(np.full((1, 1, size, size), np.nan, np.float32)), 422),
        ("bad json", "application/json", cut(json.dumps(a.tolist()).encode()), 400),
        ("deep json", "application/json", b"[" * rng.randrange(5000, 100000), 400),
        ("json NaN", "application/json", b"[" + nan + b"]", 422),
        ("json out of range", "application/json", json.dumps([[[2.0] * size] * size]).encode(), 422),
        ("json ragged", "application/json", json.dumps([[[0.0] * size] * size, [[0.0]]]).encode(), 422),
        ("json strings", "application/json", json.dumps([[["a"] * size] * size]).encode(), 422),
        ("json wrong key", "application/json", b'{"image": [[0]]}', 422),
        ("json too many images", "application/json", over, 413),
        ("garbage safetensors", "application/x-safetensors", rng.randbytes(rng.randrange(9, 200)), 400),
        ("wrong content type", rng.choice(["text/plain", "application/xml", "image/gif", "video/mp4"]), good_png, 415),
        ("no content type", None, good_npy, 415),
        ("unknown bytes", "application/octet-stream", b"\x00" * rng.randrange(1, 64), 415),
        ("empty body", "image/png", b"", 422),
        ("multipart without boundary", "multipart/form-data", b"--x\r\n", 400),
        ("multipart without file", *multipart([], {"note": "hi"})[::-1], 422),
        ("huge body", "application/x-npy", b"\x93NUMPY" + b"\0" * (max_body + rng.randrange(1, 1 << 16)), 413),
    ]


# -- every format reads the same images ---------------------------------------------------------------
def test_every_format_decodes_to_the_same_images(tmp_path):
    a = digits(3)
    expect = torch.from_numpy(a).float().div(255).unsqueeze(1)
    floats = expect.numpy()
    body, ctype = multipart([(f"{i}.png", png(a[i]), "image/png") for i in range(3)], {"note": "ignored"})
    cases = {
        "npy uint8 NHW": ("application/x-npy", npy(a)),
        "npy float NCHW": ("application/x-npy", npy(floats)),
        "npy float16 NHW": ("application/octet-stream", npy(floats[:, 0].astype(np.float16))),
        "json list": ("application/json", json.dumps(floats[:, 0].tolist()).encode()),
        "json object": ("application/json; charset=utf-8", json.dumps({"images": floats.tolist()}).encode()),
        "safetensors": ("application/x-safetensors", safetensors_bytes({"x": torch.from_numpy(a)}, tmp_path)),
        "sniffed safetensors": ("application/octet-stream", safetensors_bytes({"x": expect}, tmp_path)),
        "multipart": (ctype, body),
    }
    for name, (ctype, body) in cases.items():
        x = parsing.decode(body, ctype, SPEC)
        tol = 1e-3 if "float16" in name else 0
        assert x.shape == (3, 1, 12, 12) and torch.allclose(x, expect, atol=tol, rtol=0), name
    one = parsing.decode(png(a[1]), "image/png", SPEC)
    assert torch.equal(one, expect[1:2])
    assert torch.equal(parsing.decode(png(a[1], "RGB"), "image/png", SPEC), one)  # converted like rce detect
    assert torch.equal(parsing.decode(npy(a[1]), "application/x-npy", SPEC), one)  # one HW image
    assert parsing.decode(jpeg(a[1]), "image/jpeg", SPEC).shape == (1, 1, 12, 12)


def test_rgb_model_takes_rgb_images():
    spec = parsing.ImageSpec((3, 8, 8), max_batch=4)
    rgb = np.random.default_rng(1).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    x = parsing.decode(npy(rgb), "application/x-npy", spec)
    assert torch.equal(x, torch.from_numpy(rgb).permute(0, 3, 1, 2).float() / 255)
    assert torch.equal(parsing.decode(png(rgb[0]), "image/png", spec), x[:1])
    with pytest.raises(HttpError) as e:
        parsing.decode(npy(rgb[..., 0]), "application/x-npy", spec)  # one channel for a three-channel model
    assert e.value.status == 422


def test_malformed_bodies_are_refused_with_their_status():
    rng = random.Random(0)
    for _ in range(3):
        for kind, ctype, body, status in malformed(rng, max_body=1 << 12):
            if kind == "huge body":
                continue  # the body limit is the server's (read_body); see test_serve.py
            with pytest.raises(HttpError) as e:
                parsing.decode(body, ctype, SPEC)
            assert e.value.status == status, (kind, e.value.message)
            assert "\n" not in e.value.message and e.value.message


def test_npy_is_checked_before_numpy_allocates():
    # a header promising 10^12 float64 images must be refused from the header alone
    lie = npy(np.zeros((2, 12, 12))).replace(b"(2, 12, 12)", b"(1000000000000, 12, 12)")
    with pytest.raises(HttpError) as e:
        parsing.decode(lie, "application/x-npy", parsing.ImageSpec((1, 12, 12), max_batch=10 ** 13))
    assert e.value.status == 400 and "does not match" in e.value.message
