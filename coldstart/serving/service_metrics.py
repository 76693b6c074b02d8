"""What the request logic reports about itself; the serving layer plugs in real metrics.

The core stays free of Ray: `ServiceMetrics` records nothing, and
`serve/prometheus.py` backs the same calls with `ray.serve.prometheus`.
"""

from __future__ import annotations

STAGES = ("encode", "generate", "rank", "register")


class ServiceMetrics:
    def request(self, endpoint: str, path: str) -> None:
        """One answered request on `endpoint`, through the warm or the cold `path`."""

    def stage(self, stage: str, milliseconds: float) -> None:
        """How long one stage (encode, generate, rank, register, interaction) took for one request."""
