"""Hardening II, the service: bounded metric labels, a header timeout, uvicorn's own refusals as one line of JSON,
a memory budget for the bodies in progress, /v1/info without local paths unless the token is given, and image
bodies through the package's decoder (bombs 413, 16-bit PNGs scaled)."""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time
from contextlib import contextmanager

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
uvicorn = pytest.importorskip("uvicorn")
pytest.importorskip("fastapi")

from test_hardening2_data import png_claiming
from test_serve_bodies import ONLY_CHECKPOINT, png

from rcedetect.cli import build_parser
from rcedetect.commands import fit_options
from rcedetect.core.errors import ConfigError
from rcedetect.serve import engine, runs, server
from rcedetect.serve.limits import MIB, HttpError, Limits, MemoryBudget, memory_cost
from rcedetect.serve.metrics import Metrics
from rcedetect.serve.protocol import GuardedH11Protocol


@contextmanager
def serving(app):
    """``app`` under uvicorn with the service's own settings (:func:`rcedetect.serve.server.uvicorn_config`)."""
    sock = server.bind("127.0.0.1", 0)
    srv = uvicorn.Server(server.uvicorn_config(app, log_level="critical"))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        yield sock.getsockname()[1]
    finally:
        srv.should_exit = True
        thread.join(10)
        sock.close()


def raw(port: int, data: bytes, pause: float = 0.0, chunk: int = 0) -> bytes:
    """Send ``data`` on a fresh connection (``chunk`` bytes at a time, ``pause`` s apart) and read the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        try:
            pieces = [data[i:i + chunk] for i in range(0, len(data), chunk)] if chunk else [data]
            for piece in pieces:
                s.sendall(piece)
                if pause:
                    time.sleep(pause)
        except OSError:
            pass  # the server closed the connection before the client finished: read what it said
        out = b""
        while True:
            try:
                got = s.recv(65536)
            except OSError:
                break
            if not got:
                break
            out += got
    return out


def json_refusal(answer: bytes) -> tuple[int, dict]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split()[1])
    assert b"application/json" in head.lower() and body.count(b"\n") == 0
    return status, json.loads(body)


@pytest.fixture(scope="module")
def tiny_engine(trained_runs, tmp_path_factory):
    run = tmp_path_factory.mktemp("hardening-serve") / "run"
    shutil.copytree(trained_runs["rce"], run, ignore=ONLY_CHECKPOINT)
    args = build_parser().parse_args(["serve", str(run), "--metric", "confidence", "--quiet", "--device", "cpu"])
    return engine.load(runs.resolve(run), args.metric, fit_options(args), args.device)


@pytest.fixture(scope="module")
def served(tiny_engine):
    from rcedetect.serve.app import create_app

    app = create_app(tiny_engine, Limits(max_body_bytes=MIB, max_memory_bytes=4 * MIB).check())
    with serving(app) as port:
        yield port, app


# -- metrics ----------------------------------------------------------------------------------------------
def test_made_up_methods_share_one_label():
    m = Metrics()
    for i in range(3000):
        m.request("other", f"BREW{i}", 405, 0.01)
    m.request("/v1/predict", "POST", 200, 0.01)
    text = m.render().decode()
    series = [line for line in text.splitlines() if line.startswith("rce_http_requests_total{")]
    assert len(series) == 2 and any('method="other"' in s and "3000.0" in s for s in series)


def test_made_up_methods_and_paths_through_the_server(served):
    port, _ = served
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
        for i in range(20):
            r = c.request(f"BREW{i}", f"/made/up/{i}")
            assert r.status_code in (404, 405) and r.json()["status"] == r.status_code
        text = c.get("/metrics").text
    assert "BREW" not in text and "/made/up" not in text and 'method="other"' in text


# -- uvicorn's own refusals and the header timeout ----------------------------------------------------------
REFUSALS = {
    "garbage request line": b"\x16\x03\x01 not http at all\r\n\r\n",
    "bad Content-Length": b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n",
    "two Content-Lengths": b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    "a 200 KB header": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n",
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_uvicorns_refusals_are_one_line_of_json(served, case):
    status, body = json_refusal(raw(served[0], REFUSALS[case]))
    assert status == 400 and body["status"] == 400 and body["error"]


def test_headers_trickled_are_cut_off_with_408(served, monkeypatch):
    monkeypatch.setattr(GuardedH11Protocol, "header_timeout_s", 0.3)
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 40 + b"\r\n\r\n"
    status, body = json_refusal(raw(served[0], request, pause=0.05, chunk=2))
    assert status == 408 and "headers" in body["error"]
    with httpx.Client(base_url=f"http://127.0.0.1:{served[0]}", timeout=10) as c:  # a prompt client is served
        assert c.get("/healthz").status_code == 200


# -- memory ---------------------------------------------------------------------------------------------
def test_the_memory_budget_refuses_when_full_and_when_one_body_could_never_fit():
    budget = MemoryBudget(100)
    held = budget.reserve(60)
    with pytest.raises(HttpError) as e:
        budget.reserve(50)
    assert e.value.status == 429 and e.value.headers["Retry-After"]
    with pytest.raises(HttpError) as e:
        budget.reserve(101)
    assert e.value.status == 413
    budget.release(held)
    assert budget.reserve(100) == 100
    assert memory_cost("application/json", 10) > memory_cost("application/x-npy", 10) >= 10


def test_a_json_body_that_would_not_fit_in_the_memory_budget_is_413(served):
    port, _ = served
    body = json.dumps([[[0.5] * 12] * 12] * 1).encode()
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
        ok = c.post("/v1/predict", content=body, headers={"Content-Type": "application/json"})
        assert ok.status_code == 200
        # 1 MiB of declared JSON may take 8 MiB to decode: more than this server's 4 MiB
        big = c.post("/v1/predict", content=b" " * (MIB - 10) + b"[]",
                     headers={"Content-Type": "application/json"})
        assert big.status_code == 413 and "memory" in big.json()["error"]


def test_limits_refuse_absurd_sizes():
    with pytest.raises(ConfigError, match="max-body-mb"):
        Limits(max_body_bytes=10**300).check()
    with pytest.raises(ConfigError, match="max-memory"):
        Limits(max_memory_bytes=0).check()
    assert Limits().check().public()["max_memory_bytes"] == 1024 * MIB


# -- /v1/info ---------------------------------------------------------------------------------------------
def test_info_shows_the_run_folder_only_to_token_holders(tiny_engine):
    from fastapi.testclient import TestClient

    from rcedetect.serve.app import create_app

    open_info = TestClient(create_app(tiny_engine, Limits())).get("/v1/info").json()
    assert "run_dir" not in open_info
    assert not any(isinstance(v, str) and v.startswith("/") for v in open_info.values())
    with TestClient(create_app(tiny_engine, Limits(), token="s3cret-token-value")) as c:
        assert c.get("/v1/info").status_code == 401
        shown = c.get("/v1/info", headers={"Authorization": "Bearer s3cret-token-value"}).json()
    assert shown["run_dir"] == str(tiny_engine.run.model_dir)


# -- image bodies ------------------------------------------------------------------------------------------
def test_image_bodies_go_through_the_package_decoder(served):
    port, _ = served
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
        bomb = c.post("/v1/predict", content=png_claiming(30_000, 30_000), headers={"Content-Type": "image/png"})
        assert bomb.status_code == 413 and "bomb" in bomb.json()["error"]
        wide = png(np.full((12, 12), 65535, np.uint16))
        r = c.post("/v1/predict?include_image=true", content=wide, headers={"Content-Type": "image/png"})
        assert r.status_code == 200
        assert np.allclose(np.array(r.json()["results"][0]["image"]), 1.0)  # white stays white, not clipped
