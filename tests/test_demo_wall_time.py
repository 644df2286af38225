"""benchmarks/demo_wall_time.py reads the stage lines the runner prints and scores the time-left estimate: checked
on lines made by the runner's own formatter (times are never asserted)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from rcedetect.reproduce.runner import hms

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "demo_wall_time.py"


def _load():
    spec = importlib.util.spec_from_file_location("demo_wall_time", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_stage_lines_and_estimate_ratios():
    bench = _load()
    # a 600 s run of four stages; after the 2nd (elapsed 200 s) the runner said 300 s left (truth 400 s)
    plan = [(100, 450), (100, 300), (200, 250), (200, 0)]
    lines, elapsed = ["train resnet8/ce: 10%", "noise"], 0
    for i, (sec, left) in enumerate(plan, 1):
        elapsed += sec
        lines.append(f"[{i:>2}/4] stage {i} (x, ε 0.1): {hms(sec)}; elapsed {hms(elapsed)}, about {hms(left)} left")
    stages = bench.parse(lines)
    assert [s["elapsed"] for s in stages] == [100, 200, 400, 600] and stages[0]["stage"] == "stage 1 (x, ε 0.1)"
    assert bench.seconds(hms(3725)) == 3720  # hours print without seconds
    ratios = bench.estimate_ratios(stages, 600.0)
    # 1/3 of 600 s: the 2nd line (300 s said, 400 s true); 1/2 and 2/3: the 3rd (250 s said, 200 s true)
    assert ratios == {"0.33": 0.75, "0.50": 1.25, "0.67": 1.25}
