"""The pieces of ``rce serve``: the micro-batcher, the metrics text, timeouts and overload through uvicorn in a
thread, which model a folder names, and bad startup inputs (one line, exit 2)."""

from __future__ import annotations

import asyncio
import shutil
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np
import pytest
import torch

httpx = pytest.importorskip("httpx")
uvicorn = pytest.importorskip("uvicorn")
pytest.importorskip("fastapi")

from test_serve_bodies import ONLY_CHECKPOINT, npy, png

from rcedetect.cli import build_parser, main
from rcedetect.errors import CheckpointError, ConfigError
from rcedetect.io import write_json
from rcedetect.serve import engine, runs, server
from rcedetect.serve.batching import MicroBatcher
from rcedetect.serve.limits import HttpError, Limits
from rcedetect.serve.metrics import Metrics


# -- the micro-batcher --------------------------------------------------------------------------------
def batcher(run, **kw):
    settings = {"max_batch": 8, "window_s": 0.05, "max_queue": 64, **kw}
    return MicroBatcher(run, lambda out, a, b: out[a:b], **settings)


def test_batcher_merges_requests_and_splits_answers():
    sizes = []

    def run(x):
        sizes.append(len(x))
        return x * 2

    async def go():
        b = batcher(run)
        await b.start()
        xs = [torch.full((1 + i % 3, 1), float(i)) for i in range(20)]
        outs = await asyncio.gather(*(b.submit(x) for x in xs))
        await b.stop()
        return xs, outs

    xs, outs = asyncio.run(go())
    assert all(torch.equal(o, x * 2) for x, o in zip(xs, outs))
    assert sum(sizes) == sum(len(x) for x in xs) and max(sizes) <= 8 and len(sizes) <= 8


def test_batcher_does_not_wait_for_requests_that_are_not_coming():
    async def go(arriving):
        b = MicroBatcher(lambda x: x, lambda out, a, c: out[a:c], max_batch=8, window_s=2.0, max_queue=8,
                         arriving=arriving)
        await b.start()
        t0 = time.perf_counter()
        await asyncio.wait_for(b.submit(torch.ones(1, 1)), 1.0)
        await b.stop()
        return time.perf_counter() - t0

    assert asyncio.run(go(lambda: 0)) < 0.5  # nothing else on its way: no 2 s window
    with pytest.raises(asyncio.TimeoutError):
        asyncio.run(go(lambda: 1))  # another request is being read: wait for it (up to the window)


def test_batcher_skips_abandoned_requests_refuses_overflow_and_survives_a_failing_pass():
    seen = []

    def run(x):
        time.sleep(0.05)
        seen.extend(x[:, 0].tolist())
        if (x < 0).any():
            raise RuntimeError("model failure")
        return x

    async def go():
        b = batcher(run, window_s=0.0, max_queue=8)
        await b.start()
        first = asyncio.create_task(b.submit(torch.full((8, 1), 1.0)))  # runs now
        await asyncio.sleep(0.01)
        waiting = asyncio.create_task(b.submit(torch.full((8, 1), 2.0)))  # fills the queue
        await asyncio.sleep(0.005)
        with pytest.raises(HttpError) as e:
            await b.submit(torch.ones(1, 1))
        assert e.value.status == 429 and e.value.headers["Retry-After"]
        waiting.cancel()  # the caller gave up: its images never reach the model
        await first
        with pytest.raises(RuntimeError):
            await b.submit(-torch.ones(2, 1))
        ok = await b.submit(torch.full((3, 1), 3.0))
        await b.stop()
        return ok

    assert torch.equal(asyncio.run(go()), torch.full((3, 1), 3.0))
    assert 2.0 not in seen and seen.count(3.0) == 3


def test_metrics_text_is_prometheus_format():
    m = Metrics()
    for s in (0.002, 0.02, 3.0):
        m.request("/v1/predict", "POST", 200, s)
    m.request('/x"y', "GET", 404, 0.001)
    m.refuse("too_large")
    m.decisions(5, 2)
    m.batch(7, 0.01)
    text = m.render({"rce_queue_images": 0})
    lines = text.splitlines()
    assert 'rce_http_request_duration_seconds_bucket{route="/v1/predict",le="0.0025"} 1' in lines
    assert 'rce_http_request_duration_seconds_bucket{route="/v1/predict",le="+Inf"} 3' in lines
    assert 'rce_http_request_duration_seconds_count{route="/v1/predict"} 3' in lines
    assert 'rce_http_requests_total{route="/x\\"y",method="GET",status="404"} 1' in lines
    assert 'rce_images_total{decision="not_sure"} 2' in lines and "rce_model_batches_total 1" in lines
    assert 'rce_model_batch_images_bucket{le="8"} 1' in lines and "rce_queue_images 0" in lines
    for line in lines:
        assert line.startswith("#") or len(line.rsplit(" ", 1)) == 2


# -- through uvicorn in a thread ------------------------------------------------------------------------
@contextmanager
def in_thread(app):
    sock = server.bind("127.0.0.1", 0)
    srv = uvicorn.Server(uvicorn.Config(app, log_level="error", lifespan="on"))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        yield server.url_of(sock, "127.0.0.1")
    finally:
        srv.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture(scope="module")
def tiny_engine(trained_runs, tmp_path_factory):
    run = tmp_path_factory.mktemp("serve-units") / "run"
    shutil.copytree(trained_runs["rce"], run, ignore=ONLY_CHECKPOINT)
    args = build_parser().parse_args(["serve", str(run), "--per-class", "100", "--quiet", "--device", "cpu"])
    return engine.load(runs.resolve(run), args)


def test_timeout_is_408_and_too_many_requests_429(tiny_engine, monkeypatch):
    from rcedetect.serve.app import create_app

    fast = tiny_engine.infer
    monkeypatch.setattr(tiny_engine, "infer", lambda x: (time.sleep(0.4), fast(x))[1])
    app = create_app(tiny_engine, Limits(timeout_s=0.2, max_inflight=1, max_batch=4, max_queue_images=8,
                                         max_body_bytes=4096).check())
    image = png(np.zeros((12, 12), np.uint8))
    with in_thread(app) as url, httpx.Client(base_url=url, timeout=10) as c:
        r = c.post("/v1/predict", content=image, headers={"Content-Type": "image/png"})
        assert r.status_code == 408 and "longer than 0.2 s" in r.json()["error"]
        with ThreadPoolExecutor(4) as pool:
            codes = sorted(pool.map(lambda _: c.post("/v1/predict", content=image,
                                                     headers={"Content-Type": "image/png"}).status_code, range(4)))
        assert 429 in codes and set(codes) <= {408, 429}
        big = c.post("/v1/predict", content=npy(np.zeros((5, 12, 12), np.uint8)),
                     headers={"Content-Type": "application/x-npy"})
        assert big.status_code == 413 and big.json()["status"] == 413
        assert c.get("/healthz").status_code == 200
        text = c.get("/metrics").text
        assert 'rce_requests_refused_total{reason="timeout"}' in text
        assert 'rce_requests_refused_total{reason="overloaded"}' in text


# -- which model a folder names -------------------------------------------------------------------------
def test_reproduce_output_folder_gives_its_rce_model_and_current_attacks(trained_runs, tmp_path):
    from rcedetect.reproduce.config import plan, resolve_config
    from rcedetect.reproduce.layout import Layout

    cfg = resolve_config("tiny")
    out = tmp_path / "out"
    write_json(out / "config.json", cfg)
    layout = Layout(plan(cfg), out, lambda: 200)
    shutil.copytree(trained_runs["rce"], layout.model_dir("rce"), ignore=ONLY_CHECKPOINT)
    current = layout.attack_runs("rce", "fgsm")[0].dir
    stale = current.with_name("fgsm-e0.2-0123456789")
    for folder in (current, stale):
        folder.mkdir(parents=True)
        (folder / "part-0000.safetensors").write_bytes(b"")
    served = runs.resolve(out)
    assert served.model_dir == layout.model_dir("rce") and served.name.startswith("rce-")
    assert list(served.sources) == [f"attack:{current.name}"]
    assert runs.resolve(layout.model_dir("rce")).sources == served.sources  # the model folder itself
    with pytest.raises(CheckpointError, match="not trained yet"):
        runs.resolve(out, "ce")
    with pytest.raises(ConfigError, match="no model 'nope'"):
        runs.resolve(out, "nope")
    with pytest.raises(ConfigError, match="--model"):
        runs.resolve(layout.model_dir("rce"), "rce")
    with pytest.raises(ConfigError, match="neither a run folder"):
        runs.resolve(tmp_path)


# -- bad startup inputs: one line, exit 2 ----------------------------------------------------------------
def test_bad_startup_inputs_are_one_line_and_exit_2(trained_runs, tmp_path, capsys):
    shutil.copytree(trained_runs["rce"], tmp_path / "run", ignore=ONLY_CHECKPOINT)
    run = str(tmp_path / "run")
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    cases = {
        "does not exist": ["serve", str(tmp_path / "missing")],
        "cannot listen": ["serve", run, "--port", str(port)],
        "--port must be": ["serve", run, "--port", "70000"],
        "max-batch must be": ["serve", run, "--max-batch", "0"],
        "timeout": ["serve", run, "--timeout-s", "-1"],
        "--fpr must be": ["serve", run, "--fpr", "1.5"],
        "invalid choice": ["serve", run, "--metric", "lid"],
        "--model picks": ["serve", run, "--model", "rce"],
    }
    try:
        for expected, argv in cases.items():
            try:
                code = main(argv)
            except SystemExit as e:  # argparse
                code = e.code
            err = capsys.readouterr().err.strip()
            assert code == 2 and len(err.splitlines()) == 1 and expected in err, (argv, err)
    finally:
        busy.close()
    assert not (tmp_path / "run" / "detector-kd").exists()  # refused before anything was fitted
