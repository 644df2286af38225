"""The pieces of ``rce serve``: the micro-batcher, the metrics (through prometheus-client's parser), timeouts,
overload and the bearer token through uvicorn in a thread, a baseline detector (LID) served as ``Detector.predict``
answers, which model a folder names, and bad startup inputs (one line, exit 2)."""

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
from rcedetect.commands import fit_options
from rcedetect.core.errors import CheckpointError, ConfigError
from rcedetect.core.io import write_json
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


#: every metric family of /metrics, with its type and the label names of its samples (histograms add ``le``)
FAMILIES = {"rce_http_requests": ("counter", {"route", "method", "status"}),
            "rce_http_request_duration_seconds": ("histogram", {"route"}),
            "rce_requests_refused": ("counter", {"reason"}), "rce_images": ("counter", {"decision"}),
            "rce_model_batch_images": ("histogram", set()), "rce_model_batches": ("counter", set()),
            "rce_model_seconds": ("counter", set()), "process_resident_memory_bytes": ("gauge", set()),
            "rce_queue_images": ("gauge", set())}


def parse_metrics(text: str) -> dict[str, dict[tuple, float]]:
    """{sample name: {sorted label items: value}} through prometheus-client's own parser."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def test_metrics_are_prometheus_client_text_with_the_documented_names():
    from prometheus_client.parser import text_string_to_metric_families

    m = Metrics()
    other = Metrics()  # a second app in the same process: its own registry, no collision
    m.gauge("rce_queue_images", "Images waiting.", lambda: 0)
    for s in (0.002, 0.02, 3.0):
        m.request("/v1/predict", "POST", 200, s)
    m.request('/x"y', "GET", 404, 0.001)
    m.refuse("too_large")
    m.decisions(5, 2)
    m.batch(7, 0.01)
    text = m.render().decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert set(families) == set(FAMILIES) and "_created" not in text
    for name, (kind, labels) in FAMILIES.items():
        f = families[name]
        assert f.type == kind, name
        for sample in f.samples:
            assert set(sample.labels) - {"le"} == labels, (name, sample)
    v = parse_metrics(text)
    predict = (("method", "POST"), ("route", "/v1/predict"), ("status", "200"))
    assert v["rce_http_requests_total"] == {predict: 3, (("method", "GET"), ("route", '/x"y'), ("status", "404")): 1}
    assert v["rce_http_request_duration_seconds_bucket"][(("le", "0.0025"), ("route", "/v1/predict"))] == 1
    assert v["rce_http_request_duration_seconds_bucket"][(("le", "+Inf"), ("route", "/v1/predict"))] == 3
    assert v["rce_http_request_duration_seconds_count"][(("route", "/v1/predict"),)] == 3
    assert v["rce_http_request_duration_seconds_sum"][(("route", "/v1/predict"),)] == pytest.approx(3.022)
    assert v["rce_images_total"] == {(("decision", "label"),): 5, (("decision", "not_sure"),): 2}
    assert v["rce_requests_refused_total"] == {(("reason", "too_large"),): 1}
    assert v["rce_model_batches_total"][()] == 1 and v["rce_model_seconds_total"][()] == pytest.approx(0.01)
    assert v["rce_model_batch_images_bucket"][(("le", "4.0"),)] == 0
    assert v["rce_model_batch_images_bucket"][(("le", "8.0"),)] == 1 and v["rce_queue_images"][()] == 0
    fresh = parse_metrics(other.render().decode())
    assert "rce_http_requests_total" not in fresh and fresh["rce_images_total"][(("decision", "label"),)] == 0


def test_only_a_tokenless_non_loopback_address_warns():
    for host in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):
        assert server.is_loopback(host) and server.exposure_warning(host, token=False) is None
    assert server.exposure_warning("0.0.0.0", token=True) is None
    line = server.exposure_warning("0.0.0.0", token=False)
    assert line.startswith("rce serve: warning:") and "--token-file" in line and "\n" not in line


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
    return engine.load(runs.resolve(run), args.metric, fit_options(args), args.device)


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


def test_a_token_guards_every_route_but_healthz_and_the_page(tiny_engine):
    from rcedetect.serve.app import create_app

    token = "s3cret-Token_1"
    app = create_app(tiny_engine, Limits(max_batch=4, max_queue_images=8).check(), token=token)
    image = png(np.zeros((12, 12), np.uint8))
    good = {"Authorization": f"Bearer {token}"}
    with in_thread(app) as url, httpx.Client(base_url=url, timeout=10) as c:
        for method, path in (("GET", "/v1/info"), ("POST", "/v1/predict"), ("GET", "/metrics"),
                             ("GET", "/v1/examples"), ("GET", "/v1/examples/test/0"), ("GET", "/docs"),
                             ("GET", "/openapi.json"), ("GET", "/nope")):
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {token}"},
                            {"Authorization": f"Bearer {token}x"}, {"Authorization": token}):
                r = c.request(method, path, headers=headers, content=image if method == "POST" else None)
                assert r.status_code == 401, (method, path, headers, r.text)
                assert r.headers["www-authenticate"].startswith("Bearer")
                assert r.json() == {"error": r.json()["error"], "status": 401} and "\n" not in r.text.strip()
                assert token not in r.text
        r = c.post("/v1/predict", content=image, headers={"Content-Type": "image/png", **good})
        assert r.status_code == 200 and r.json()["count"] == 1
        assert c.post("/v1/predict", content=image, headers={"Content-Type": "image/png",
                                                             "Authorization": f"bearer {token}"}).status_code == 200
        for path in ("/v1/info", "/metrics", "/v1/examples/test/0", "/docs", "/openapi.json"):
            assert c.get(path, headers=good).status_code == 200, path
        assert c.get("/nope", headers=good).status_code == 404
        assert c.get("/healthz").status_code == 200  # liveness stays open
        page = c.get("/")  # the page's own files hold no data: a browser can load them, then send the token
        assert page.status_code == 200 and 'id="token-form"' in page.text
        assert c.get("/static/app.js").status_code == 200
        metrics = parse_metrics(c.get("/metrics", headers=good).text)
        assert metrics["rce_requests_refused_total"][(("reason", "unauthorized"),)] == 40
        unauthorized = {k: v for k, v in metrics["rce_http_requests_total"].items() if ("status", "401") in k}
        assert sum(unauthorized.values()) == 40


def test_lid_answers_equal_detector_predict(trained_runs, tmp_path, synthetic):
    from rcedetect.detectors import Detector
    from rcedetect.models import checkpoint

    shutil.copytree(trained_runs["rce"], tmp_path / "run", ignore=ONLY_CHECKPOINT)
    run = tmp_path / "run"
    args = build_parser().parse_args(["serve", str(run), "--metric", "lid", "--fit-images", "150", "--fit-eps", "0.3",
                                      "--per-class", "100", "--quiet", "--device", "cpu"])
    eng = engine.load(runs.resolve(run), args.metric, fit_options(args), args.device)
    assert eng.metrics == ["kd", "non_me", "confidence", "lid"] and eng.detector.metric == "lid"
    offline = Detector.load(run / "detector-lid", checkpoint.load(run).classifier)
    assert offline.extra["key"]["fit_images"] == 150 and offline.threshold == eng.detector.threshold
    x = synthetic.test_images()[:48]
    b = eng.infer(x)
    assert b.labels.tolist() == offline.predict(x).tolist()
    assert torch.allclose(b.scores["lid"], offline.score(x), rtol=1e-5, atol=1e-5)
    answers = eng.answer(b)
    assert set(answers[0]["scores"]) == {"kd", "non_me", "confidence", "lid"} and answers[0]["metric"] == "lid"
    assert eng.info()["labels"]["lid"] == "LID" and set(eng.info()["thresholds"]) == set(eng.metrics)


def test_a_detector_that_needs_the_images_scores_them_outside_inference_mode(tiny_engine, synthetic):
    """Mahalanobis with input pre-processing takes a gradient step on the images: the engine gives it the images,
    not the batch's features, and its answers are still Detector.predict's."""
    from rcedetect.detectors import Detector
    from rcedetect.serve.engine import Engine

    clf = tiny_engine.classifier
    maha = Detector(clf, "mahalanobis", noise=0.002, fit_images=120, fit_eps=0.3)
    maha.fit(synthetic.train_images(), synthetic.y_train).calibrate(synthetic.test_images()[-100:], fpr=0.1)
    assert maha.scorer.needs_images
    eng = Engine(tiny_engine.run, tiny_engine.ckpt, {**tiny_engine.detectors, "mahalanobis": maha}, "mahalanobis",
                 tiny_engine.test)
    x = synthetic.test_images()[:32]
    b = eng.infer(x)
    assert b.labels.tolist() == maha.predict(x).tolist()
    assert torch.allclose(b.scores["mahalanobis"], maha.score(x), rtol=1e-5, atol=1e-5)
    assert torch.allclose(b.scores["kd"], tiny_engine.detectors["kd"].score(x), rtol=1e-5, atol=1e-5)


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


def test_every_option_of_rce_serve_has_help():
    import argparse

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    serve = sub.choices["serve"]
    for action in serve._actions:
        assert action.help and action.help != argparse.SUPPRESS, action.dest
    assert {"--token-file", "--examples", "--fit-on", "--fit-eps", "--fit-images"} <= set(serve._option_string_actions)


# -- bad startup inputs: one line, exit 2 ----------------------------------------------------------------
def test_bad_startup_inputs_are_one_line_and_exit_2(trained_runs, tmp_path, capsys):
    shutil.copytree(trained_runs["rce"], tmp_path / "run", ignore=ONLY_CHECKPOINT)
    run = str(tmp_path / "run")
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    empty, spaced = tmp_path / "empty-token", tmp_path / "spaced-token"
    empty.write_text(" \n\t\n")
    spaced.write_text("two words\n")
    garbage, small = tmp_path / "garbage.npz", tmp_path / "small.npz"
    garbage.write_bytes(b"PK\x03\x04 not a zip")
    np.savez(small, x_adv=np.zeros((2, 1, 8, 8), np.float32), y=np.zeros(2, np.int64))
    cases = {
        "does not exist": ["serve", str(tmp_path / "missing")],
        "cannot listen": ["serve", run, "--port", str(port)],
        "--port must be": ["serve", run, "--port", "70000"],
        "max-batch must be": ["serve", run, "--max-batch", "0"],
        "timeout": ["serve", run, "--timeout-s", "-1"],
        "--fpr must be": ["serve", run, "--fpr", "1.5"],
        "invalid choice": ["serve", run, "--metric", "nope"],
        "needs a detector": ["serve", run, "--metric", "lid", "--fit-on", "cw_wb"],
        "--token-file": ["serve", run, "--token-file", str(tmp_path / "no-token")],
        "is empty": ["serve", run, "--token-file", str(empty)],
        "not a file": ["serve", run, "--token-file", str(tmp_path)],
        "printable ASCII": ["serve", run, "--token-file", str(spaced)],
        "--examples": ["serve", run, "--examples", str(tmp_path / "missing.npz")],
        "not a readable .npz": ["serve", run, "--examples", str(garbage)],
        "holds images of shape (1, 8, 8)": ["serve", run, "--examples", str(small)],
        "not an rce attack folder": ["serve", run, "--examples", str(tmp_path / "run")],
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
    assert not list((tmp_path / "run").glob("detector-*"))  # refused before anything was fitted
