"""The stage runner's time-left estimate (measured seconds per cost unit of each kind of stage, kept in the output
folder for the next run) and the busy-CPU hint."""

from __future__ import annotations

import json

import pytest

from rcedetect.reproduce import runner
from rcedetect.reproduce.runner import Rates, Stage, busy_cpu_line, run_stages


class FakeTime:
    """Stands in for the ``time`` module of the runner: a clock that only the fake stages move."""

    def __init__(self):
        self.now = 1000.0

    def perf_counter(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> FakeTime:
    """A fake clock; and no shipped reference rates, so the fake stages' estimates are learnt from the run."""
    fake = FakeTime()
    monkeypatch.setattr(runner, "time", fake)
    monkeypatch.setattr(runner, "reference_rates", dict)
    return fake


def fake_stages(clock: FakeTime, spec: list[tuple[str, float]], rate: dict[str, float]) -> list[Stage]:
    """Stages (kind, cost) that take exactly ``rate[kind]`` seconds per cost unit on the fake clock."""
    def run(kind, cost):
        clock.now += rate[kind] * cost

    return [Stage(f"{kind} {i}", cost, lambda: False, lambda k=kind, c=cost: run(k, c), lambda: None, kind)
            for i, (kind, cost) in enumerate(spec)]


def seconds_left(line: str) -> str:
    return line.split("about ")[1].removesuffix(" left")


RATE = {"train": 1.0, "attack": 50.0}  # seconds per cost unit: two kinds 50x apart


def test_estimate_is_exact_once_every_kind_was_measured(clock, tmp_path):
    spec = [("train", 2), ("attack", 1), ("train", 3), ("attack", 2)]
    lines: list[str] = []
    seconds = run_stages(fake_stages(clock, spec, RATE), echo=lines.append, rates_file=tmp_path / "rates.json")
    assert list(seconds.values()) == [2.0, 50.0, 3.0, 100.0]
    # after one stage of each kind: 3 train units at 1 s + 2 attack units at 50 s = 103 s, exactly
    true_left = 3 * 1.0 + 2 * 50.0
    assert seconds_left(lines[1]) == runner.hms(true_left) == "1m43s"
    # the old estimate (seconds so far per cost unit so far, times the cost left) would say 87 s
    old_left = (3 + 2) * (2.0 + 50.0) / (2 + 1)
    assert runner.hms(old_left) != runner.hms(true_left) and abs(old_left - true_left) > 15
    assert seconds_left(lines[2]) == runner.hms(2 * 50.0) and seconds_left(lines[3]) == "0s"
    # before any attack was measured, attacks are estimated at the overall rate measured so far
    assert seconds_left(lines[0]) == runner.hms(1 + 3 + 2)
    assert "elapsed 52s" in lines[1]
    assert json.loads((tmp_path / "rates.json").read_text()) == RATE


def test_a_later_run_in_the_same_folder_starts_from_the_measured_rates(clock, tmp_path):
    rates_file = tmp_path / "rates.json"
    run_stages(fake_stages(clock, [("train", 1), ("attack", 1)], RATE), echo=lambda s: None, rates_file=rates_file)
    lines: list[str] = []
    rate = {**RATE, "t-SNE": 7.0}
    spec = [("train", 4), ("attack", 2), ("t-SNE", 1), ("train", 1)]
    run_stages(fake_stages(clock, spec, rate), echo=lines.append, rates_file=rates_file)
    # after the first stage, the attacks not yet run in this run are estimated at the rate kept from the last one;
    # t-SNE, never measured, at this run's overall rate (1 s per unit so far)
    assert seconds_left(lines[0]) == runner.hms(2 * 50.0 + 1 * 1.0 + 1 * 1.0)
    assert json.loads(rates_file.read_text()) == rate
    # a fresh folder has no rates: the same first stage would estimate everything at 1 s per unit
    fresh: list[str] = []
    run_stages(fake_stages(clock, spec, rate), echo=fresh.append, rates_file=tmp_path / "fresh.json")
    assert seconds_left(fresh[0]) == runner.hms(2 + 1 + 1)


def test_unreadable_rates_are_ignored_and_cached_stages_cost_nothing(clock, tmp_path):
    rates_file = tmp_path / "rates.json"
    rates_file.write_text('{"train": ')
    assert Rates.load(rates_file).measured() == {}
    rates_file.write_text('{"train": 2.0, "attack": "fast", "bad": -1}')
    assert Rates.load(rates_file).measured() == {"train": 2.0}
    stages = fake_stages(clock, [("train", 1), ("attack", 1), ("train", 5)], RATE)
    stages[1].done = lambda: True
    lines: list[str] = []
    run_stages(stages, echo=lines.append, rates_file=rates_file)
    assert lines[1].endswith(": cached") and seconds_left(lines[0]) == "5s"


def test_stage_kind_defaults_to_the_first_word_of_its_name():
    assert Stage("t-SNE ce", 1.0, lambda: True, lambda: None, lambda: None).rate_kind == "t-SNE"
    assert Stage("sanity checks on ce", 1.0, lambda: True, lambda: None, lambda: None, "sanity").rate_kind == "sanity"


def test_every_stage_of_the_tiny_recipe_has_a_kind(tmp_path):
    from rcedetect.reproduce import plan, preset_config
    from rcedetect.reproduce.inputs import Inputs
    from rcedetect.reproduce.layout import Layout
    from rcedetect.reproduce.recipe import stage_list

    inp = Inputs(Layout(plan(preset_config("tiny", device="cpu")), tmp_path, lambda: len(inp.dataset().x_test)))
    stages = stage_list(inp, False, lambda event: None)
    kinds = {st.kind.split(" ")[0] for st in stages}
    assert kinds == {"train", "features", "detector", "attack", "t-SNE", "adaptive", "sanity", "transfer"}
    assert all(st.name.startswith(st.kind) for st in stages)
    # an attack's rate is its own (a C&W iteration is not an FGSM pass): the kind names the attack
    assert {st.kind for st in stages if st.kind.startswith("attack")} == {f"attack {a}" for a in inp.plan.attacks}
    assert {st.kind for st in stages if st.kind.startswith("adaptive")} == {
        f"adaptive {a}" for a in inp.plan.adaptive.attacks}


def test_busy_cpu_line(monkeypatch):
    monkeypatch.setattr(runner.os, "cpu_count", lambda: 4)
    monkeypatch.setattr(runner, "load_average", lambda: 6.3)
    line = busy_cpu_line("cpu", 0)
    assert line == ("the CPU is busy (load 6.3 on 4 cores): torch threads spin on a busy machine; "
                    "--set experiment.threads=1 may run several times faster (numbers can differ in the last bits)")
    assert busy_cpu_line("cpu", 2) is None  # threads set in the config: nothing to say
    assert busy_cpu_line("cuda", 0) is None
    monkeypatch.setattr(runner, "load_average", lambda: 3.9)
    assert busy_cpu_line("cpu", 0) is None


def test_a_resumed_run_keeps_the_seconds_earlier_invocations_measured(tmp_path):
    from rcedetect.reproduce.runner import merged_stage_seconds

    path = tmp_path / ".stage-seconds.json"
    first = merged_stage_seconds(path, ["train", "attack"], {"train": 10.0})  # killed after training
    assert first == {"train": 10.0}
    second = merged_stage_seconds(path, ["train", "attack"], {"attack": 5.0})  # resumed: training cached
    assert second == {"train": 10.0, "attack": 5.0}
    forced = merged_stage_seconds(path, ["train", "attack"], {"train": 12.0, "attack": 6.0})  # --force
    assert forced == {"train": 12.0, "attack": 6.0}
    assert merged_stage_seconds(path, ["attack"], {}) == {"attack": 6.0}  # only the stages of this run
    path.write_text("{not json")
    assert merged_stage_seconds(path, ["train"], {"train": 1.0}) == {"train": 1.0}  # a damaged file loses the past


def test_unmeasured_kinds_take_the_reference_rate_times_this_machines_speed():
    """Reference: train 2 s, attack fgsm 1 s, adaptive pgd_detector 4 s per unit. This machine took 30 s for 10
    train units (3 s per unit, 1.5× the reference), so FGSM is expected at 1.5 s and pgd_detector at 6 s per unit; a
    kind measured here or in an earlier run keeps its own rate; one without a reference takes the overall rate."""
    rates = Rates(prior={"attack cw": 0.5}, reference={"train": 2.0, "attack fgsm": 1.0, "adaptive pgd_detector": 4.0,
                                                       "attack cw": 9.0})
    assert rates.speed() == 1.0 and rates.rate("attack fgsm") == 1.0  # nothing measured yet: the reference itself
    rates.add("train", 10, 30.0)
    assert rates.speed() == 1.5
    assert rates.rate("attack fgsm") == 1.5 and rates.rate("adaptive pgd_detector") == 6.0
    assert rates.rate("train") == 3.0 and rates.rate("attack cw") == 0.5
    assert rates.rate("sanity") == 3.0  # no reference: all measured seconds over all measured cost
    rates.add("sanity", 10, 10.0)  # a kind without a reference does not enter the speed
    assert rates.speed() == 1.5 and rates.rate("sanity") == 1.0


def test_the_shipped_reference_rates_cover_every_stage_kind_of_the_demo(tmp_path):
    """A fresh demo run estimates every stage from the first one on (no kind falls back to the overall rate)."""
    from rcedetect.reproduce import plan, preset_config
    from rcedetect.reproduce.inputs import Inputs
    from rcedetect.reproduce.layout import Layout
    from rcedetect.reproduce.recipe import stage_list

    reference = runner.reference_rates()
    inp = Inputs(Layout(plan(preset_config("demo", device="cpu")), tmp_path, lambda: len(inp.dataset().x_test)))
    kinds = {st.rate_kind for st in stage_list(inp, False, lambda event: None)}
    assert kinds <= set(reference), sorted(kinds - set(reference))
    assert all(v > 0 for v in reference.values())
