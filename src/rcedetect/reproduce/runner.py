"""Running a list of stages: skip the cached ones, run the rest in order, print each with a time-left estimate.

A stage is (name, cost, done, run, clear): ``done()`` says whether its artifact exists, ``run()`` makes it,
``clear()`` deletes it (for ``--force``), and ``cost`` is a rough work estimate in model passes. The estimate
of the time left scales the seconds spent so far by the cost still to do.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass
class Stage:
    name: str
    cost: float  # rough work units, for the time-left estimate
    done: Callable[[], bool]
    run: Callable[[], None]
    clear: Callable[[], None]


def run_stages(stages: list[Stage], *, force: bool = False, echo: Callable[[str], None] = print,
               hook: Callable[[str], None] = lambda event: None) -> dict[str, float]:
    """Run every stage that is not done (all of them with ``force``); returns {stage name: seconds} of those run."""
    t_start = time.perf_counter()
    if force:
        for st in stages:
            st.clear()
    pending = [st for st in stages if not st.done()]
    total_cost = sum(st.cost for st in pending) or 1.0
    done_cost, work_seconds, seconds = 0.0, 0.0, {}
    for i, st in enumerate(stages, 1):
        head = f"[{i:>2}/{len(stages)}] {st.name}"
        if st not in pending:
            echo(f"{head}: cached")
            continue
        t0 = time.perf_counter()
        st.run()
        dt = time.perf_counter() - t0
        seconds[st.name] = round(dt, 2)
        done_cost += st.cost
        work_seconds += dt
        left = (total_cost - done_cost) * work_seconds / max(done_cost, 1e-9)
        echo(f"{head}: {hms(dt)}; elapsed {hms(time.perf_counter() - t_start)}, about {hms(left)} left")
        hook(f"stage:{st.name}")
    return seconds


def cpu_threads(requested: int = 0) -> int:
    """Torch CPU threads: ``requested`` (> 0), else torch's own default (one per core).

    The count is fixed by the config, not by the machine's momentary load, so that the same preset gives the
    same numbers run after run (reductions split over another number of threads round differently). On a
    machine busy with other work, ``--set experiment.threads=1`` can be several times faster.
    """
    return requested if requested > 0 else torch.get_num_threads()


def hms(s: float) -> str:
    s = max(0, round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else (f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s")
