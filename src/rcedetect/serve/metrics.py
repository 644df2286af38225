"""Prometheus metrics through ``prometheus_client``, in a registry of their own per app (several apps in one
process never share or collide), rendered in the text format 0.0.4 without the client library's ``*_created``
series: the metrics :class:`Metrics` declares, each with its help text (requests by route, method and status,
their latency, refusals by reason (:data:`.limits.REASONS`), images answered with a label or NOT SURE, the
micro-batcher's model passes), the gauges the app reads at scrape time (images queued, requests in flight, body
memory) and ``process_resident_memory_bytes``, the server's RSS where ``/proc`` has it.
"""

from __future__ import annotations

from collections.abc import Callable

#: the HTTP methods counted by name; any other token a client sends is counted as ``other`` (a label per made-up
#: method would let clients create series without end). Routes are bounded the same way (``app.Observe``).
METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH")
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    """The counters and histograms of one app (thread-safe, as ``prometheus_client``'s metrics are)."""

    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = r = CollectorRegistry(auto_describe=True)
        self.requests = Counter("rce_http_requests_total", "HTTP requests answered, by route, method and status.",
                                ("route", "method", "status"), registry=r)
        self.latency = Histogram("rce_http_request_duration_seconds", "Time from request to response, by route.",
                                 ("route",), buckets=LATENCY_BUCKETS, registry=r)
        self.refused = Counter("rce_requests_refused_total", "Requests refused with a 4xx, by reason.", ("reason",),
                               registry=r)
        self.images = Counter("rce_images_total", "Images answered: with a label, or rejected as NOT SURE by the "
                              "detector.", ("decision",), registry=r)
        for decision in ("label", "not_sure"):
            self.images.labels(decision=decision)  # both series exist from the start, at 0
        self.batch_images = Histogram("rce_model_batch_images", "Images per model pass (micro-batch size).",
                                      buckets=BATCH_BUCKETS, registry=r)
        self.batches = Counter("rce_model_batches_total", "Model passes.", registry=r)
        self.model_seconds = Counter("rce_model_seconds_total", "Seconds spent in model passes.", registry=r)
        self.gauges: dict[str, tuple] = {}  # name: (doc, read)
        self.gauge("process_resident_memory_bytes", "Resident memory size in bytes.", resident_memory_bytes)

    def gauge(self, name: str, doc: str, read: Callable[[], float | None]) -> None:
        """A gauge whose value ``read()`` gives at each scrape (None: not reported)."""
        self.gauges[name] = (doc, read)

    def request(self, route: str, method: str, status: int, seconds: float) -> None:
        method = method if method in METHODS else "other"
        self.requests.labels(route=route, method=method, status=str(status)).inc()
        self.latency.labels(route=route).observe(seconds)

    def refuse(self, reason: str) -> None:
        self.refused.labels(reason=reason).inc()

    def decisions(self, accepted: int, not_sure: int) -> None:
        self.images.labels(decision="label").inc(accepted)
        self.images.labels(decision="not_sure").inc(not_sure)

    def batch(self, n_images: int, seconds: float) -> None:
        self.batch_images.observe(n_images)
        self.batches.inc()
        self.model_seconds.inc(max(0.0, seconds))

    def collect(self):
        """What a scrape renders: the registry's metrics without their ``*_created`` samples, then the gauges read
        from their callbacks now (a callback answering None leaves its gauge out)."""
        from prometheus_client.core import GaugeMetricFamily

        for metric in self.registry.collect():  # fresh Metric objects on every collect: safe to trim
            metric.samples = [s for s in metric.samples if not s.name.endswith("_created")]
            yield metric
        for name, (doc, read) in list(self.gauges.items()):
            if (value := read()) is not None:
                yield GaugeMetricFamily(name, doc, value=float(value))

    def render(self) -> bytes:
        """The exposition text (format 0.0.4) of every metric of this app (:meth:`collect`)."""
        from prometheus_client import generate_latest

        return generate_latest(self)


def resident_memory_bytes(pid: int | str = "self") -> int | None:
    """RSS of a process from ``/proc`` (Linux), else None."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return next((int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:")), None)
    except (OSError, ValueError, IndexError):
        return None
