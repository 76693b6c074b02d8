"""Run the app on this machine: start (or join) Ray, bind HTTP to the configured address, and
either keep it up until interrupted or answer the smoke requests and stop; or, against a
cluster where the app already runs, move it to new artifacts without downtime (`swap`).

A replica that cannot start never keeps the command waiting: the app is deployed
without Serve's own wait (which lasts until every constructor retry has failed,
minutes), and its status is polled; the first replica that fails to start ends
the command with that replica's error, in one line.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator

import ray
from ray import serve

from coldstart.config import ConfigError
from coldstart.ports import free_port
from coldstart.serving.config import ServeConfig
from coldstart.serving.keys import WRITE, ApiKeys, closed_by_default
from coldstart.serving.routing import Variant, write_routing
from coldstart.serving.smoke import run_smoke
from coldstart.serving.stores import describe_store, open_store
from serve.app import build_app, build_chain, settled

APP_NAME = "coldstart"
SWAP_DEADLINE_S = 300.0  # for every ingress replica to build and take the new routing
DEPLOY_DEADLINE_S = 900.0  # generous: a first start may download or load a large teacher encoder
POLL_S = 0.5
FAILED = ("DEPLOY_FAILED", "UNHEALTHY")


# Serve's controller gives a new proxy 5 s to answer its readiness check, three times, then kills it, and
# serve.start fails with ActorDiedError (HAProxyManager "killed by ray.kill"). A proxy's process imports Serve
# first: on 2 cores under load (load average 10: a pipeline and a search running) that took longer, and
# `coldstart serve` failed before deploying anything. On a cluster the operator's settings stay.
PROXY_READY_CHECK = {"RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": "60"}


def proxy_variables(proxy: str) -> dict[str, str]:
    """The environment a Ray cluster needs at start-up for `proxy` (ServeConfig.proxy) in front of the app.

    Serve's controller and replicas read it when they start, so it belongs to a cluster about to start here (a
    joined cluster keeps what it was started with). For haproxy: Serve's HAProxy ingress, its fixed ports (the
    fallback proxy, the stats page, the metrics) moved to free ones so that two clusters on one machine do not
    collide, and a stopping ingress replica drained for 5 s instead of Serve's 30 (sized for a cluster's remote
    nodes; this machine's HAProxy knows within a second). Either way, `PROXY_READY_CHECK`.
    """
    if proxy == "ray":
        return {"RAY_SERVE_ENABLE_HA_PROXY": "0", **PROXY_READY_CHECK}
    if proxy != "haproxy":
        raise ConfigError(f"proxy: {proxy!r} is neither 'haproxy' nor 'ray'")
    taken: set[int] = set()  # chosen now, bound when Serve starts: from `coldstart.ports.QUIET_PORTS`
    try:
        ports = {name: str(free_port(taken)) for name in (
            "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT", "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT",
            "RAY_SERVE_HAPROXY_STATS_PORT", "RAY_SERVE_HAPROXY_METRICS_PORT")}
    except OSError as exc:
        raise ConfigError(f"proxy: {exc} for HAProxy") from exc
    return {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "5", **ports,
            **PROXY_READY_CHECK}


@contextlib.contextmanager
def proxy_environment(proxy: str) -> Iterator[None]:
    """`proxy_variables(proxy)` in this process's environment while a local Ray cluster starts inside the block
    (its processes keep them); a variable the user set wins; restored afterwards, so that processes started later
    do not inherit this cluster's ports."""
    added = {name: value for name, value in proxy_variables(proxy).items() if name not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


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
    """Poll /livez: without serve.run's wait, the proxy may learn the app's route a moment after RUNNING."""
    started = time.monotonic()
    while True:
        try:
            with urllib.request.urlopen(f"{url}/livez", timeout=5) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass  # not routed yet (404/503) or not listening yet
        if time.monotonic() - started > deadline_s:
            raise DeployFailed(f"the app is RUNNING but {url}/livez did not answer within {deadline_s:.0f} s")
        time.sleep(POLL_S)


def variants_of(cfgs: dict[str, ServeConfig], weights: dict[str, float] | None = None, *,
                front: str = APP_NAME, store=None) -> list[Variant]:
    """The named artifacts folders as variants on one store (`store`, else the first one's): each in a chain
    app named after the front, the variant and its settings, so new settings get a new app beside the old."""
    first = settled(next(iter(cfgs.values())).model_dump(mode="json"))
    store = str(store if store is not None else first.store)
    variants = []
    for name, cfg in cfgs.items():
        # no key in a dump (`ServeConfig.api_key` is excluded): the routing is a record of the store
        settings = settled({**cfg.model_dump(mode="json"), "store": store}).model_dump(mode="json")
        digest = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]
        variants.append(Variant(name=name, weight=(weights or {}).get(name, 1.0), app=f"{front}-{name}-{digest}",
                                settings=settings))
    return variants


def _chains(variants: list[Variant]) -> list:
    return [serve.RunTarget(build_chain(v.settings), name=v.app, route_prefix=None) for v in variants]


def deploy(variants: list[Variant], *, name: str = APP_NAME, route_prefix: str = "/", wait: bool = True,
           limits: dict | None = None, echo: Callable[[str], None] = print) -> None:
    """Deploy the front app `name` and a chain app per variant (`build_app` writes the routing to their store
    first, so a store that an earlier app routed keeps no stale routing). Serve's own waits are skipped: with `wait`,
    `wait_until_running` watches every app and fails fast on a replica that cannot start."""
    store = variants[0].settings["store"]
    front = build_app({"variants": [v.model_dump(mode="json") for v in variants], "store": store,
                       "limits": limits})
    serve.run_many(_chains(variants) + [serve.RunTarget(front, name=name, route_prefix=route_prefix)],
                   wait_for_ingress_deployment_creation=False, wait_for_applications_running=False)
    if wait:
        for app in [v.app for v in variants] + [name]:
            wait_until_running(app, echo=echo)


def deploy_artifacts(settings: dict, *, name: str = APP_NAME, route_prefix: str = "/", wait: bool = True) -> None:
    """Deploy the app over one artifacts folder (`settings`: ServeConfig fields): what tests and benchmarks
    start."""
    cfg = ServeConfig.model_validate(settings)
    deploy(variants_of({"main": cfg}, front=name), name=name, route_prefix=route_prefix, wait=wait,
           limits=cfg.limits(), echo=lambda _: None)


def running_routing(name: str = APP_NAME) -> dict | None:
    """One ingress replica's routing of the running app `name` ({"replica", "store", "variants", "building"}),
    None when no such app runs."""
    app = serve.status().applications.get(name)
    if app is None or app.status != "RUNNING":
        return None
    return serve.get_app_handle(name).routing.remote().result(timeout_s=60)


def chain_apps(name: str = APP_NAME) -> list[str]:
    """The chain apps the running app `name` routes to."""
    current = running_routing(name)
    return [] if current is None else [v["app"] for v in current["variants"]]


def delete(name: str = APP_NAME) -> None:
    """Delete the app `name` and the chain apps it routes to."""
    chains = chain_apps(name)
    serve.delete(name)
    for app in chains:
        serve.delete(app)


def swap(cfgs: dict[str, ServeConfig], weights: dict[str, float] | None = None, *, name: str = APP_NAME,
         deadline_s: float = SWAP_DEADLINE_S, echo: Callable[[str], None] = print) -> list[Variant]:
    """Move the running app `name` to the variants `cfgs` (name -> artifacts and options) without downtime.

    The new chain apps start beside the running ones, on the running app's store; once they run, a routing
    record names them; every ingress replica builds the new variants (their registrations made again with
    the new models) while the old ones keep answering, then switches; only when every replica has switched
    are the chain apps nobody routes to any more deleted (Serve lets their requests in flight finish)."""
    current = running_routing(name)
    if current is None:
        raise DeployFailed(f"no running app {name!r} to swap")
    for cfg in cfgs.values():
        if cfg.store is not None and str(settled(cfg.model_dump(mode="json")).store) != current["store"]:
            raise ConfigError(f"store: a swap keeps the running app's store ({describe_store(current['store'])}), "
                              f"so that its registrations move to the new artifacts; got {cfg.store}")
    variants = variants_of(cfgs, weights, front=name, store=current["store"])
    running = {v["app"] for v in current["variants"]}
    started = time.perf_counter()
    new = [v for v in variants if v.app not in running]
    if new:
        serve.run_many(_chains(new), wait_for_ingress_deployment_creation=False, wait_for_applications_running=False)
        for variant in new:
            wait_until_running(variant.app, echo=echo)
    echo(f"new chain apps running ({', '.join(v.app for v in new) or 'none new'}) in "
         f"{time.perf_counter() - started:.0f} s; routing to {', '.join(v.name for v in variants)}")
    write_routing(open_store(current["store"]), variants)
    wanted = [v.app for v in variants]
    switched: set[str] = set()
    while True:
        replicas = serve.status().applications[name].deployments["Ingress"].replica_states.get("RUNNING", 0)
        state = serve.get_app_handle(name).routing.remote().result(timeout_s=60)
        if [v["app"] for v in state["variants"]] == wanted:
            switched.add(state["replica"])
        if len(switched) >= replicas:
            break
        if time.perf_counter() - started > deadline_s:
            raise DeployFailed(f"the ingress replicas did not take the new routing within {deadline_s:.0f} s; "
                               f"both chains keep running (see `serve status`)")
        time.sleep(POLL_S)
    for app in sorted(running - set(wanted)):
        serve.delete(app)
    echo(f"swapped in {time.perf_counter() - started:.0f} s: {name} serves "
         + ", ".join(f"{v.name} ({v.settings['artifacts']})" for v in variants))
    return variants


def _stop(*_):
    raise KeyboardInterrupt  # SIGTERM shuts down as Ctrl-C does: Serve and Ray stop cleanly


def run_local(cfg: ServeConfig, *, num_cpus: int | None = None, smoke: bool = False,
              variants: dict[str, ServeConfig] | None = None, weights: dict[str, float] | None = None,
              echo: Callable[[str], None] = print) -> None:
    """Serve `cfg` (the variant "main") and `variants` (name -> config, an A/B test) until interrupted; on a
    joined cluster (RAY_ADDRESS) where the app already runs, swap it to them and return, leaving it up."""
    cfgs = {**({"main": cfg} if cfg is not None else {}), **(variants or {})}
    first = next(iter(cfgs.values()))
    address = os.environ.get("RAY_ADDRESS") or None
    joining = address not in (None, "local")  # RAY_ADDRESS=local: a cluster of our own even if others run here
    closed_by_default(first)  # before Ray starts: its processes take the keys from this environment
    started_ray = not ray.is_initialized()
    if started_ray:
        # 2 cores run 4 replicas' worth of logical CPUs: the replicas mostly wait on each other.
        with proxy_environment(first.proxy) if not joining else contextlib.nullcontext():
            via = "HAProxy" if os.environ.get("RAY_SERVE_ENABLE_HA_PROXY") == "1" else "Serve's proxy actor"
            ray.init(address=address, num_cpus=None if joining else (num_cpus or max(4, os.cpu_count() or 1)),
                     include_dashboard=None if not smoke else False, log_to_driver=not smoke)
    if joining and not smoke and APP_NAME in serve.status().applications:
        try:
            swap(cfgs, weights, echo=echo)
        finally:
            if started_ray:
                ray.shutdown()  # the app keeps running on the cluster
        return
    scratch = None
    if smoke and first.store is None:
        # The smoke's registrations are examples: keep them out of the artifacts' real store.
        scratch = tempfile.TemporaryDirectory(prefix="coldstart-smoke-")
        cfgs = {name: c.model_copy(update={"store": scratch.name}) for name, c in cfgs.items()}
    signal.signal(signal.SIGTERM, _stop)
    try:
        serve.start(http_options={"host": first.host, "port": first.port})
        started = time.perf_counter()
        # serve.run waits until RUNNING even with blocking=False, and gives up only when every constructor
        # retry has failed; deploy hands the watching to wait_until_running.
        deploy(variants_of(cfgs, weights), limits=first.limits(), echo=echo)
        url = f"http://{first.host}:{first.port}"
        local_host = "127.0.0.1" if first.host in ("0.0.0.0", "::", "") else first.host
        wait_until_answering(f"http://{local_host}:{first.port}")
        served = ", ".join(f"{name}={c.artifacts}" for name, c in cfgs.items()) if len(cfgs) > 1 else first.artifacts
        front = f", HTTP through {via}" if started_ray and not joining else ""
        echo(f"coldstart is serving {served} at {url} (ready in {time.perf_counter() - started:.0f} s{front}); "
             f"OpenAPI at {url}/docs")
        node = ray._private.worker.global_worker.node
        echo(f"Prometheus metrics: http://{node.node_ip_address}:{node.metrics_export_port}/metrics")
        if smoke:
            run_smoke(url, first.artifacts, api_key=ApiKeys.from_env().key(WRITE), echo=echo)
            return
        echo("Ctrl-C stops it. To move it to new artifacts without downtime, from another shell: "
             "RAY_ADDRESS=auto coldstart serve --artifacts NEW")
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
