"""``rce serve`` in a child process, for tests and the load benchmark: start it on a free loopback port, wait
until it answers, measure its memory, stop it.

    with ServerProcess("runs/demo", "--quiet") as server:
        httpx.get(server.url + "/healthz")
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from .metrics import resident_memory_bytes

URL = re.compile(r"(http://\S+?):(\d+)/")


class ServerProcess:
    def __init__(self, run_dir: str | Path, *args: str, startup_timeout: float = 300.0, env: dict | None = None):
        self.cmd = [sys.executable, "-m", "rcedetect.cli", "serve", str(run_dir), "--host", "127.0.0.1",
                    "--port", "0", *args]
        self.startup_timeout = startup_timeout
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc: subprocess.Popen | None = None
        self.url = ""
        self.stdout: list[str] = []
        self.stderr: list[str] = []

    def start(self) -> ServerProcess:
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=self.env)
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._pump, args=(self.proc.stdout, self.stdout, lines), daemon=True).start()
        threading.Thread(target=self._pump, args=(self.proc.stderr, self.stderr, None), daemon=True).start()
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=0.2)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            m = URL.search(line or "")
            if m:
                self.url = f"{m[1]}:{m[2]}"
                return self
        self.stop()
        raise RuntimeError(f"rce serve did not start (exit {self.proc.returncode}): "
                           f"{''.join(self.stderr[-20:]).strip() or 'no output'}")

    @staticmethod
    def _pump(stream, keep: list[str], lines: queue.Queue | None) -> None:
        for line in stream:
            keep.append(line)
            del keep[:-500]
            if lines is not None:
                lines.put(line)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def rss(self) -> int | None:
        """The server's resident memory in bytes (Linux), else None."""
        return resident_memory_bytes(self.pid)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # Ctrl-C: a graceful shutdown, exit status 0
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
