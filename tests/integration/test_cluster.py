"""A real Ray head (`ray start --head`, token authentication on), real jobs over the Jobs API, real metrics.

The head is started with `--block` in a session of its own and every port chosen
free, so it never meets the in-process cluster of the other tests. Teardown never
runs `ray stop` (that ends every Ray process of the machine, other people's
included): it ends the processes this module started, by pid, and checks none
is left.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from coldstart import submit
from coldstart.data.schema import validate
from coldstart.data.split import make_split, save_split
from coldstart.ports import free_port
from coldstart.testing import make_tables
from trainers import prometheus as train_metrics

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _get(url: str, token: str | None = None, timeout: float = 5) -> tuple[int, str]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


class Head:
    def __init__(self, temp_dir: Path, token: str, env: dict, ports: dict, process: subprocess.Popen, log: Path):
        self.temp_dir, self.token, self.env, self.ports, self.process, self.log = (
            temp_dir, token, env, ports, process, log)

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.ports['dashboard']}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['metrics']}/metrics"


@pytest.fixture(scope="module")
def head():
    # Short: Ray's unix sockets live under the temp dir, and a socket path has at most 107 bytes.
    temp_dir = Path(tempfile.mkdtemp(prefix="cs-ray-", dir="/tmp"))
    token = secrets.token_hex(32)
    names = ["gcs", "dashboard", "client", "metrics", "agent_http", "agent_grpc", "runtime_env", "node_manager",
             "object_manager"]
    taken: set[int] = set()
    ports = {name: free_port(taken, host="127.0.0.1") for name in names}
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token, "RAY_USAGE_STATS_ENABLED": "0",
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("RAY_ADDRESS", None)
    log = temp_dir / "ray-start.log"
    cmd = [str(BIN / "ray"), "start", "--head", "--block", "--num-cpus", "4", "--num-gpus", "0",
           "--temp-dir", str(temp_dir), "--node-ip-address", "127.0.0.1", "--dashboard-host", "127.0.0.1",
           "--port", str(ports["gcs"]), "--dashboard-port", str(ports["dashboard"]),
           "--ray-client-server-port", str(ports["client"]), "--metrics-export-port", str(ports["metrics"]),
           "--dashboard-agent-listen-port", str(ports["agent_http"]),
           "--dashboard-agent-grpc-port", str(ports["agent_grpc"]),
           "--runtime-env-agent-port", str(ports["runtime_env"]),
           "--node-manager-port", str(ports["node_manager"]), "--object-manager-port", str(ports["object_manager"]),
           "--disable-usage-stats"]
    with open(log, "w") as out:
        process = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    started = Head(temp_dir, token, env, ports, process, log)
    try:
        deadline = time.monotonic() + 90
        while True:
            if process.poll() is not None:
                pytest.fail(f"ray start exited {process.returncode}:\n{log.read_text()[-3000:]}")
            try:
                status, _ = _get(f"{started.dashboard}/api/jobs/", token)
                if status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the dashboard never answered:\n{log.read_text()[-3000:]}")
            time.sleep(1)
        yield started
    finally:
        _stop(process)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _stop(process: subprocess.Popen) -> None:
    """End the head this module started and everything under it, by pid: never `ray stop`."""
    import psutil

    try:
        tree = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        tree = []
    # What `ray stop` does, limited to this tree: SIGTERM to every process, SIGKILL to what outlives the grace.
    for p in tree:
        try:
            p.send_signal(signal.SIGTERM)
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(tree, timeout=10)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(alive, timeout=10)
    assert not alive, f"processes of the test head outlived teardown: {alive}"


@pytest.fixture(scope="module")
def small_split(tmp_path_factory) -> Path:
    interactions, items, users = make_tables(n_users=30, n_items=40, per_user=10)
    ds = validate(interactions, items, users, name="tiny")
    return save_split(make_split(ds, "items", seed=0), tmp_path_factory.mktemp("cluster") / "split")


def _coldstart(*args: str, env: dict, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "coldstart"), *args], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def test_unauthenticated_requests_are_refused(head):
    status, _ = _get(f"{head.dashboard}/api/jobs/")
    assert status == 401
    status, _ = _get(f"{head.dashboard}/api/jobs/", token="not-the-token")
    assert status == 403


def test_failed_job_exits_nonzero(head, tmp_path):
    env = {k: v for k, v in head.env.items() if k != "RAY_AUTH_MODE"}
    done = _coldstart("submit", "embed", "--address", head.dashboard, "--submission-id", "test-bad", "--wait",
                      "--", "--split", str(tmp_path / "no-such-split"), "--out", str(tmp_path / "x"), env=env)
    assert done.returncode == 1
    assert "job test-bad: FAILED" in done.stdout


def test_a_training_job_submitted_over_the_jobs_api_writes_its_artifact_and_exports_metrics(head, small_split,
                                                                                             tmp_path):
    """`coldstart submit train backbone` with only the token: the job succeeds, its artifact, logs and record
    come back through the Jobs API, and report_epoch's gauges reach the head's Prometheus endpoint."""
    env = {k: v for k, v in head.env.items() if k != "RAY_AUTH_MODE"}  # the submitter knows only the token
    out = tmp_path / "backbone"
    done = _coldstart("submit", "train", "--address", head.dashboard, "--submission-id", "test-backbone",
                      "--wait", "--", "backbone", "--split", str(small_split), "--out", str(out), "--epochs", "3",
                      "--patience", "3", "--scale.num-workers", "1", "--scale.max-failures", "0",
                      "--batch-size", "256", env=env)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert "job test-backbone: SUCCEEDED" in done.stdout
    files = [f for f in out.rglob("*") if f.is_file()]
    assert any(f.suffix == ".safetensors" for f in files)
    assert {f.suffix for f in files} <= {".safetensors", ".json", ".parquet"}, files  # no pickle-format artifact

    # Its logs and record, read back through the Jobs API with the token.
    jobs = submit.client(head.dashboard, token=head.token)
    info = jobs.get_job_info("test-backbone")
    assert str(info.status.value) == "SUCCEEDED" and info.metadata["coldstart_job"] == "train"
    assert info.entrypoint.startswith("python -m coldstart.cli train backbone")
    logs = jobs.get_job_logs("test-backbone")
    assert "backbone: best epoch" in logs and f"artifact {out}" in logs
    # The shipped package is the repository without what runtime_env.yaml excludes.
    assert info.runtime_env["working_dir"].startswith("gcs://")

    wanted = {f"ray_{train_metrics.EPOCHS}", f"ray_{train_metrics.VAL_NDCG}", f"ray_{train_metrics.THROUGHPUT}",
              f"ray_{train_metrics.VALUE}"}
    deadline, text = time.monotonic() + 60, ""
    while time.monotonic() < deadline:
        status, text = _get(head.metrics_url, head.token)
        found = {name for name in wanted if re.search(rf"^{name}\{{", text, re.M)}
        if status == 200 and found == wanted:
            break
        time.sleep(2)
    missing = wanted - {name for name in wanted if re.search(rf"^{name}\{{", text, re.M)}
    assert not missing, f"not on {head.metrics_url}: {missing}"
    # The metrics endpoint does not check the token (README, Security): it answers without one.
    assert _get(head.metrics_url)[0] == 200
    epochs = [float(m.group(1)) for m in
              re.finditer(rf'^ray_{train_metrics.EPOCHS}\{{[^}}]*job="backbone-backbone"[^}}]*\}} (\S+)', text, re.M)]
    assert epochs and max(epochs) == 3.0, epochs
    ndcg = re.search(rf'^ray_{train_metrics.VAL_NDCG}\{{[^}}]*metric="warm_val_ndcg@20"[^}}]*\}} (\S+)', text, re.M)
    assert ndcg and 0.0 <= float(ndcg.group(1)) <= 1.0
