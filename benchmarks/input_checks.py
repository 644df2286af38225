"""What the input checks of Hardening II cost: each next to the same work without the check, timed by the
folder's convention (:mod:`_timing`: warm-up, then the median of ``--repeat`` runs; "N×" = unchecked time /
checked time, so below 1× is the check's cost).

- a preset: ``resolve_config("tiny")`` (every table and key checked, the TOML reader's limits) vs the same with
  the key check switched off; the TOML and JSON readers (depth and number limits) vs ``tomllib`` / ``json`` on a
  preset and on a results.json-sized document;
- ``--images`` PNG files decoded by :func:`rcedetect.data.images.decode` (pixel limit, mode check, faithful bit
  depths) vs Pillow's ``Image.open(...).convert`` alone;
- requests per second of ``rce serve``'s ``POST /v1/predict`` (one PNG per request, ``--requests`` in a row, a
  ResNet-8 trained for a few steps on the synthetic set) with the service's guarded protocol and memory budget vs
  plain uvicorn h11 with no budget. Client and server share the machine.

    python benchmarks/input_checks.py                         # defaults: a few seconds of work
    python benchmarks/input_checks.py --images 2000 --requests 500 --repeat 5
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from _timing import median_time, ratio_line
from PIL import Image


def preset_costs(repeat: int) -> list[str]:
    import tomllib

    from rcedetect.core.textfiles import loads_json, loads_toml
    from rcedetect.reproduce import config as rconfig
    from rcedetect.training.config import PRESET_DIR

    checked, _ = median_time(lambda: rconfig.resolve_config("tiny"), repeat)
    real = rconfig.check_preset
    rconfig.check_preset = lambda raw, known: raw
    try:
        bare, _ = median_time(lambda: rconfig.resolve_config("tiny"), repeat)
    finally:
        rconfig.check_preset = real
    text = (PRESET_DIR / "paper-mnist.toml").read_text()
    ours_toml, _ = median_time(lambda: loads_toml(text, "preset"), repeat * 10)
    plain_toml, _ = median_time(lambda: tomllib.loads(text), repeat * 10)
    doc = json.dumps({"attacks": [{"model": "ce", "attack": "fgsm", "eps": i / 1000, "n_images": 1000,
                                   "detection": {"kd": {"auc": 0.9, "roc": [[j / 100, j / 100] for j in range(100)]}}}
                                  for i in range(200)]})
    ours_json, _ = median_time(lambda: loads_json(doc, "results"), repeat * 3)
    plain_json, _ = median_time(lambda: json.loads(doc), repeat * 3)
    return [
        f"resolve_config('tiny'): {1000 * checked:.1f} ms checked, {1000 * bare:.1f} ms without the key check",
        ratio_line("resolve_config with the key check", "without", bare, checked),
        ratio_line(f"loads_toml (paper-mnist.toml, {1e6 * ours_toml:.0f} µs)", "tomllib.loads", plain_toml, ours_toml),
        ratio_line(f"loads_json ({len(doc) / 1e6:.1f} MB results-like, {1000 * ours_json:.1f} ms)", "json.loads",
                   plain_json, ours_json),
    ]


def decode_costs(n: int, repeat: int, folder: Path) -> list[str]:
    from rcedetect.data.images import decode

    g = np.random.default_rng(0)
    paths = []
    for i in range(n):
        p = folder / f"{i}.png"
        Image.fromarray(g.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(p)
        paths.append(p)

    def ours():
        return [decode(p, "image") for p in paths]

    def pillow():
        out = []
        for p in paths:
            with Image.open(p) as img:
                out.append(np.asarray(img.convert("RGB"), dtype=np.uint8))
        return out

    t_ours, a = median_time(ours, repeat)
    t_pil, b = median_time(pillow, repeat)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))  # the same pixels
    return [f"decode {n} PNGs (32x32 RGB): {1e6 * t_ours / n:.0f} µs each checked, {1e6 * t_pil / n:.0f} µs Pillow alone",
            ratio_line("decode with the pixel limit and mode check", "Pillow alone", t_pil, t_ours)]


def _engine(folder: Path):
    from rcedetect.cli import build_parser
    from rcedetect.commands import fit_options
    from rcedetect.serve import engine, runs
    from rcedetect.training import fit
    from rcedetect.training.config import TrainConfig

    run = folder / "run"
    cfg = TrainConfig(dataset="synthetic", arch="resnet8", steps=4, batch_size=16, lr_boundaries=(2,),
                      lr_values=(0.05, 0.01), eval_every=4, checkpoint_every=4, device="cpu")
    fit(cfg, run, progress=False)
    args = build_parser().parse_args(["serve", str(run), "--metric", "confidence", "--quiet", "--device", "cpu"])
    return engine.load(runs.resolve(run), args.metric, fit_options(args), args.device)


def _rps(app, config_of, requests: int, body: bytes) -> float:
    import httpx
    import uvicorn

    from rcedetect.serve import server

    sock = server.bind("127.0.0.1", 0)
    srv = uvicorn.Server(config_of(app))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not srv.started:
        time.sleep(0.01)
    try:
        with httpx.Client(base_url=server.url_of(sock, "127.0.0.1"), timeout=30) as c:
            def burst():
                for _ in range(requests):
                    assert c.post("/v1/predict", content=body, headers={"Content-Type": "image/png"}).status_code == 200

            seconds, _ = median_time(burst, 3)
    finally:
        srv.should_exit = True
        thread.join(10)
        sock.close()
    return requests / seconds


def serve_costs(requests: int, folder: Path) -> list[str]:
    import uvicorn

    from rcedetect.serve.app import create_app
    from rcedetect.serve.limits import MAX_MEMORY_MB, MIB, Limits
    from rcedetect.serve.server import uvicorn_config

    eng = _engine(folder)
    buf = io.BytesIO()
    Image.fromarray(np.zeros((12, 12), np.uint8)).save(buf, format="PNG")
    guarded = _rps(create_app(eng, Limits()), lambda a: uvicorn_config(a, log_level="critical"), requests,
                   buf.getvalue())
    plain = _rps(create_app(eng, Limits(max_memory_bytes=MAX_MEMORY_MB * MIB)),
                 lambda a: uvicorn.Config(a, log_level="critical", lifespan="on", http="h11"), requests, buf.getvalue())
    return [f"POST /v1/predict, one PNG per request: {guarded:.0f} req/s guarded, {plain:.0f} req/s plain h11",
            ratio_line("predict with the guarded protocol and memory budget", "plain uvicorn h11", 1 / plain,
                       1 / guarded)]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=200, help="PNG files to decode (200)")
    p.add_argument("--requests", type=int, default=100, help="predict requests per timed burst (100)")
    p.add_argument("--repeat", type=int, default=3, help="timed runs per measurement (3)")
    p.add_argument("--skip-serve", action="store_true", help="leave out the service (no model trained)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        lines = preset_costs(args.repeat) + decode_costs(args.images, args.repeat, Path(tmp))
        if not args.skip_serve:
            lines += serve_costs(args.requests, Path(tmp))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
