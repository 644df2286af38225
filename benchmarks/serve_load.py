"""Load test of ``rce serve`` on loopback: throughput and p50/p99 latency at 1, 8 and 64 concurrent clients, for
single images (one PNG per request) and batches (64 images per request, one uint8 ``.npy``).

Starts ``rce serve RUN_DIR --port 0`` in a child process (any extra server options after ``--``), sends a fixed
number of requests per setting (after a short warm-up that is not counted), stops the server and exits. The images
are the run's own test images (``GET /v1/examples/test/i``). Every answer must be a 200; the server's own count of
model passes gives the mean micro-batch. Clients and server share the machine, so on a small CPU the numbers are
those of both together.

    python benchmarks/serve_load.py runs/demo                     # the demo's main RCE model
    python benchmarks/serve_load.py runs/demo/models/rce-<hash> --json serve.json -- --batch-window-ms 2
    python benchmarks/serve_load.py runs/demo --batch-requests 0 -- --max-batch 1   # no micro-batching
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import math
import os
import platform
import re
import sys
import time

import httpx
import numpy as np
from PIL import Image

from rcedetect.serve.spawn import ServerProcess


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(q / 100 * len(s)) - 1))]


def payloads(client: httpx.Client, batch: int) -> tuple[list[bytes], bytes, int]:
    """(one PNG per test image, one .npy batch, channels) from the run's test split."""
    info = client.get("/v1/info").json()
    c, h, w = info["input_shape"]
    sources = {s["id"]: s for s in client.get("/v1/examples").json()["sources"]}
    if "test" in sources:
        n = min(batch, sources["test"]["count"])
        images = [np.asarray(client.get(f"/v1/examples/test/{i}").json()["image"]) for i in range(n)]
        u8 = np.stack([np.rint(a * 255).astype(np.uint8) for a in images])
    else:  # no dataset here: random images of the model's shape
        u8 = np.random.default_rng(0).integers(0, 256, (batch, c, h, w), dtype=np.uint8)
    u8 = np.concatenate([u8] * math.ceil(batch / len(u8)))[:batch]  # (N, C, H, W)
    pngs = []
    for a in u8:
        buf = io.BytesIO()
        Image.fromarray(a[0] if c == 1 else a.transpose(1, 2, 0)).save(buf, format="PNG")
        pngs.append(buf.getvalue())
    buf = io.BytesIO()
    np.save(buf, u8, allow_pickle=False)
    return pngs, buf.getvalue(), c


async def load(url: str, bodies: list[tuple[bytes, str]], clients: int, requests: int, warmup: int) -> dict:
    """``warmup`` uncounted requests, then ``requests`` timed ones, from ``clients`` concurrent clients, each with
    its own keep-alive connection (one httpx client each: a shared pool of 64 connections costs the client more
    CPU than the server spends)."""
    latencies: list[float] = []
    failures: dict[str, int] = {}
    pool = [httpx.AsyncClient(base_url=url, limits=httpx.Limits(max_connections=1), timeout=120)
            for _ in range(clients)]

    async def phase(n: int, record: bool) -> None:
        counter = iter(range(n))

        async def worker(client: httpx.AsyncClient):
            for i in counter:
                body, ctype = bodies[i % len(bodies)]
                t0 = time.perf_counter()
                r = await client.post("/v1/predict", content=body, headers={"Content-Type": ctype})
                dt = time.perf_counter() - t0
                if r.status_code != 200:
                    failures[str(r.status_code)] = failures.get(str(r.status_code), 0) + 1
                elif record:
                    latencies.append(dt)

        await asyncio.gather(*(worker(c) for c in pool))

    try:
        await phase(max(warmup, clients), record=False)  # every connection opened and used once
        t0 = time.perf_counter()
        await phase(requests, record=True)
        seconds = time.perf_counter() - t0
    finally:
        for c in pool:
            await c.aclose()
    return {"latencies": latencies, "seconds": seconds, "failures": failures}


def model_counts(client: httpx.Client) -> tuple[float, float]:
    text = client.get("/metrics").text
    passes = re.search(r"^rce_model_batches_total (\S+)$", text, re.MULTILINE)
    images = re.search(r"^rce_model_batch_images_sum (\S+)$", text, re.MULTILINE)
    return float(passes[1]) if passes else 0.0, float(images[1]) if images else 0.0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", help="a run folder or a rce reproduce output (e.g. runs/demo)")
    p.add_argument("--clients", default="1,8,64", help="concurrency levels (default 1,8,64)")
    p.add_argument("--single-requests", type=int, default=600, help="requests per level, single images (600)")
    p.add_argument("--batch-requests", type=int, default=128, help="requests per level, batches (128)")
    p.add_argument("--batch", type=int, default=64, help="images per batch request (64)")
    p.add_argument("--warmup", type=int, default=16, help="uncounted requests before each setting (16)")
    p.add_argument("--json", help="write the results here")
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    args, extra = p.parse_args(argv[:split]), argv[split + 1 :]  # after --: options of rce serve
    levels = [int(v) for v in args.clients.split(",")]
    print(f"starting rce serve {args.run_dir} {' '.join(extra)} ...", flush=True)
    rows = []
    with ServerProcess(args.run_dir, "--quiet", *extra) as server, httpx.Client(base_url=server.url) as client:
        info = client.get("/v1/info").json()
        pngs, batch_npy, _ = payloads(client, args.batch)
        modes = [("single", [(b, "image/png") for b in pngs], 1, args.single_requests),
                 (f"batch of {args.batch}", [(batch_npy, "application/x-npy")], args.batch, args.batch_requests)]
        for mode, bodies, per_request, n in modes:
            for clients in levels if n > 0 else ():
                passes0, images0 = model_counts(client)
                out = asyncio.run(load(server.url, bodies, clients, n, args.warmup))
                passes1, images1 = model_counts(client)
                lat = out["latencies"]
                row = {"mode": mode, "clients": clients, "requests": len(lat), "images_per_request": per_request,
                       "seconds": out["seconds"], "requests_per_s": len(lat) / out["seconds"],
                       "images_per_s": len(lat) * per_request / out["seconds"],
                       "p50_ms": 1000 * percentile(lat, 50), "p99_ms": 1000 * percentile(lat, 99),
                       "mean_images_per_model_pass": (images1 - images0) / max(1.0, passes1 - passes0),
                       "failures": out["failures"]}
                rows.append(row)
                print(f"{mode:>12} x{clients:<3} {row['requests_per_s']:8.1f} req/s {row['images_per_s']:8.1f} img/s  "
                      f"p50 {row['p50_ms']:7.1f} ms  p99 {row['p99_ms']:7.1f} ms  "
                      f"{row['mean_images_per_model_pass']:6.1f} img/pass  failures {out['failures'] or 0}",
                      flush=True)
        rss = server.rss()
    print("\n| requests | clients | requests/s | images/s | p50 (ms) | p99 (ms) | images per model pass |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['mode']} | {r['clients']} | {r['requests_per_s']:,.0f} | {r['images_per_s']:,.0f} | "
              f"{r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['mean_images_per_model_pass']:.1f} |")
    meta = {"run": info["model"], "arch": info["arch"], "objective": info["objective"], "metric": info["metric"],
            "device": info["device"], "server_args": extra, "cpu_count": os.cpu_count(),
            "platform": platform.platform(), "python": sys.version.split()[0],
            "server_rss_mib": rss / 2**20 if rss else None}
    print(f"\n{meta}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=1)
    return 0 if all(not r["failures"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
