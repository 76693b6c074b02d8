"""The service's metrics through `ray.serve.metrics`: on the Ray dashboard and the Prometheus endpoint.

Names and tags are a contract (a Grafana dashboard and a scrape test read them):
coldstart_requests_total{endpoint, path}, coldstart_stage_latency_ms{stage},
coldstart_index_size.
"""

from __future__ import annotations

from ray.serve import metrics

from coldstart.serving.metrics import ServiceMetrics

LATENCY_BOUNDARIES_MS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000]


class RayServeMetrics(ServiceMetrics):
    """Create inside a replica: ray metrics register with the process that makes them."""

    def __init__(self):
        self.requests = metrics.Counter("coldstart_requests_total", description="Answered requests.",
                                        tag_keys=("endpoint", "path"))
        self.latency = metrics.Histogram("coldstart_stage_latency_ms", description="Stage latency per request (ms).",
                                         boundaries=LATENCY_BOUNDARIES_MS, tag_keys=("stage",))

    def request(self, endpoint: str, path: str) -> None:
        self.requests.inc(tags={"endpoint": endpoint, "path": path})

    def stage(self, stage: str, milliseconds: float) -> None:
        self.latency.observe(milliseconds, tags={"stage": stage})


def index_size_gauge() -> metrics.Gauge:
    return metrics.Gauge("coldstart_index_size", description="Items in the ranker's faiss index.")
