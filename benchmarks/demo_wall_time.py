"""The main job's wall time and how well its time-left line predicts it, over fresh runs of the demo.

Each run is ``rce reproduce --preset demo`` into a new, empty folder (nothing cached, no rates from an earlier
run), timed from start to exit. Its stage lines (``[i/n] name: 12s; elapsed 1m30s, about 6m10s left``) give, at
the first stage line past 1/3, 1/2 and 2/3 of the run's wall time, the estimate against the true time left
(wall − elapsed): ``estimate / truth`` (the goal: within 0.75…1.25 from the first third on). The budget is 10
minutes on 2 CPU cores; the script prints the wall times, their median and every estimate ratio, and writes
them with each stage's seconds to ``--out`` (JSON). Run it alone on the machine: two torch jobs on 2 cores each
run several times slower. Nothing here asserts a time.

    python benchmarks/demo_wall_time.py [--runs 3] [--out demo-wall-time.json] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LINE = re.compile(r"^\[\s*(\d+)/(\d+)\] (.*): (\S+); elapsed (\S+), about (\S+) left$")
FRACTIONS = (1 / 3, 1 / 2, 2 / 3)


def seconds(text: str) -> float:
    """``1h02m03s`` / ``4m05s`` / ``7s`` → seconds."""
    total, number = 0.0, ""
    for ch in text:
        if ch.isdigit() or ch == ".":
            number += ch
        else:
            total += float(number) * {"h": 3600, "m": 60, "s": 1}[ch]
            number = ""
    return total


def parse(lines: list[str]) -> list[dict]:
    """The stage lines of a run: name, seconds, elapsed and the estimate left after it."""
    out = []
    for line in lines:
        m = LINE.match(line.strip())
        if m:
            out.append({"stage": m.group(3), "seconds": seconds(m.group(4)), "elapsed": seconds(m.group(5)),
                        "left": seconds(m.group(6))})
    return out


def estimate_ratios(stages: list[dict], wall: float) -> dict[str, float | None]:
    """{fraction: estimate / true time left} at the first stage line past each fraction of ``wall``."""
    out = {}
    for f in FRACTIONS:
        line = next((s for s in stages if s["elapsed"] >= f * wall), None)
        truth = wall - line["elapsed"] if line else None
        out[f"{f:.2f}"] = round(line["left"] / truth, 3) if line and truth and truth > 0 else None
    return out


def one_run(folder: Path) -> dict:
    cmd = [sys.executable, "-m", "rcedetect.cli", "reproduce", "--preset", "demo", "--out", str(folder)]
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"the demo failed (exit {proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}")
    stages = parse(proc.stdout.splitlines())
    results = json.loads((folder / "results.json").read_text())
    return {"wall_seconds": round(wall, 1), "stages": stages, "estimate_over_truth": estimate_ratios(stages, wall),
            "recorded_total_seconds": results["timings"]["total_seconds"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3, help="fresh runs of the demo (default 3)")
    ap.add_argument("--out", default="demo-wall-time.json", help="where the JSON goes")
    ap.add_argument("--keep", default=None, help="keep each run's folder under this one (default: delete them)")
    args = ap.parse_args()
    runs = []
    for i in range(args.runs):
        base = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="demo-wall-"))
        folder = base / f"run{i + 1}"
        shutil.rmtree(folder, ignore_errors=True)
        r = one_run(folder)
        runs.append(r)
        ratios = ", ".join(f"{k}: {v}" for k, v in r["estimate_over_truth"].items())
        print(f"run {i + 1}: {r['wall_seconds']:.0f} s wall; estimate / truth at {ratios}", flush=True)
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    walls = [r["wall_seconds"] for r in runs]
    print(f"demo wall time: median {statistics.median(walls):.0f} s, max {max(walls):.0f} s over {len(walls)} "
          f"runs (budget 600 s)")
    Path(args.out).write_text(json.dumps({"runs": runs, "median_wall_seconds": statistics.median(walls)}, indent=1))


if __name__ == "__main__":
    main()
