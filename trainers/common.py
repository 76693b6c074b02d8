"""What every Ray job shares: connecting to (or starting) a cluster, and run-level settings."""

from __future__ import annotations

import json
import logging
import os
import signal
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from coldstart.config import RayOptions
from coldstart.ports import free_port
from trainers.prometheus import record_epoch

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What every training driver returns: the artifact, the epochs and the one kept."""

    out: Path
    history: list[dict]
    best: dict
    seconds: float
    restarts: int = 0


_CONNECT = threading.Lock()  # pipeline stages that run at once start their jobs from threads of one driver


def ensure_ray(options: RayOptions | None = None):
    """Join the configured cluster, or start a local one; reuse a connection that exists."""
    import ray  # ray: heavy, only the Ray path loads it

    with _CONNECT:
        if ray.is_initialized():
            return ray
        options = options or RayOptions()
        address = options.join_address()
        if address:
            ray.init(address=address)
        else:
            ray.init(**local_cluster(options.local_cpus or max(4, os.cpu_count() or 1)), log_to_driver=True)
        log.info("ray resources: %s", ray.cluster_resources())
    return ray


def local_cluster(cpus: int) -> dict:
    """`ray.init` arguments of a local cluster whose own processes can find its State API.

    Ray Train frees the placement group of a run whose driver died (a trial Tune
    stopped) through the State API, which it finds through the dashboard. With
    more than one cluster on a machine "auto" is ambiguous, so the dashboard gets
    a known port and every process of the job is told its address. The
    dashboard listens on localhost only.
    """
    port = free_port(host="127.0.0.1")
    return {"num_cpus": cpus, "include_dashboard": True, "dashboard_host": "127.0.0.1", "dashboard_port": port,
            "runtime_env": {"env_vars": {"RAY_API_SERVER_ADDRESS": f"http://127.0.0.1:{port}"}}}


# Ray Train's controller takes a worker's report from its one-slot queue once per health check (2 s by
# default), so a worker whose epoch is shorter waits for it at its next report: 20 empty reports took 63 s
# against 22 s at 0.1 s, a 20-epoch backbone 65 s against 28 s (the retired benchmarks/train_overhead.py: RESULTS.md). Polling every
# 0.1 s costs about 3% of the machine's CPU on 2 cores. The driver passes it on to the controller.
REPORT_POLL_ENV = ("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.1")


def torch_trainer(loop, loop_config: dict, scale, *, name: str, out, datasets: dict | None = None,
                  score: str | None = None, callbacks: list | None = None):
    """A TorchTrainer with our run settings: storage, failure handling, checkpoint retention, report polling
    (`REPORT_POLL_ENV`, unless the environment sets it).

    `callbacks` are Ray Train callbacks, e.g. Tune's `TuneReportCallback` when a trial runs this job.
    """
    os.environ.setdefault(*REPORT_POLL_ENV)

    # ray: heavy, only the Ray path loads it
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    storage = scale.runs_root(Path(out).resolve().parent)
    checkpoints = CheckpointConfig(num_to_keep=2, checkpoint_score_attribute=score,
                                   checkpoint_score_order="max") if score else CheckpointConfig(num_to_keep=2)
    return TorchTrainer(
        loop, train_loop_config=loop_config,
        scaling_config=ScalingConfig(num_workers=scale.num_workers, use_gpu=scale.use_gpu,
                                     resources_per_worker={"CPU": scale.threads_per_worker}),
        run_config=RunConfig(name=name, storage_path=str(storage),
                             failure_config=FailureConfig(max_failures=scale.max_failures),
                             checkpoint_config=checkpoints, callbacks=callbacks or []),
        datasets=datasets or {})


def report_epoch(metrics: dict, write_checkpoint) -> None:
    """Every rank reports; rank 0 also writes a checkpoint through `write_checkpoint(folder)`, unless None."""
    import ray.train  # ray: heavy, only the Ray path loads it

    if ray.train.get_context().get_world_rank() == 0:
        record_epoch(metrics)
        if write_checkpoint is None:
            ray.train.report(metrics)
            return
        with tempfile.TemporaryDirectory() as tmp:
            write_checkpoint(Path(tmp))
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))
    else:
        ray.train.report(metrics)


def fault_drill(scale, epoch: int, resumed: bool) -> None:
    """Kill this worker's process outright (as an OOM or a lost node would) when the drill says so."""
    import ray.train  # ray: heavy, only the Ray path loads it

    ctx = ray.train.get_context()
    if scale.kill_at_epoch == epoch and not resumed and ctx.get_world_rank() == ctx.get_world_size() - 1:
        _wait_for_registered_checkpoint(Path(ctx.get_storage().experiment_fs_path))
        log.warning("fault drill: killing rank %d at epoch %d", ctx.get_world_rank(), epoch)
        os.kill(os.getpid(), signal.SIGKILL)


def _wait_for_registered_checkpoint(run_folder: Path, timeout_s: float = 120.0) -> None:
    """Block until the controller has registered a checkpoint (its snapshot on storage names one).

    A worker's report reaches the controller only at its next poll; killing the group before that
    would lose the checkpoint just written and restart the drill from scratch on a loaded machine.
    """
    snapshot = run_folder / "checkpoint_manager_snapshot.json"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if json.loads(snapshot.read_text()).get("latest_checkpoint_result"):
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.2)
    log.warning("fault drill: no registered checkpoint in %s after %.0f s; killing anyway", run_folder, timeout_s)
