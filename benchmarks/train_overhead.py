"""What a Ray Train run costs around its training: start-up, each epoch's report, and a small real job.

Ray Train's controller takes each worker's report from a one-slot queue once per health check
(`RAY_TRAIN_HEALTH_CHECK_INTERVAL_S`, 2 s by default), so a worker whose epoch is shorter than that
waits at its next report. `trainers.common.torch_trainer` sets it to 0.1 s. This script measures both
settings in one cluster, interleaved (the driver passes the variable on to each run's controller):

- an empty loop of `--reports` reports (start-up plus the per-report wait),
- the backbone job on a generated split, `--epochs` epochs (checkpoints every `--checkpoint-every-s`).

    .venv/bin/python -m benchmarks.train_overhead --repeats 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

VAR = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"


def empty_loop(config: dict) -> None:
    import ray.train

    for epoch in range(config["reports"]):
        ray.train.report({"epoch": epoch})


def run_empty(reports: int, storage: Path, name: str) -> float:
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    started = time.perf_counter()
    TorchTrainer(empty_loop, train_loop_config={"reports": reports},
                 scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 1}),
                 run_config=RunConfig(name=name, storage_path=str(storage))).fit()
    return time.perf_counter() - started


def run_backbone(split: Path, out: Path, epochs: int, checkpoint_every_s: float) -> float:
    from trainers.backbone import BackboneConfig
    from trainers.backbone import run as train_backbone

    started = time.perf_counter()
    train_backbone(BackboneConfig(split=split, out=out, dim=16, epochs=epochs, patience=epochs, batch_size=256,
                                  scale={"num_workers": 2, "storage": out.parent / "runs",
                                         "checkpoint_every_s": checkpoint_every_s}))
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--reports", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--checkpoint-every-s", type=float, default=30.0)
    args = parser.parse_args(argv)

    import ray

    from coldstart.data.schema import validate
    from coldstart.data.split import make_split, save_split
    from coldstart.testing import make_tables
    from trainers.common import REPORT_POLL_ENV, local_cluster

    os.environ.pop(VAR, None)  # the cluster's processes start without it: each run gets it from the driver
    ray.init(**local_cluster(4), log_to_driver=False)
    root = Path(tempfile.mkdtemp(prefix="train-overhead-"))
    inter, items, users = make_tables(n_users=300, n_items=400, per_user=30, seed=3)
    split = save_split(make_split(validate(inter, items, users), "items", seed=0), root / "split")
    settings = {"default (2 s)": None, f"ours ({REPORT_POLL_ENV[1]} s)": REPORT_POLL_ENV[1]}
    times: dict[tuple[str, str], list[float]] = {}
    for repeat in range(args.repeats):
        for label, value in settings.items():  # interleaved: the machine's noise hits both
            if value is None:
                os.environ[VAR] = "2.0"  # what the controller uses when nobody sets it
            else:
                os.environ[VAR] = value
            key = f"{repeat}-{label[:4]}"
            times.setdefault(("empty", label), []).append(run_empty(args.reports, root / "runs", f"empty-{key}"))
            times.setdefault(("backbone", label), []).append(
                run_backbone(split, root / f"backbone-{key}", args.epochs, args.checkpoint_every_s))
            print(f"repeat {repeat} {label}: empty {times['empty', label][-1]:.1f} s, "
                  f"backbone {times['backbone', label][-1]:.1f} s", flush=True)
    ray.shutdown()
    default, ours = settings
    print(f"\n| run | {default} s | {ours} s | ratio (default / ours) |\n|---|---|---|---|")
    for workload, what in (("empty", f"{args.reports} empty reports, 2 workers"),
                           ("backbone", f"backbone, {args.epochs} epochs, 2 workers")):
        a, b = statistics.median(times[workload, default]), statistics.median(times[workload, ours])
        print(f"| {what} | {a:.1f} | {b:.1f} | {a / b:.2f}x |")
    print(f"\nmedian of {args.repeats} interleaved repeats on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
