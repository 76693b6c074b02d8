"""What every Ray job shares: connecting to (or starting) a cluster, and run-level settings."""

from __future__ import annotations

import logging
import os

from coldstart.config import RayOptions

log = logging.getLogger(__name__)


def ensure_ray(options: RayOptions | None = None):
    """Join the configured cluster, or start a local one; reuse a connection that exists."""
    import ray

    if ray.is_initialized():
        return ray
    options = options or RayOptions()
    address = options.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address)
    else:
        cpus = options.local_cpus or max(4, os.cpu_count() or 1)
        ray.init(num_cpus=cpus, log_to_driver=True)
    log.info("ray resources: %s", ray.cluster_resources())
    return ray
