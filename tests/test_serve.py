"""``rce serve`` through a real HTTP client against a running server (a child process on a free loopback port):
answers equal ``Detector.predict`` on the same images, adversarial examples the detector flags offline are
answered NOT SURE, and a thousand malformed requests get 4xx answers without hurting the server."""

from __future__ import annotations

import json
import random
import shutil
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import numpy as np
import pytest
import torch

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families
from test_serve_bodies import ONLY_CHECKPOINT, malformed, multipart, npy, png
from test_serve_units import FAMILIES, parse_metrics

from rcedetect.cli import build_parser, main
from rcedetect.commands import fit_options
from rcedetect.core.io import save_tensors
from rcedetect.detectors import Detector
from rcedetect.evaluation import attack_store
from rcedetect.models import checkpoint
from rcedetect.serve import engine, runs
from rcedetect.serve.spawn import ServerProcess

OPTS = ["--per-class", "100", "--quiet", "--threads", "1", "--device", "cpu", "--max-body-mb", "1",
        "--max-batch", "64", "--batch-window-ms", "20"]
MAX_BODY = 1 << 20
METRICS = ("kd", "non_me", "confidence")


@pytest.fixture(scope="module")
def served(trained_runs, tmp_path_factory):
    run = tmp_path_factory.mktemp("serve") / "run"
    shutil.copytree(trained_runs["rce"], run, ignore=ONLY_CHECKPOINT)
    assert main(["attack", str(run), "--attack", "fgsm", "--eps", "0.3", "--n", "40", "--quiet", "--device", "cpu"]) == 0
    args = build_parser().parse_args(["serve", str(run), *OPTS])
    engine.load(runs.resolve(run), args.metric, fit_options(args), args.device)  # fit and cache
    clf = checkpoint.load(run).classifier
    detectors = {m: Detector.load(run / f"detector-{m}", clf) for m in METRICS}  # what the server loads
    with ServerProcess(run, *OPTS) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        yield SimpleNamespace(run=run, server=server, client=client, det=detectors["kd"], detectors=detectors)
    assert server.stop() == 0, "".join(server.stderr[-20:])  # SIGTERM: a graceful exit


def expected(det: Detector, x: torch.Tensor) -> list:
    return [None if v < 0 else v for v in det.predict(x).tolist()]


def post(client, body: bytes, ctype: str, **params):
    return client.post("/v1/predict", content=body, headers={"Content-Type": ctype}, params=params)


def metric_value(text: str, name: str, **labels: str) -> float:
    """A sample's value, read by prometheus-client's parser (0 where the series does not exist yet)."""
    return parse_metrics(text).get(name, {}).get(tuple(sorted(labels.items())), 0.0)


def test_answers_equal_detector_predict(served, synthetic):
    u8 = synthetic.x_test[:40, 0].numpy()
    x = synthetic.test_images()[:40]
    r = post(served.client, npy(u8), "application/x-npy")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["count"] == 40 and body["metric"] == "kd" and body["threshold"] == served.det.threshold
    assert [res["label"] for res in body["results"]] == expected(served.det, x)
    offline = {m: d.score(x) for m, d in served.detectors.items()}
    for i, res in enumerate(body["results"]):
        assert res["accepted"] == (res["label"] is not None) and res["threshold"] == served.det.threshold
        assert res["label"] in (None, res["predicted"])
        for m in METRICS:
            assert res["scores"][m] == pytest.approx(float(offline[m][i]), rel=1e-4, abs=1e-4)
    # the same images in the other formats get the same answers
    floats = x.numpy()
    bodies = [(json.dumps({"images": floats.tolist()}).encode(), "application/json"),
              (save_tensors(served.run / "x.safetensors", {"x": x}).read_bytes(), "application/x-safetensors"),
              (npy(floats), "application/octet-stream"),
              multipart([(f"{i}.png", png(u8[i]), "image/png") for i in range(40)])]
    for data, ctype in bodies:
        again = post(served.client, data, ctype).json()["results"]
        assert [a["label"] for a in again] == [b["label"] for b in body["results"]], ctype


def test_concurrent_single_images_are_batched_and_exact(served, synthetic):
    u8 = synthetic.x_test[40:72, 0].numpy()
    before = metric_value(served.client.get("/metrics").text, "rce_model_batches_total")
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda a: post(served.client, png(a), "image/png"), u8))
    assert all(r.status_code == 200 for r in answers)
    got = [r.json()["results"][0]["label"] for r in answers]
    assert got == expected(served.det, synthetic.test_images()[40:72])
    passes = metric_value(served.client.get("/metrics").text, "rce_model_batches_total") - before
    assert 1 <= passes < len(u8)  # requests shared model passes


def test_adversarial_examples_flagged_offline_are_not_sure(served):
    folder = next((served.run / "attacks").iterdir())
    res, _, _ = attack_store.load_parts(folder, 40, 200)
    offline = served.det.predict(res.x_adv)
    flagged = [i for i, v in enumerate(offline.tolist()) if v < 0]
    assert flagged, "the detector flags none of the attack's examples offline"
    source = f"attack:{folder.name}"
    listing = served.client.get("/v1/examples").json()["sources"]
    assert {"test", source} <= {s["id"] for s in listing}
    for i in flagged[:3]:
        ex = served.client.get(f"/v1/examples/{source}/{i}").json()
        assert torch.equal(torch.tensor(ex["image"]), res.x_adv[i])  # the stored floats, not a PNG
        r = post(served.client, json.dumps({"images": [ex["image"]]}).encode(), "application/json")
        assert r.json()["results"][0]["label"] is None and r.json()["results"][0]["accepted"] is False
    whole = post(served.client, npy(res.x_adv.numpy()), "application/x-npy").json()["results"]
    assert [a["label"] for a in whole] == expected(served.det, res.x_adv)


def test_info_health_metrics_docs_and_page(served):
    c = served.client
    info = c.get("/v1/info").json()
    assert info["objective"] == "rce" and info["dataset"] == "synthetic" and info["metric"] == "kd"
    assert info["threshold"] == served.det.threshold and info["fpr"] == 0.05 and info["input_shape"] == [1, 12, 12]
    assert 0 < info["clean_accuracy"] <= 1 and set(info["thresholds"]) == set(METRICS)
    assert info["limits"]["max_batch"] == 64 and info["limits"]["max_body_bytes"] == MAX_BODY
    assert c.get("/healthz").json()["status"] == "ok"
    assert metric_value(c.get("/metrics").text, "rce_images_total", decision="not_sure") > 0
    assert c.get("/docs").status_code == 200 and "/v1/predict" in c.get("/openapi.json").json()["paths"]
    page = c.get("/")
    assert page.status_code == 200 and "/static/app.js" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert c.get("/static/app.js").headers["content-type"].startswith("text/javascript")
    assert c.post("/v1/predict", content=png(np.zeros((12, 12), np.uint8)),
                  headers={"Content-Type": "image/png"}, params={"include_image": "true"}).json()[
        "results"][0]["image"] == np.zeros((1, 12, 12)).tolist()


def test_metrics_parse_and_count_the_requests(served, synthetic):
    c = served.client
    ok = (("method", "POST"), ("route", "/v1/predict"), ("status", "200"))
    refused = (("method", "POST"), ("route", "/v1/predict"), ("status", "415"))
    before = parse_metrics(c.get("/metrics").text)
    x = synthetic.test_images()[100:105]
    answers = [post(c, npy(b.numpy()), "application/x-npy") for b in (x, x[:2])]
    assert all(a.status_code == 200 for a in answers)
    labels = [r["label"] for a in answers for r in a.json()["results"]]
    assert post(c, b"x", "text/plain").status_code == 415
    r = c.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain; version=0.0.4")
    after = parse_metrics(r.text)
    assert {f.name for f in text_string_to_metric_families(r.text)} == {*FAMILIES, "rce_inflight_requests", "rce_body_memory_bytes"}

    def grew(name, key=()):
        return after[name].get(key, 0) - before.get(name, {}).get(key, 0)

    assert grew("rce_http_requests_total", ok) == 2 and grew("rce_http_requests_total", refused) == 1
    assert grew("rce_requests_refused_total", (("reason", "unsupported_media_type"),)) == 1
    assert grew("rce_http_request_duration_seconds_count", (("route", "/v1/predict"),)) == 3
    not_sure = sum(v is None for v in labels)
    assert grew("rce_images_total", (("decision", "not_sure"),)) == not_sure
    assert grew("rce_images_total", (("decision", "label"),)) == 7 - not_sure
    assert 1 <= grew("rce_model_batches_total") <= 2 and grew("rce_model_batch_images_sum") == 7
    assert grew("rce_http_requests_total", (("method", "GET"), ("route", "/metrics"), ("status", "200"))) == 1
    assert after["rce_queue_images"][()] == 0 and after["process_resident_memory_bytes"][()] > 0


def http_malformed(rng: random.Random) -> list[tuple[str, str, str, dict, bytes | None, int]]:
    """(kind, method, path, headers, body, status) of requests that are wrong at the HTTP level."""
    over = b"\0" * (MAX_BODY + rng.randrange(1, 4096))
    return [
        ("wrong method", "GET", "/v1/predict", {}, None, 405),
        ("unknown route", "POST", f"/v1/{rng.randrange(10 ** 6)}", {}, b"x", 404),
        ("bad query", "POST", "/v1/predict?include_image=maybe", {"Content-Type": "image/png"}, b"x", 422),
        ("example out of range", "GET", f"/v1/examples/test/{10 ** 6 + rng.randrange(10)}", {}, None, 404),
        ("unknown example source", "GET", "/v1/examples/nope/0", {}, None, 404),
        ("negative example", "GET", "/v1/examples/test/-1", {}, None, 404),
        ("chunked over the limit", "POST", "/v1/predict", {"Content-Type": "application/x-npy"},
         iter([over[: len(over) // 2], over[len(over) // 2 :]]), 413),
    ]


def test_a_thousand_malformed_requests_get_4xx_and_leave_the_server_healthy(served, synthetic):
    rng = random.Random(0)
    c, server = served.client, served.server

    def send(case):
        kind, method, path, headers, body, status = case
        try:
            r = c.request(method, path, headers=headers, content=body)
        except httpx.HTTPError as e:  # the server may close after refusing a body it will not read
            return kind, status, None, str(e)
        return kind, status, r.status_code, r.text

    def round_of(n_rounds: int) -> list:
        cases = []
        for _ in range(n_rounds):
            cases += [(k, "POST", "/v1/predict", {"Content-Type": t} if t else {}, b, s) for k, t, b, s in
                      malformed(rng, size=12, max_batch=64, max_body=MAX_BODY)]
            cases += http_malformed(rng)
        rng.shuffle(cases)
        with ThreadPoolExecutor(4) as pool:
            return list(pool.map(send, cases))

    round_of(6)  # warm-up: allocator pools and caches reach their steady size
    rss_before = server.rss()
    results = round_of(32)
    rss_after = server.rss()
    assert len(results) >= 1000
    for kind, want, got, text in results:
        if got is None:
            assert want == 413, f"{kind}: connection error {text}"
            continue
        assert got == want, f"{kind}: {got} {text}"
        body = json.loads(text)
        assert body["status"] == got and body["error"] and "\n" not in text.strip()
    assert sum(got is None for _, _, got, _ in results) <= len(results) // 20
    assert server.alive() and c.get("/healthz").status_code == 200
    x = synthetic.test_images()[:8]
    r = post(c, npy(x.numpy()), "application/x-npy")
    assert [a["label"] for a in r.json()["results"]] == expected(served.det, x)
    if rss_before is not None:
        assert rss_after - rss_before < 40 * (1 << 20), f"RSS grew {(rss_after - rss_before) / 2**20:.1f} MiB"
    text = c.get("/metrics").text
    assert metric_value(text, "rce_requests_refused_total", reason="too_large") > 0
    assert 'status="500"' not in text
