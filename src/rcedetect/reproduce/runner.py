"""Running a list of stages: skip the cached ones, run the rest in order, print each with a time-left estimate.

A stage is (name, cost, done, run, clear, kind): ``done()`` says whether its artifact exists, ``run()`` makes it,
``clear()`` deletes it (for ``--force``), ``cost`` is a rough work estimate in model passes and ``kind`` the sort of
work ("train", "attack fgsm", "adaptive pgd_detector", …). Seconds per cost unit differ a lot between kinds (a
training step is not an attack step), so the time left is the cost still to do of each kind times that kind's
rate (:class:`Rates`): measured in this run; else read from an earlier run in the same folder; else the package's
reference rate for the kind (``data/stage_rates.json``, measured on 2 idle CPU cores) times this machine's speed
(what the stages run so far took over what the reference rates predicted for them); else this run's overall rate.
The measured rates are kept in the output folder (``.stage-rates.json``) for the next run there.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..core.distributed import barrier, world
from ..core.errors import RceError
from ..core.io import read_json, write_json

RATES_NAME = ".stage-rates.json"
#: the reference rates shipped with the package (relative to the package folder)
REFERENCE_RATES = "data/stage_rates.json"
#: the measured seconds of every stage of the run, kept across invocations (a resumed run keeps what earlier ones
#: measured, so results.json can state what the whole run cost)
SECONDS_NAME = ".stage-seconds.json"


#: the image size the stage rates were first measured on (28×28): :func:`pass_size` of it is 1
_PIXELS = 784.0


def pass_size(tc, shape: tuple[int, int, int]) -> float:
    """The relative cost of one image pass of model ``tc`` on images of ``shape`` (C, H, W), for the time-left
    estimate: depth × pixels × (1 + C/8), a ResNet-8 on 28×28×1 = 1."""
    depth = int("".join(c for c in tc.arch if c.isdigit()) or 8)
    c, h, w = shape
    return depth / 8 * (h * w / _PIXELS) * (1 + c / 8) / (1 + 1 / 8)


def eps_text(eps) -> str:
    """An ε grid in a stage's name: its one value, else its range and size."""
    return f"{eps[0]:g}" if len(eps) == 1 else f"{eps[0]:g}…{eps[-1]:g} ({len(eps)} values)"


def merged_stage_seconds(path: Path, names: list[str], now: dict[str, float]) -> dict[str, float]:
    """{stage: seconds} of the stages ``names``: measured now, else by an earlier invocation (kept in ``path``,
    which is updated with ``now``)."""
    try:
        kept = {k: float(v) for k, v in read_json(path, "stage seconds").items()
                if isinstance(v, (int, float)) and not isinstance(v, bool)} if path.is_file() else {}
    except (RceError, AttributeError, ValueError):
        kept = {}  # a damaged side file only loses the earlier invocations' times
    kept.update(now)
    if world().main:
        write_json(path, kept)
    return {n: kept[n] for n in names if n in kept}


@dataclass
class Stage:
    name: str
    cost: float  # rough work units, for the time-left estimate
    done: Callable[[], bool]
    run: Callable[[], None]
    clear: Callable[[], None]
    kind: str = ""  # the sort of work, for the time-left estimate; default: the first word of the name

    @property
    def rate_kind(self) -> str:
        return self.kind or self.name.split(" ", 1)[0]


def reference_rates() -> dict[str, float]:
    """{kind: seconds per cost unit} on the reference machine (2 idle CPU cores), shipped with the package; empty
    if the file is missing or damaged (the estimate then learns every rate from the run itself)."""
    from importlib import resources

    try:
        obj = json.loads(resources.files("rcedetect").joinpath(REFERENCE_RATES).read_text())
    except (OSError, ValueError):
        return {}
    return _valid_rates(obj.get("rates") if isinstance(obj, dict) else None)


def _valid_rates(obj) -> dict[str, float]:
    if not isinstance(obj, dict):
        return {}
    return {k: float(v) for k, v in obj.items()
            if isinstance(k, str) and isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v < float("inf")}


class Rates:
    """Seconds per cost unit of each kind of stage: measured in this run, else ``prior`` (an earlier run's in the
    same folder), else ``reference[kind]`` × :meth:`speed`, else this run's overall rate (all measured seconds over
    all measured cost)."""

    def __init__(self, prior: dict[str, float] | None = None, reference: dict[str, float] | None = None):
        self.prior = dict(prior or {})
        self.reference = dict(reference or {})
        self.seconds: dict[str, float] = {}
        self.cost: dict[str, float] = {}

    def add(self, kind: str, cost: float, seconds: float) -> None:
        if cost > 0:
            self.seconds[kind] = self.seconds.get(kind, 0.0) + seconds
            self.cost[kind] = self.cost.get(kind, 0.0) + cost

    def speed(self) -> float:
        """This machine's seconds over the reference machine's, on the stages measured so far whose kind has a
        reference rate (1 before any)."""
        kinds = [k for k in self.cost if self.reference.get(k, 0) > 0]
        predicted = sum(self.cost[k] * self.reference[k] for k in kinds)
        return sum(self.seconds[k] for k in kinds) / predicted if predicted > 0 else 1.0

    def rate(self, kind: str) -> float:
        if kind in self.cost:
            return self.seconds[kind] / self.cost[kind]
        if kind in self.prior:
            return self.prior[kind]
        if kind in self.reference:
            return self.reference[kind] * self.speed()
        total_cost = sum(self.cost.values())
        if total_cost > 0:
            return sum(self.seconds.values()) / total_cost
        return sum(self.prior.values()) / len(self.prior) if self.prior else 0.0

    def left(self, stages: list[Stage]) -> float:
        """Estimated seconds to run ``stages``."""
        return sum(st.cost * self.rate(st.rate_kind) for st in stages)

    def measured(self) -> dict[str, float]:
        """{kind: seconds per cost unit}: the prior ones updated by this run's."""
        return {**self.prior, **{k: self.seconds[k] / self.cost[k] for k in self.cost}}

    @classmethod
    def load(cls, path: Path | None, reference: dict[str, float] | None = None) -> Rates:
        """The rates kept at ``path`` (none if it is missing or unreadable: it is only an estimate), with
        ``reference`` rates for the kinds it lacks."""
        try:
            obj = read_json(path, "stage rates") if path is not None and path.is_file() else None
        except RceError:
            obj = None
        return cls(_valid_rates(obj), reference)


def run_stages(stages: list[Stage], *, force: bool = False, echo: Callable[[str], None] = print,
               hook: Callable[[str], None] = lambda event: None, rates_file: Path | None = None) -> dict[str, float]:
    """Run every stage that is not done (all of them with ``force``); returns {stage name: seconds} of those run.
    ``rates_file``: where the measured seconds per cost unit of each kind are read from and kept."""
    t_start = time.perf_counter()
    if force and world().main:
        for st in stages:
            st.clear()
    barrier()  # under torchrun every rank sees the same artifacts, so all run the same stages
    pending = [st for st in stages if not st.done()]
    barrier()
    rates = Rates.load(rates_file, reference_rates())
    seconds = {}
    for i, st in enumerate(stages, 1):
        head = f"[{i:>2}/{len(stages)}] {st.name}"
        if st in pending:
            barrier()  # every rank has finished the stages before, so all see the same artifacts
            if st.done():  # made earlier in this run: the same artifact listed twice (a model every seed shares)
                pending.remove(st)
        if st not in pending:
            echo(f"{head}: cached")
            continue
        t0 = time.perf_counter()
        st.run()
        dt = time.perf_counter() - t0
        seconds[st.name] = round(dt, 2)
        pending.remove(st)
        rates.add(st.rate_kind, st.cost, dt)
        if rates_file is not None:
            write_json(rates_file, rates.measured())
        echo(f"{head}: {hms(dt)}; elapsed {hms(time.perf_counter() - t_start)}, about {hms(rates.left(pending))} left")
        hook(f"stage:{st.name}")
    return seconds


def cpu_threads(requested: int = 0) -> int:
    """Torch CPU threads: ``requested`` (> 0), else torch's own default (one per core).

    The count is fixed by the config, not by the machine's momentary load, so that the same preset gives the
    same numbers run after run (reductions split over another number of threads round differently). On a
    machine busy with other work, ``--set experiment.threads=1`` can be several times faster: :func:`busy_cpu_line`
    says so, and changes nothing.
    """
    return requested if requested > 0 else torch.get_num_threads()


def load_average() -> float:
    """The machine's 1-minute load average (0 where the platform has none)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return 0.0


def busy_cpu_line(device_type: str, threads: int) -> str | None:
    """A one-line hint when a CPU run with torch's default threads (``threads`` 0: one per core) starts on a machine
    whose load is above its core count; None otherwise."""
    if device_type != "cpu" or threads != 0:
        return None
    load, cores = load_average(), os.cpu_count() or 1
    if load <= cores:
        return None
    return (f"the CPU is busy (load {load:.1f} on {cores} cores): torch threads spin on a busy machine; "
            "--set experiment.threads=1 may run several times faster (numbers can differ in the last bits)")


def hms(s: float) -> str:
    s = max(0, round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else (f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s")
