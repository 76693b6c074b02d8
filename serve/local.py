"""Run the app on this machine: start (or join) Ray, bind HTTP to the configured address, and
either keep it up until interrupted or answer the smoke requests and stop.

A replica that cannot start never keeps the command waiting: the app is deployed
without Serve's own wait (which lasts until every constructor retry has failed,
minutes), and its status is polled; the first replica that fails to start ends
the command with that replica's error, in one line.
"""

from __future__ import annotations

import os
import re
import signal
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable

import ray
from ray import serve

from coldstart.config import ConfigError
from coldstart.serving.config import ServeConfig
from serve.app import build_app

APP_NAME = "coldstart"
DEPLOY_DEADLINE_S = 900.0  # generous: a first start may download or load a large teacher encoder
POLL_S = 0.5
FAILED = ("DEPLOY_FAILED", "UNHEALTHY")


class DeployFailed(ConfigError):
    """The app could not start; the message names the deployment and its replica's error."""


def _error_line(message: str) -> str:
    """The exception line of a status message whose tail is a replica's traceback."""
    tail = message.split("Error:\n", 1)[-1]
    lines = [line.strip() for line in tail.splitlines() if line.strip()]
    errors = [line for line in lines if re.match(r"^[\w.]+(Error|Exception|Exit|Interrupt)\b", line)]
    line = errors[-1] if errors else (lines[-1] if lines else message.strip())
    return re.sub(r"^(?:[A-Za-z_]\w*\.)+(\w+)", r"\1", line)  # coldstart.data.schema.DataError -> DataError


def _failure(app) -> str | None:
    for name, deployment in app.deployments.items():
        # Serve retries a failed constructor; the first failure is in the message while the status still
        # says UPDATING. Artifacts that passed the preflight and still fail will fail every retry.
        if deployment.status in FAILED or "failed to start" in deployment.message:
            return f"{name} could not start: {_error_line(deployment.message)}"
    if app.status in FAILED:
        return f"the app could not start: {_error_line(app.message)}"
    return None


def wait_until_running(name: str = APP_NAME, *, deadline_s: float = DEPLOY_DEADLINE_S,
                       echo: Callable[[str], None] = print) -> None:
    """Poll `serve.status()` until the app is RUNNING; raise DeployFailed as soon as a replica cannot start."""
    started = time.monotonic()
    said: dict[str, str] = {}
    while True:
        app = serve.status().applications.get(name)
        if app is not None:
            if app.status == "RUNNING":
                return
            failure = _failure(app)
            if failure is not None:
                raise DeployFailed(f"{failure} (full traceback: `serve status`, or the replica's log under "
                                   f"the Ray session's logs/serve)")
            for deployment_name, deployment in app.deployments.items():
                # Say once why a deployment waits (e.g. replicas that cannot be scheduled on this cluster).
                first = deployment.message.strip().splitlines()[0] if deployment.message.strip() else ""
                if first and said.get(deployment_name) != first:
                    said[deployment_name] = first
                    echo(f"{deployment_name}: {first}")
        if time.monotonic() - started > deadline_s:
            states = "; ".join(f"{n} {d.status}" for n, d in app.deployments.items()) if app else "not deployed"
            raise DeployFailed(f"the app did not start within {deadline_s:.0f} s ({states})")
        time.sleep(POLL_S)


def wait_until_answering(url: str, *, deadline_s: float = 60.0) -> None:
    """Poll /healthz: without serve.run's wait, the proxy may learn the app's route a moment after RUNNING."""
    started = time.monotonic()
    while True:
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=5) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass  # not routed yet (404/503) or not listening yet
        if time.monotonic() - started > deadline_s:
            raise DeployFailed(f"the app is RUNNING but {url}/healthz did not answer within {deadline_s:.0f} s")
        time.sleep(POLL_S)


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
        # serve.run waits until RUNNING even with blocking=False, and gives up only when every constructor
        # retry has failed; run_many without its waits hands the watching to wait_until_running.
        serve.run_many([serve.RunTarget(build_app(cfg.model_dump(mode="json")), name=APP_NAME, route_prefix="/")],
                       wait_for_ingress_deployment_creation=False, wait_for_applications_running=False)
        wait_until_running(APP_NAME, echo=echo)
        url = f"http://{cfg.host}:{cfg.port}"
        local_host = "127.0.0.1" if cfg.host in ("0.0.0.0", "::", "") else cfg.host
        wait_until_answering(f"http://{local_host}:{cfg.port}")
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
