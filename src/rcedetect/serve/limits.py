"""The limits of the service and the one error it answers with: a 4xx and one line of JSON.

Every request that breaks a limit or cannot be read is refused with a status from this table and the body
``{"error": "<one line>", "status": <code>}``:

| status | when |
|---|---|
| 400 | the body does not parse: bad JSON, a truncated PNG/JPEG/.npy/.safetensors, a broken multipart body |
| 401 | the server has a token (``--token-file``) and the request lacks ``Authorization: Bearer <token>`` or has another |
| 404 | no such route, test image or adversarial example |
| 405 | a route called with the wrong method |
| 408 | the request took longer than ``timeout_s`` (reading the body, waiting for and running the model) |
| 413 | a body over ``max_body_bytes``, or more than ``max_batch`` images in one request |
| 415 | a content type the service does not read |
| 422 | readable, but not images the model takes: shape, channels, size, dtype, NaN/inf, values outside [0, 1] |
| 429 | the server is saturated: ``max_inflight`` requests, ``max_queue_images`` images already waiting, or the bodies
  in progress would take more than ``max_memory_bytes`` to decode |

408 and 429 are the two a client may retry (429 carries ``Retry-After``); the others will fail again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

MIB = 1 << 20
#: the largest request body a server may be told to take (``--max-body-mb``)
MAX_BODY_MB = 1024
#: the largest memory budget of the bodies in progress (``--max-memory-mb``)
MAX_MEMORY_MB = 1 << 20
#: bytes of memory that decoding one byte of a body takes, at most: JSON becomes Python lists of floats (a 16 MiB
#: body took about 110 MB), the binary kinds a float32 copy of uint8 pixels (4x) beside the body itself
MEMORY_PER_BODY_BYTE = {"json": 8, "binary": 5}
#: the most images per request, images waiting or requests in flight a server may be told to take
MAX_COUNT = 1 << 20


@dataclass(frozen=True)
class Limits:
    """What one request may ask of the server, and how the server batches requests."""

    max_body_bytes: int = 16 * MIB
    max_batch: int = 256  # images per request, and per model pass
    timeout_s: float = 10.0
    batch_window_s: float = 0.005  # how long the first request of a batch waits for others
    max_queue_images: int = 4096
    max_inflight: int = 256
    max_memory_bytes: int = 1024 * MIB  # what the bodies in progress may take to decode, all together

    def check(self) -> Limits:
        from ..core.errors import ConfigError

        for name in ("max_body_bytes", "max_batch", "max_queue_images", "max_inflight", "max_memory_bytes"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.max_memory_bytes > MAX_MEMORY_MB * MIB:
            raise ConfigError(f"max-memory-mb must be at most {MAX_MEMORY_MB}, got {self.max_memory_bytes / MIB:g}")
        if self.max_body_bytes > MAX_BODY_MB * MIB:
            raise ConfigError(f"max-body-mb must be at most {MAX_BODY_MB}, got {self.max_body_bytes / MIB:g}")
        for name in ("max_batch", "max_queue_images", "max_inflight"):
            if getattr(self, name) > MAX_COUNT:
                raise ConfigError(f"{name.replace('_', '-')} must be at most {MAX_COUNT}, got {getattr(self, name)}")
        if not 0 < self.timeout_s <= 3600:
            raise ConfigError(f"the request timeout must be in (0, 3600] seconds, got {self.timeout_s}")
        if not 0 <= self.batch_window_s <= 1:
            raise ConfigError(f"the batching window must be in [0, 1000] ms, got {1000 * self.batch_window_s}")
        if self.max_queue_images < self.max_batch:
            raise ConfigError(f"max-queue ({self.max_queue_images}) must be >= max-batch ({self.max_batch})")
        return self

    def public(self) -> dict:
        return {"max_body_bytes": self.max_body_bytes, "max_batch": self.max_batch, "timeout_s": self.timeout_s,
                "batch_window_ms": 1000 * self.batch_window_s, "max_queue_images": self.max_queue_images,
                "max_inflight": self.max_inflight, "max_memory_bytes": self.max_memory_bytes}


class HttpError(Exception):
    """A refused request: ``status`` (4xx), a one-line ``message``, optional response headers."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = one_line(message)
        self.headers = headers or {}


#: the ``reason`` label of ``rce_requests_refused_total`` per status
REASONS = {400: "unreadable_body", 401: "unauthorized", 404: "not_found", 405: "method_not_allowed", 408: "timeout",
           413: "too_large", 415: "unsupported_media_type", 422: "invalid_images", 429: "overloaded"}


def one_line(message: str, limit: int = 400) -> str:
    text = " ".join(str(message).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def error_body(status: int, message: str) -> bytes:
    return json.dumps({"error": one_line(message), "status": status}).encode()


def memory_cost(content_type: str | None, size: int) -> int:
    """What a body of ``size`` bytes of ``content_type`` may take in memory while it is decoded and answered."""
    kind = "json" if "json" in (content_type or "").lower() else "binary"
    return size * MEMORY_PER_BODY_BYTE[kind]


class MemoryBudget:
    """The memory all bodies in progress may take together (``max_memory_bytes``): a request reserves its
    :func:`memory_cost` before its body is read and gives it back when answered; one that does not fit now is
    refused with 429 (retry), one that could never fit with 413. Used on the event loop only (no lock needed)."""

    def __init__(self, limit: int):
        self.limit, self.used = limit, 0

    def reserve(self, cost: int) -> int:
        if cost > self.limit:
            raise HttpError(413, f"this body may take {cost / MIB:.0f} MiB of memory to decode, more than this server's "
                                 f"{self.limit / MIB:.0f} MiB; send .npy or .safetensors, or fewer images per request")
        if self.used + cost > self.limit:
            raise HttpError(429, "the server is decoding as many bodies as its memory allows; retry shortly",
                            {"Retry-After": "1"})
        self.used += cost
        return cost

    def release(self, cost: int) -> None:
        self.used = max(0, self.used - cost)


def declared_length(request) -> int | None:
    """The request's Content-Length when it is a number of bytes (:func:`read_body` refuses another)."""
    declared = request.headers.get("content-length")
    return int(declared) if declared is not None and declared.isascii() and declared.isdigit() and len(declared) < 20 else None


async def read_body(request, limit: int) -> bytes:
    """The request body, in memory only, refused with 413 as soon as it passes ``limit`` bytes (a declared
    Content-Length over the limit is refused before anything is read)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not (declared.isascii() and declared.isdigit()) or len(declared) >= 20:
            raise HttpError(400, f"Content-Length must be a number of bytes, got {declared!r}")
        if int(declared) > limit:
            raise HttpError(413, f"the body is {int(declared):,} bytes; this server takes at most {limit:,}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HttpError(413, f"the body is over {limit:,} bytes, the most this server takes")
        chunks.append(chunk)
    return b"".join(chunks)
