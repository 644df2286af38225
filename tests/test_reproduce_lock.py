"""The output folder of ``rce reproduce``: checked writable before any work, locked for the whole run (a second run
into it waits, then finds every stage cached), the lock released when a run fails; and the busy-CPU hint at the
start of a run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import torch
from filelock import FileLock, Timeout
from test_pipeline import strip_timings

from rcedetect.cli import main
from rcedetect.core.errors import ConfigError
from rcedetect.reproduce import check_writable, output_lock, recipe, reproduce, runner
from rcedetect.reproduce.lock import LOCK_NAME

WAIT_LINE = "another rce reproduce is running in"


class Stop(Exception):
    """Raised in place of the stage loop: the run stops right after its start."""


def test_an_output_folder_that_is_a_file_or_under_one_is_refused(tmp_path, capsys):
    file = tmp_path / "taken"
    file.write_text("x")
    with pytest.raises(ConfigError, match=r"the output folder .*taken is a file"):
        check_writable(file)
    with pytest.raises(ConfigError, match=r"lies under .*taken, which is a file"):
        check_writable(file / "sub" / "out")
    # the command line: one line on stderr, exit status 2, before any work (no folder made)
    assert main(["reproduce", "--preset", "tiny", "--out", str(file / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "which is a file" in err
    assert check_writable(tmp_path / "new" / "out").is_dir()


def test_the_lock_is_reentrant_in_a_process_and_exclusive_across_holders(tmp_path):
    lines: list[str] = []
    with output_lock(tmp_path, lines.append) as path, output_lock(tmp_path, lines.append):
        assert path == tmp_path / LOCK_NAME
        with pytest.raises(Timeout):  # another holder (here another lock object on the same file) cannot take it
            FileLock(path).acquire(timeout=0)
    assert lines == []
    with FileLock(tmp_path / LOCK_NAME, timeout=0):
        pass


@pytest.mark.parametrize("threads", [0, 1])
def test_a_failed_run_releases_the_lock_and_a_busy_cpu_is_reported_first(tmp_path, monkeypatch, capsys, threads):
    def stop(*args, **kwargs):
        raise Stop

    monkeypatch.setattr(runner, "load_average", lambda: 2.0 * (os.cpu_count() or 1) + 1)
    monkeypatch.setattr(recipe, "run_stages", stop)
    lines: list[str] = []
    torch_threads = torch.get_num_threads()
    try:
        with pytest.raises(Stop):
            reproduce("tiny", tmp_path, [f"experiment.threads={threads}"], device="cpu", progress=False,
                      echo=lines.append)
    finally:
        torch.set_num_threads(torch_threads)
    assert lines == []  # notices go to stderr, not to the stage lines
    notes = capsys.readouterr().err.splitlines()
    assert [line.startswith("the CPU is busy (load ") for line in notes] == ([True] if threads == 0 else [])
    with FileLock(tmp_path / LOCK_NAME, timeout=0):  # free again although the run raised
        pass


def test_two_concurrent_runs_into_one_folder(tmp_path):
    """The second run waits for the first, says so once, then finds every stage cached and writes the same
    results. Costs about one tiny run: the second one computes nothing."""
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "rcedetect.cli", "reproduce", "--preset", "tiny", "--out", str(out),
           "--set", "experiment.threads=1", "--device", "cpu", "--quiet"]
    logs = {k: (tmp_path / f"{k}.log").open("w+") for k in ("first", "second")}
    first, second = subprocess.Popen(cmd, stdout=logs["first"], stderr=subprocess.STDOUT), None
    try:
        deadline = time.monotonic() + 180
        while not (out / LOCK_NAME).exists():  # made by the first run as it takes the lock
            assert first.poll() is None and time.monotonic() < deadline, "the first run never took the lock"
            time.sleep(0.1)
        second = subprocess.Popen(cmd, stdout=logs["second"], stderr=subprocess.STDOUT)
        assert first.wait(timeout=600) == 0
        single = json.loads((out / "results.json").read_text())  # written by the first run, uninterrupted
        assert second.wait(timeout=600) == 0
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
    text = {k: (f.seek(0), f.read())[1] for k, f in logs.items()}
    assert WAIT_LINE not in text["first"]
    waits = [line for line in text["second"].splitlines() if WAIT_LINE in line]
    assert waits == [f"{WAIT_LINE} {out} (lock {out / LOCK_NAME}); waiting for it — Ctrl-C to stop"]
    stage_lines = [line for line in text["second"].splitlines() if line.startswith("[")]
    assert stage_lines and all(line.endswith(": cached") for line in stage_lines)
    final = json.loads((out / "results.json").read_text())
    assert final["timings"]["stages_measured_now"] == 0  # the second run computed nothing
    assert final["timings"]["stage_seconds"] == single["timings"]["stage_seconds"]  # the first run's, carried over
    assert strip_timings(final) == strip_timings(single)
    assert (out / "report.html").is_file()
    rates = json.loads((out / runner.RATES_NAME).read_text())
    assert {"train", "attack fgsm", "adaptive pgd_detector"} <= set(rates) and all(v > 0 for v in rates.values())
