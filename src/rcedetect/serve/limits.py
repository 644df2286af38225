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
from contextlib import contextmanager
from dataclasses import asdict, dataclass

from ..core.errors import ConfigError
from ..core.settings import check_fields, setting

MIB = 1 << 20
#: the largest request body (``--max-body-mb``) and memory budget (``--max-memory-mb``) a server may take, in MiB
MAX_BODY_MB, MAX_MEMORY_MB = 1024, 1 << 20
#: the most images per request, images waiting or requests in flight a server may be told to take
MAX_COUNT = 1 << 20
#: bytes of memory that decoding one byte of a body takes, at most: JSON becomes Python lists of floats (a 16 MiB
#: body took about 110 MB), the binary kinds a float32 copy of uint8 pixels (4x) beside the body itself
JSON_BYTE_COST, BINARY_BYTE_COST = 8, 5
#: how a refused limit is named: its command-line option, and the field where the option's unit is another
NAMES = {"max_body_bytes": "max_body_bytes (--max-body-mb)", "max_batch": "--max-batch", "timeout_s": "--timeout-s",
         "batch_window_s": "batch_window_s (--batch-window-ms / 1000)", "max_queue_images": "--max-queue",
         "max_inflight": "--max-inflight", "max_memory_bytes": "max_memory_bytes (--max-memory-mb)"}


@dataclass(frozen=True)
class Limits:
    """What one request may ask of the server, and how the server batches requests: each limit's default and
    range, checked by :meth:`check`."""

    max_body_bytes: int = setting(16 * MIB, lo=1, hi=MAX_BODY_MB * MIB)
    max_batch: int = setting(256, lo=1, hi=MAX_COUNT)  # images per request, and per model pass
    timeout_s: float = setting(10.0, lo=0, lo_open=True, hi=3600)
    batch_window_s: float = setting(0.005, lo=0, hi=1)  # how long the first request of a batch waits for others
    max_queue_images: int = setting(4096, lo=1, hi=MAX_COUNT)
    max_inflight: int = setting(256, lo=1, hi=MAX_COUNT)
    max_memory_bytes: int = setting(1024 * MIB, lo=1, hi=MAX_MEMORY_MB * MIB)  # decoding the bodies in progress

    def check(self) -> Limits:
        check_fields(self, name=NAMES.get)
        if self.max_queue_images < self.max_batch:
            raise ConfigError(f"--max-queue ({self.max_queue_images}) must be >= --max-batch ({self.max_batch})")
        return self

    def public(self) -> dict:
        out = asdict(self)
        out["batch_window_ms"] = 1000 * out.pop("batch_window_s")
        return out


class HttpError(Exception):
    """A refused request: ``status`` (4xx), a one-line ``message``, optional response headers."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, one_line(message), headers or {}


#: the ``reason`` label of ``rce_requests_refused_total`` per status
REASONS = {400: "unreadable_body", 401: "unauthorized", 404: "not_found", 405: "method_not_allowed", 408: "timeout",
           413: "too_large", 415: "unsupported_media_type", 422: "invalid_images", 429: "overloaded"}


def one_line(message: str, limit: int = 400) -> str:
    text = " ".join(str(message).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def error_body(status: int, message: str) -> bytes:
    return json.dumps({"error": one_line(message), "status": status}).encode()


def error_response(status: int, message: str, headers: dict | None = None):
    """The refusal as an ASGI response (the app's and the token check's)."""
    from starlette.responses import Response

    return Response(error_body(status, message), status, headers, media_type="application/json")


def memory_cost(content_type: str | None, size: int) -> int:
    """What a body of ``size`` bytes of ``content_type`` may take in memory while it is decoded and answered."""
    return size * (JSON_BYTE_COST if "json" in (content_type or "").lower() else BINARY_BYTE_COST)


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

    @contextmanager
    def holding(self, request, max_body: int):
        """The memory of ``request``'s body reserved while the block runs, before the body is read: that of its
        Content-Length (400 when it is not a number of bytes, 413 over ``max_body``), else of ``max_body`` bytes."""
        declared = request.headers.get("content-length", str(max_body))
        if not (declared.isascii() and declared.isdigit()) or len(declared) >= 20:
            raise HttpError(400, f"Content-Length must be a number of bytes, got {declared!r}")
        if int(declared) > max_body:
            raise HttpError(413, f"the body is {int(declared):,} bytes; this server takes at most {max_body:,}")
        cost = self.reserve(memory_cost(request.headers.get("content-type"), int(declared)))
        try:
            yield
        finally:
            self.release(cost)


async def read_body(request, limit: int) -> bytes:
    """The request body, in memory only, refused with 413 as soon as it passes ``limit`` bytes."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HttpError(413, f"the body is over {limit:,} bytes, the most this server takes")
        chunks.append(chunk)
    return b"".join(chunks)
