"""Prometheus text-format metrics (exposition format 0.0.4), kept in memory by one small registry.

- ``rce_http_requests_total{route,method,status}``: every answered request;
- ``rce_http_request_duration_seconds{route}``: a latency histogram per route;
- ``rce_requests_refused_total{reason}``: requests answered with a 4xx, by reason (see :mod:`.limits`);
- ``rce_images_total{decision}``: images answered with a label (``label``) or rejected as NOT SURE
  (``not_sure``) by the detector;
- ``rce_model_batches_total``, ``rce_model_batch_images`` (histogram of images per model pass),
  ``rce_model_seconds_total``: the micro-batcher's model passes;
- ``rce_queue_images``, ``rce_inflight_requests``: gauges at scrape time;
- ``process_resident_memory_bytes``: the server's RSS, where ``/proc`` has it.
"""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict
from collections.abc import Sequence

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Histogram:
    def __init__(self, buckets: Sequence[float]):
        self.buckets = tuple(buckets)
        self.counts = [0] * (len(self.buckets) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value

    def lines(self, name: str, labels: str = "") -> list[str]:
        sep = "," if labels else ""
        out, total = [], 0
        for bound, count in zip([*map(_num, self.buckets), "+Inf"], self.counts):
            total += count
            out.append(f'{name}_bucket{{{labels}{sep}le="{bound}"}} {total}')
        braces = f"{{{labels}}}" if labels else ""
        out += [f"{name}_sum{braces} {_num(self.sum)}", f"{name}_count{braces} {total}"]
        return out


def _num(v: float) -> str:
    return repr(float(v)) if isinstance(v, float) else str(v)


def _labels(**kv: str) -> str:
    return ",".join(f'{k}="{_escape(v)}"' for k, v in kv.items())


def _escape(v: str) -> str:
    return str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics:
    """Counters and histograms of one server process (thread-safe)."""

    def __init__(self):
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, str, int], int] = defaultdict(int)
        self.latency: dict[str, Histogram] = {}
        self.refused: dict[str, int] = defaultdict(int)
        self.images = {"label": 0, "not_sure": 0}
        self.batches = Histogram(BATCH_BUCKETS)
        self.model_seconds = 0.0

    def request(self, route: str, method: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[(route, method, status)] += 1
            self.latency.setdefault(route, Histogram(LATENCY_BUCKETS)).observe(seconds)

    def refuse(self, reason: str) -> None:
        with self._lock:
            self.refused[reason] += 1

    def decisions(self, accepted: int, not_sure: int) -> None:
        with self._lock:
            self.images["label"] += accepted
            self.images["not_sure"] += not_sure

    def batch(self, n_images: int, seconds: float) -> None:
        with self._lock:
            self.batches.observe(n_images)
            self.model_seconds += seconds

    def render(self, gauges: dict[str, float] | None = None) -> str:
        with self._lock:
            lines = ["# HELP rce_http_requests_total HTTP requests answered, by route, method and status.",
                     "# TYPE rce_http_requests_total counter"]
            for (route, method, status), n in sorted(self.requests.items()):
                lines.append(f"rce_http_requests_total{{{_labels(route=route, method=method, status=str(status))}}} {n}")
            lines += ["# HELP rce_http_request_duration_seconds Time from request to response, by route.",
                      "# TYPE rce_http_request_duration_seconds histogram"]
            for route, h in sorted(self.latency.items()):
                lines += h.lines("rce_http_request_duration_seconds", _labels(route=route))
            lines += ["# HELP rce_requests_refused_total Requests refused with a 4xx, by reason.",
                      "# TYPE rce_requests_refused_total counter"]
            lines += [f"rce_requests_refused_total{{{_labels(reason=r)}}} {n}" for r, n in sorted(self.refused.items())]
            lines += ["# HELP rce_images_total Images answered: with a label, or rejected as NOT SURE by the detector.",
                      "# TYPE rce_images_total counter"]
            lines += [f"rce_images_total{{{_labels(decision=d)}}} {n}" for d, n in self.images.items()]
            lines += ["# HELP rce_model_batch_images Images per model pass (micro-batch size).",
                      "# TYPE rce_model_batch_images histogram", *self.batches.lines("rce_model_batch_images"),
                      "# HELP rce_model_batches_total Model passes.", "# TYPE rce_model_batches_total counter",
                      f"rce_model_batches_total {sum(self.batches.counts)}",
                      "# HELP rce_model_seconds_total Seconds spent in model passes.",
                      "# TYPE rce_model_seconds_total counter", f"rce_model_seconds_total {_num(self.model_seconds)}"]
        for name, value in (gauges or {}).items():
            lines += [f"# TYPE {name} gauge", f"{name} {_num(value)}"]
        rss = resident_memory_bytes()
        if rss is not None:
            lines += ["# HELP process_resident_memory_bytes Resident memory size in bytes.",
                      "# TYPE process_resident_memory_bytes gauge", f"process_resident_memory_bytes {rss}"]
        return "\n".join(lines) + "\n"


def resident_memory_bytes(pid: int | str = "self") -> int | None:
    """RSS of a process from ``/proc`` (Linux), else None."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None
