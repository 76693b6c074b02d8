"""The service's metrics through `ray.serve.prometheus`: on the Ray dashboard and the Prometheus endpoint.

Names and tags are a contract (a Grafana dashboard and a scrape test read them):
coldstart_requests_total{endpoint, path, variant}, coldstart_stage_latency_ms{stage, variant},
coldstart_index_size. `variant` is the served variant's name ("" for an app without named ones), so an A/B
test compares the two on one dashboard.
"""

from __future__ import annotations

from ray.serve import metrics

from coldstart.serving.service_metrics import ServiceMetrics

LATENCY_BOUNDARIES_MS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000]


class RayServeMetrics(ServiceMetrics):
    """Create inside a replica: ray metrics register with the process that makes them."""

    def __init__(self, variant: str | None = None):
        self.requests = metrics.Counter("coldstart_requests_total", description="Answered requests.",
                                        tag_keys=("endpoint", "path", "variant"))
        self.latency = metrics.Histogram("coldstart_stage_latency_ms", description="Stage latency per request (ms).",
                                         boundaries=LATENCY_BOUNDARIES_MS, tag_keys=("stage", "variant"))
        for metric in (self.requests, self.latency):
            metric.set_default_tags({"variant": variant or ""})

    def request(self, endpoint: str, path: str) -> None:
        self.requests.inc(tags={"endpoint": endpoint, "path": path})

    def stage(self, stage: str, milliseconds: float) -> None:
        self.latency.observe(milliseconds, tags={"stage": stage})


def index_size_gauge() -> metrics.Gauge:
    return metrics.Gauge("coldstart_index_size", description="Items in the ranker's faiss index.")
