"""``rce serve`` in a child process, for tests and the load benchmark: start it on a free loopback port, wait
until it answers, measure its memory, stop it.

    with ServerProcess("runs/demo", "--quiet") as server:
        httpx.get(server.url + "/healthz")
"""

from __future__ import annotations

import os
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
        self.stdout: list[str] = []  # the last 500 lines of each
        self.stderr: list[str] = []

    def start(self) -> ServerProcess:
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=self.env)
        pumps = [threading.Thread(target=self._pump, args=pipe, daemon=True)
                 for pipe in ((self.proc.stdout, self.stdout), (self.proc.stderr, self.stderr))]
        for pump in pumps:
            pump.start()
        deadline = time.monotonic() + self.startup_timeout
        while not self.url and self.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.url:
            return self
        self.stop()
        for pump in pumps:
            pump.join(5)  # the rest of its output, for the error
        raise RuntimeError(f"rce serve did not start (exit {self.proc.returncode}): "
                           f"{''.join(self.stderr[-20:]).strip() or 'no output'}")

    def _pump(self, stream, keep: list[str]) -> None:
        for line in stream:
            keep.append(line)
            del keep[:-500]
            if keep is self.stdout and not self.url and (m := URL.search(line)):
                self.url = f"{m[1]}:{m[2]}"  # the line that says the server accepts connections

    def rss(self) -> int | None:
        """The server's resident memory in bytes (Linux), else None."""
        return resident_memory_bytes(self.proc.pid) if self.proc is not None else None

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
