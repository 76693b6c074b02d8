"""Run a coldstart command on a Ray cluster as a job, over the Ray Jobs API.

`coldstart submit embed --address http://HEAD:8265 -- --split s3://... --out ...`
packs this repository as the job's working_dir (with `cluster/runtime_env.yaml`),
submits `python -m coldstart.cli embed ...` as the entrypoint and, with `--wait`,
follows the job's logs and returns its final status. The job's driver joins the
cluster through the RAY_ADDRESS the job supervisor sets for it.

Token authentication: the request carries `Authorization: Bearer <token>` with the
token from $RAY_AUTH_TOKEN, the file $RAY_AUTH_TOKEN_PATH, or ~/.ray/auth_token
(Ray's own order), whichever is found first.
"""

from __future__ import annotations

import os
import shlex
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

PROJECT_ROOT = Path(__file__).resolve().parent.parent
RUNTIME_ENV = PROJECT_ROOT / "cluster" / "runtime_env.yaml"
JOBS = ("embed", "pipeline", "evaluate", "train", "tune", "recommend")
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


class SubmitError(ValueError):
    pass


@dataclass
class Submitted:
    job_id: str
    status: str | None = None


def load_runtime_env(path: Path = RUNTIME_ENV, working_dir: Path | None = None) -> dict:
    """The runtime_env dict: a relative working_dir resolves against the folder holding cluster/."""
    path = Path(path)
    if not path.is_file():
        raise SubmitError(f"{path}: runtime_env file not found")
    env = yaml.safe_load(path.read_text()) or {}
    if not isinstance(env, dict):
        raise SubmitError(f"{path}: expected a mapping, got {type(env).__name__}")
    if working_dir is not None:
        env["working_dir"] = str(Path(working_dir).resolve())
    elif "working_dir" in env and "://" not in str(env["working_dir"]):
        base = path.resolve().parent.parent if path.resolve().parent.name == "cluster" else path.resolve().parent
        env["working_dir"] = str((base / env["working_dir"]).resolve())
    return env


def auth_token() -> str | None:
    """The cluster token, looked up where Ray looks for it; None when there is none."""
    if os.environ.get("RAY_AUTH_TOKEN", "").strip():
        return os.environ["RAY_AUTH_TOKEN"].strip()
    token_path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    if token_path:
        text = Path(token_path).expanduser().read_text().strip()
        if not text:
            raise SubmitError(f"RAY_AUTH_TOKEN_PATH={token_path} is empty")
        return text
    default = Path.home() / ".ray" / "auth_token"
    return (default.read_text().strip() or None) if default.is_file() else None


def entrypoint(job: str, args: list[str]) -> str:
    """`python -m coldstart.cli JOB ARGS`: -m runs the working_dir's copy, not an installed one."""
    if job not in JOBS:
        raise SubmitError(f"unknown job {job!r}: expected one of {', '.join(JOBS)}")
    return shlex.join(["python", "-m", "coldstart.cli", job, *args])


def client(address: str, token: str | None = None):
    from ray.job_submission import JobSubmissionClient  # ray: heavy, only submitting talks to a cluster

    token = token or auth_token()
    headers = {"Authorization": f"Bearer {token}"} if token else None
    return JobSubmissionClient(address, headers=headers)


def submit(job: str, args: list[str], address: str, runtime_env: dict, *,
           submission_id: str | None = None, entrypoint_num_cpus: float | None = None) -> Submitted:
    jobs = client(address)
    job_id = jobs.submit_job(
        entrypoint=entrypoint(job, args), runtime_env=runtime_env,
        submission_id=submission_id or f"coldstart-{job}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}",
        metadata={"coldstart_job": job}, entrypoint_num_cpus=entrypoint_num_cpus)
    return Submitted(job_id)


def follow(address: str, job_id: str, echo, poll_seconds: float = 1.0, timeout: float | None = None) -> str:
    """Print the job's logs as they grow until it ends; its final status."""
    jobs = client(address)
    shown, started = 0, time.monotonic()
    while True:
        status = str(jobs.get_job_status(job_id).value)
        logs = jobs.get_job_logs(job_id)
        if len(logs) > shown:
            echo(logs[shown:].rstrip("\n"))
            shown = len(logs)
        if status in TERMINAL:
            return status
        if timeout is not None and time.monotonic() - started > timeout:
            raise TimeoutError(f"job {job_id} still {status} after {timeout:.0f} s")
        time.sleep(poll_seconds)
