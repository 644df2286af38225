"""The ASGI app (FastAPI): prediction, model info, health, metrics, examples for the page, and the page itself
(``/`` and ``/static/{name}``).

Every refusal is a 4xx with one line of JSON (:mod:`.limits`); the request path never unpickles and never writes
to disk (:mod:`.parsing`); model passes are micro-batched (:mod:`.batching`); with a token, requests without it
are refused with 401 (:mod:`.auth`).
"""

from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager
from importlib import resources

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from ..core.errors import InputError
from ..core.io import package_version
from . import parsing
from .auth import BearerAuth
from .batching import MicroBatcher
from .engine import Batch, Engine
from .examples import Examples
from .limits import REASONS, HttpError, Limits, MemoryBudget, error_response, read_body
from .metrics import CONTENT_TYPE, Metrics

PREDICT_DOC = """One image or a batch; per image the label, or NOT SURE (`"label": null, "accepted": false`, with the
classifier's own answer in `"predicted"`: the one spelling of NOT SURE of the package's JSON), the scores of the paper's three detectors
and of the served one (higher = more likely adversarial), the served metric's threshold and whether its detector
accepted the image.

Bodies: `image/png` or `image/jpeg` (one image, converted to the model's channels); `application/json` (an array
of images, or `{"images": [...]}`, each a nested list (H, W) or (C, H, W) of numbers in [0, 1]);
`application/x-npy` (uint8 (N)HW / NHWC / NCHW, or float (N)(C)HW in [0, 1]); `application/x-safetensors`
(a tensor `x`, same layouts); `application/octet-stream` (any of these, recognised by its bytes);
`multipart/form-data` (files of these kinds). `include_image=true` adds the image the model saw, (C, H, W)."""

BINARY = {"schema": {"type": "string", "format": "binary"}}
BODY_SCHEMA = {"requestBody": {"required": True, "content": {
    **dict.fromkeys(("image/png", "image/jpeg", "application/x-npy", "application/x-safetensors"), BINARY),
    "application/json": {"schema": {"type": "object", "properties": {"images": {"type": "array", "items": {}}}}},
    "multipart/form-data": {"schema": {"type": "object", "properties": {
        "file": {"type": "array", "items": BINARY["schema"]}}}}}}}
ERROR = {"description": "refused: one line of JSON, `{\"error\": ..., \"status\": ...}`"}
#: the page at ``/`` and its files: plain HTML, CSS and JavaScript shipped in the package (``static/``), no build
#: step, served from memory with a strict Content-Security-Policy: the page loads nothing but its own files and
#: talks only to this server's API
PAGE_FILES = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
              "style.css": "text/css; charset=utf-8"}
PAGE_HEADERS = {"Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; object-src 'none'; "
                                           "base-uri 'none'; frame-ancestors 'none'",
                "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "Cache-Control": "no-cache"}


class Observe:
    """ASGI middleware: count and time every request by route and status (refusals by reason); a path that no
    route matches is counted as ``other``, so clients cannot make up series."""

    def __init__(self, app, metrics: Metrics, routes: list):
        self.app, self.metrics, self.routes = app, metrics, routes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0, status = time.perf_counter(), [500]

        async def observed_send(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observed_send)
        finally:
            route = next((r.path for r in self.routes if r.matches(scope)[0] != Match.NONE), "other")
            self.metrics.request(route, scope["method"], status[0], time.perf_counter() - t0)
            if 400 <= status[0] < 500:
                self.metrics.refuse(REASONS.get(status[0], str(status[0])))


def create_app(engine: Engine, limits: Limits, examples: Examples | None = None,
               metrics: Metrics | None = None, token: str | None = None) -> FastAPI:
    """The app serving ``engine``; ``token``: every route but ``/healthz`` and the page's files needs
    ``Authorization: Bearer <token>``."""
    metrics = metrics or Metrics()
    examples = examples or Examples({}, engine.test, engine.shape)
    spec = parsing.ImageSpec(engine.shape, limits.max_batch)
    inflight, arriving = [0], [0]  # requests in progress; of them, those still being read or decoded
    memory = MemoryBudget(limits.max_memory_bytes)
    batcher = MicroBatcher(engine.infer, Batch.rows, max_batch=limits.max_batch, window_s=limits.batch_window_s,
                           max_queue=limits.max_queue_images, on_batch=metrics.batch, arriving=lambda: arriving[0])

    @asynccontextmanager
    async def lifespan(app):
        await batcher.start()
        try:
            yield
        finally:
            await batcher.stop()

    app = FastAPI(title="rcedetect", version=package_version(), lifespan=lifespan, redoc_url=None,
                  description="A classifier and its thresholding detector (Pang et al., NeurIPS 2018): each image "
                              "gets its label, or NOT SURE when the detector's score exceeds the threshold.")
    if token:
        app.add_middleware(BearerAuth, token=token)
    app.add_middleware(Observe, metrics=metrics, routes=app.routes)  # added last, so outermost: counts the 401s
    metrics.gauge("rce_queue_images", "Images waiting for the model.", lambda: batcher.queued_images)
    metrics.gauge("rce_inflight_requests", "Prediction requests in progress.", lambda: inflight[0])
    metrics.gauge("rce_body_memory_bytes", "Memory reserved for the bodies in progress.", lambda: memory.used)

    @app.exception_handler(HttpError)
    async def refused(request, e: HttpError):
        return error_response(e.status, e.message, e.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, e: StarletteHTTPException):
        message = {404: f"no route {request.url.path}; see /docs", 405: f"{request.method} is not allowed on "
                   f"{request.url.path}"}.get(e.status_code, str(e.detail))
        return error_response(e.status_code, message, getattr(e, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(request, e: RequestValidationError):
        first = (e.errors() or [{}])[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        return error_response(422, f"{where}: {first.get('msg', 'invalid')}")

    @app.exception_handler(Exception)
    async def bug(request, e: Exception):  # a bug, not a refusal: still one line, and the server lives on
        return error_response(500, f"internal error ({type(e).__name__}); the server is still running")

    @app.get("/healthz", summary="liveness: 200 while the server answers")
    async def healthz():
        return {"status": "ok", "model": engine.run.name, "queued_images": batcher.queued_images}

    @app.get("/v1/info", summary="the model, its detector, threshold, calibration and clean accuracy")
    async def info():
        public = engine.info()
        if not token:  # the run folder is a path of this machine: only for clients that hold the token
            public.pop("run_dir", None)
        return {**public, "limits": limits.public(), "examples": len(examples.listing())}

    async def answer(request: Request, include_image: bool) -> dict:
        with memory.holding(request, limits.max_body_bytes):  # 413 / 429 when the body may not fit
            arriving[0] += 1
            try:
                body = await read_body(request, limits.max_body_bytes)
                x = await run_in_threadpool(parsing.decode, body, request.headers.get("content-type"), spec)
            finally:
                arriving[0] -= 1
            try:
                b = await batcher.submit(x)
            except InputError as e:
                raise HttpError(422, str(e)) from e
            results = engine.answer(b, x if include_image else None)
        not_sure = sum(1 for r in results if not r["accepted"])
        metrics.decisions(len(results) - not_sure, not_sure)
        d = engine.detector
        return {"model": engine.run.name, "metric": engine.metric, "threshold": d.threshold, "fpr": d.fpr,
                "count": len(results), "results": results}

    @app.post("/v1/predict", summary="label or NOT SURE for one image or a batch", description=PREDICT_DOC,
              openapi_extra=BODY_SCHEMA, responses=dict.fromkeys((400, 408, 413, 415, 422, 429), ERROR))
    async def predict(request: Request, include_image: bool = False):
        if inflight[0] >= limits.max_inflight:
            raise HttpError(429, f"{inflight[0]} requests are in progress; retry shortly", {"Retry-After": "1"})
        inflight[0] += 1
        try:
            return JSONResponse(await asyncio.wait_for(answer(request, include_image), limits.timeout_s))
        except asyncio.TimeoutError:
            raise HttpError(408, f"the request took longer than {limits.timeout_s:g} s (reading, waiting for and "
                                 "running the model); retry, or send fewer images") from None
        finally:
            inflight[0] -= 1

    @app.get("/v1/examples", summary="what the page can try: the test split and the run's adversarial examples")
    async def example_sources():
        return {"sources": examples.listing()}

    @app.get("/v1/examples/{source}/{index}", summary="one example image (C, H, W) in [0, 1]",
             responses={404: ERROR})
    async def example(source: str, index: int):
        return await run_in_threadpool(examples.get, source, index)

    @app.get("/metrics", summary="Prometheus metrics (text format 0.0.4)", response_class=Response)
    async def prometheus():
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    folder = resources.files(__package__).joinpath("static")  # the page's files, read once from the package
    files = {name: folder.joinpath(name).read_bytes() for name in PAGE_FILES}

    def page_file(name: str) -> Response:
        return Response(files[name], media_type=PAGE_FILES[name], headers=PAGE_HEADERS)

    @app.get("/", include_in_schema=False)
    async def index():
        return page_file("index.html")

    @app.get("/static/{name}", include_in_schema=False)
    async def static(name: str):
        if name not in files or name == "index.html":
            raise HttpError(404, f"no file {name!r}")
        return page_file(name)

    return app
