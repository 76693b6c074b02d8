"""Run the app on this machine: start (or join) Ray, bind HTTP to the configured address, and
either keep it up until interrupted or answer the smoke requests and stop."""

from __future__ import annotations

import os
import signal
import tempfile
import time
from collections.abc import Callable

import ray
from ray import serve

from coldstart.serving.config import ServeConfig
from serve.app import build_app

APP_NAME = "coldstart"


def _stop(*_):
    raise KeyboardInterrupt  # SIGTERM shuts down as Ctrl-C does: Serve and Ray stop cleanly


def run_local(cfg: ServeConfig, *, num_cpus: int | None = None, smoke: bool = False,
              echo: Callable[[str], None] = print) -> None:
    address = os.environ.get("RAY_ADDRESS") or None
    joining = address not in (None, "local")  # RAY_ADDRESS=local: a cluster of our own even if others run here
    started_ray = not ray.is_initialized()
    if started_ray:
        # 2 cores run 4 replicas' worth of logical CPUs: the replicas mostly wait on each other.
        ray.init(address=address, num_cpus=None if joining else (num_cpus or max(4, os.cpu_count() or 1)),
                 include_dashboard=None if not smoke else False, log_to_driver=not smoke)
    scratch = None
    if smoke and cfg.store is None:
        # The smoke's registrations are examples: keep them out of the artifacts' real store.
        scratch = tempfile.TemporaryDirectory(prefix="coldstart-smoke-")
        cfg = cfg.model_copy(update={"store": scratch.name})
    signal.signal(signal.SIGTERM, _stop)
    try:
        serve.start(http_options={"host": cfg.host, "port": cfg.port})
        started = time.perf_counter()
        serve.run(build_app(cfg.model_dump(mode="json")), name=APP_NAME, route_prefix="/", blocking=False)
        url = f"http://{cfg.host}:{cfg.port}"
        echo(f"coldstart is serving {cfg.artifacts} at {url} (ready in {time.perf_counter() - started:.0f} s); "
             f"OpenAPI at {url}/docs")
        node = ray._private.worker.global_worker.node
        echo(f"Prometheus metrics: http://{node.node_ip_address}:{node.metrics_export_port}/metrics")
        if smoke:
            from coldstart.serving.smoke import run_smoke

            run_smoke(url, cfg.artifacts, api_key=cfg.api_key or os.environ.get("COLDSTART_API_KEY"), echo=echo)
            return
        echo("Ctrl-C stops it.")
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        echo("stopping")
    finally:
        serve.shutdown()
        if started_ray:
            ray.shutdown()
        if scratch is not None:
            scratch.cleanup()
