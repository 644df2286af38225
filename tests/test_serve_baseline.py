"""``rce serve --metric mahalanobis --token-file PATH --examples ...`` against a running server (a child process
on a free loopback port): a baseline detector answers as ``Detector.predict`` does, the token guards the API, and
exported adversarial examples (``.npz``) and attack folders given with ``--examples`` are offered to the page."""

from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import pytest
import torch

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
from test_serve_bodies import ONLY_CHECKPOINT, npy, png

from rcedetect.cli import build_parser, main
from rcedetect.commands import fit_options
from rcedetect.detectors import Detector
from rcedetect.evaluation import attack_store
from rcedetect.evaluation.adv_export import export_attack
from rcedetect.models import checkpoint
from rcedetect.serve import engine, runs
from rcedetect.serve.spawn import ServerProcess

TOKEN = "a-long-random-token-0123456789"
OPTS = ["--metric", "mahalanobis", "--fit-images", "150", "--fit-eps", "0.3", "--per-class", "100", "--quiet",
        "--threads", "1", "--device", "cpu", "--batch-window-ms", "1"]


@pytest.fixture(scope="module")
def served(trained_runs, tmp_path_factory):
    root = tmp_path_factory.mktemp("serve-baseline")
    run = root / "run"
    shutil.copytree(trained_runs["rce"], run, ignore=ONLY_CHECKPOINT)
    assert main(["attack", str(run), "--attack", "fgsm", "--eps", "0.3", "--n", "40", "--quiet", "--device", "cpu"]) == 0
    (root / "token").write_text(f"  {TOKEN}\n")
    clf = checkpoint.load(run).classifier
    folder = next((run / "attacks").iterdir())
    export_attack(folder, root / "fgsm.npz", clf)
    shutil.copytree(folder, root / "elsewhere" / folder.name)  # an attack folder outside the run
    args = build_parser().parse_args(["serve", str(run), *OPTS])
    engine.load(runs.resolve(run), args.metric, fit_options(args), args.device)  # fit and cache
    det = Detector.load(run / "detector-mahalanobis", clf)  # what the server loads
    examples = ["--examples", str(root / "fgsm.npz"), "--examples", str(root / "elsewhere" / folder.name),
                "--examples", str(folder)]  # the run's own folder: offered once
    with ServerProcess(run, *OPTS, "--token-file", str(root / "token"), *examples) as server, \
            httpx.Client(base_url=server.url, timeout=30, headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        yield SimpleNamespace(run=run, server=server, client=client, det=det, folder=folder)
    assert server.stop() == 0, "".join(server.stderr[-20:])


def labels_of(det: Detector, x: torch.Tensor) -> list:
    return [None if v < 0 else v for v in det.predict(x).tolist()]


def test_mahalanobis_answers_equal_detector_predict(served, synthetic):
    folder = next((served.run / "attacks").iterdir())
    adv, _, _ = attack_store.load_parts(folder, 40, 200)
    for x in (synthetic.test_images()[:40], adv.x_adv):
        r = served.client.post("/v1/predict", content=npy(x.numpy()), headers={"Content-Type": "application/x-npy"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["metric"] == "mahalanobis" and body["threshold"] == served.det.threshold
        assert [a["label"] for a in body["results"]] == labels_of(served.det, x)
        offline = served.det.score(x)
        for i, a in enumerate(body["results"]):
            assert set(a["scores"]) == {"kd", "non_me", "confidence", "mahalanobis"} and a["metric"] == "mahalanobis"
            assert a["scores"]["mahalanobis"] == pytest.approx(float(offline[i]), rel=1e-4, abs=1e-4)
            assert a["accepted"] == (a["scores"]["mahalanobis"] <= served.det.threshold)
    info = served.client.get("/v1/info").json()
    assert info["metric"] == "mahalanobis" and info["labels"]["mahalanobis"] == "Mahalanobis"
    assert info["metrics"] == ["kd", "non_me", "confidence", "mahalanobis"]
    one = served.client.post("/v1/predict", content=png((synthetic.x_test[0, 0]).numpy()),
                             headers={"Content-Type": "image/png"}).json()["results"][0]["label"]
    assert one == labels_of(served.det, synthetic.test_images()[:1])[0]


def test_the_token_is_required_but_for_healthz(served, synthetic):
    url = served.server.url
    body = json.dumps({"images": synthetic.test_images()[:2].tolist()}).encode()
    with httpx.Client(base_url=url, timeout=30) as bare:
        for headers in ({}, {"Authorization": "Bearer not-the-token"}):
            for method, path in (("POST", "/v1/predict"), ("GET", "/v1/info"), ("GET", "/metrics")):
                r = bare.request(method, path, headers={"Content-Type": "application/json", **headers},
                                 content=body if method == "POST" else None)
                assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
                assert r.json()["status"] == 401 and len(r.text.strip().splitlines()) == 1
        assert bare.get("/healthz").status_code == 200
        assert bare.get("/").status_code == 200  # the page's own files; what it fetches needs the token
    r = served.client.post("/v1/predict", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 200 and r.json()["count"] == 2
    assert served.client.get("/metrics").status_code == 200
    assert not any("warning" in line for line in served.server.stderr)  # loopback: no warning


def test_examples_from_an_export_and_an_attack_folder_are_offered(served):
    c = served.client
    stored, _, arrays = attack_store.load_parts(served.folder, 40, 200)
    sources = {s["id"]: s for s in c.get("/v1/examples").json()["sources"]}
    own = f"attack:{served.folder.name}"
    given = {"given:fgsm.npz", f"given:{served.folder.name}"}
    assert set(sources) == {"test", own, *given}  # the run's own folder is not repeated
    for source in given:
        entry = sources[source]
        assert entry["kind"] == "given" and entry["attack"] == "fgsm" and entry["eps"] == 0.3
        assert entry["count"] == 40 and "fgsm" in entry["title"]
        flagged = [i for i, v in enumerate(served.det.predict(stored.x_adv).tolist()) if v < 0]
        for i in [0, 39, *flagged[:2]]:
            ex = c.get(f"/v1/examples/{source}/{i}").json()
            assert torch.equal(torch.tensor(ex["image"]), stored.x_adv[i])  # the stored floats
            assert ex["true_label"] == int(arrays["y"][i]) and ex["attack_succeeded"] == bool(stored.success[i])
            assert ex["test_index"] == int(arrays["indices"][i])
            r = c.post("/v1/predict", content=json.dumps({"images": [ex["image"]]}).encode(),
                       headers={"Content-Type": "application/json"})
            assert r.json()["results"][0]["label"] == labels_of(served.det, stored.x_adv[i : i + 1])[0]
        assert c.get(f"/v1/examples/{source}/40").status_code == 404
