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
| 429 | the server is saturated: ``max_inflight`` requests or ``max_queue_images`` images already waiting |

408 and 429 are the two a client may retry (429 carries ``Retry-After``); the others will fail again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

MIB = 1 << 20


@dataclass(frozen=True)
class Limits:
    """What one request may ask of the server, and how the server batches requests."""

    max_body_bytes: int = 16 * MIB
    max_batch: int = 256  # images per request, and per model pass
    timeout_s: float = 10.0
    batch_window_s: float = 0.005  # how long the first request of a batch waits for others
    max_queue_images: int = 4096
    max_inflight: int = 256

    def check(self) -> Limits:
        from ..core.errors import ConfigError

        for name in ("max_body_bytes", "max_batch", "max_queue_images", "max_inflight"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
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
                "max_inflight": self.max_inflight}


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


async def read_body(request, limit: int) -> bytes:
    """The request body, in memory only, refused with 413 as soon as it passes ``limit`` bytes (a declared
    Content-Length over the limit is refused before anything is read)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
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
