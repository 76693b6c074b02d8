"""Fault drills for the reliability table: worker kills in training, kills mid-write, fuzzed data inputs.

    python -m benchmarks.reliability --worker-kills 3 --write-kills 100 --fuzz 500

1. Training: one short Ray Train job (2 workers, tiny synthetic state) in which the last rank is
   SIGKILLed at the start of `--worker-kills` epochs and rank 0 halfway through writing one
   checkpoint. Survived: the job finishes, with every epoch reported and every checkpoint whole.
2. Artifacts: a child rewriting a folder artifact and a file artifact is SIGKILLed `--write-kills`
   times each at random moments. Survived: the reader finds a whole version; lost: it finds an
   older version than the last acknowledged write.
3. Data: `--fuzz` malformed inputs from `coldstart/testing/fuzz.py` (seed 1; the tests use seed 0).
   Unclean: anything but a DataError naming the file, or a success.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path


def drill_loop(config: dict) -> None:
    """Each epoch: report, with rank 0 writing a checksummed checkpoint; die where the drill says."""
    import hashlib
    import json
    import os
    import signal

    import ray.train

    from trainers.common import report_epoch

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    marks = Path(config["marks"])
    start, history = 0, []
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as folder:
            state = json.loads((Path(folder) / "state.json").read_text())
            for i, digest in enumerate(state["sha256"]):  # a torn checkpoint fails the run here
                assert hashlib.sha256((Path(folder) / f"part{i}.bin").read_bytes()).hexdigest() == digest
            start, history = state["epoch"] + 1, state["history"]

    def once(name: str) -> bool:
        mark = marks / name
        if mark.exists():
            return False
        mark.write_text("")
        return True

    for epoch in range(start, config["epochs"]):
        if epoch in config["worker_kills"] and rank == world - 1 and once(f"worker-{epoch}"):
            os.kill(os.getpid(), signal.SIGKILL)
        history = [*history, epoch]

        def write(folder: Path, epoch=epoch, history=history) -> None:
            digests = []
            for i in range(4):
                data = f"epoch {epoch} part {i}:".encode() * 32768
                (folder / f"part{i}.bin").write_bytes(data)
                digests.append(hashlib.sha256(data).hexdigest())
                if epoch == config["checkpoint_kill"] and i == 1 and once(f"checkpoint-{epoch}"):
                    os.kill(os.getpid(), signal.SIGKILL)
            (folder / "state.json").write_text(json.dumps({"epoch": epoch, "history": history,
                                                           "sha256": digests}))

        report_epoch({"epoch": epoch, "history_len": len(history)}, write)


def training_drill(worker_kills: int, root: Path) -> dict:
    import ray

    from coldstart.config import ScaleOptions
    from trainers.common import torch_trainer

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers need not import benchmarks/
    if not ray.is_initialized():
        ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    kills = [1 + 2 * i for i in range(worker_kills)]
    checkpoint_kill = 2 * worker_kills + 2
    epochs = checkpoint_kill + 2
    marks = root / "marks"
    marks.mkdir(parents=True)
    result = torch_trainer(drill_loop, {"epochs": epochs, "worker_kills": kills, "checkpoint_kill": checkpoint_kill,
                                        "marks": str(marks)},
                           ScaleOptions(num_workers=2, max_failures=worker_kills + 1, storage=root / "runs"),
                           name="reliability-drill", out=root / "out").fit()
    injected = len(list(marks.iterdir()))
    whole = result.error is None and result.metrics["epoch"] == epochs - 1 \
        and result.metrics["history_len"] == epochs
    # An epoch is lost if the finished job's history (carried in its checkpoints) lacks it.
    lost = epochs - (result.metrics or {}).get("history_len", 0)
    return {"injected": injected, "survived": injected if whole else 0, "lost": lost, "error": result.error}


def write_drill(kills: int, root: Path) -> dict:
    from coldstart.testing.crashes import kill_during_writes

    totals = {"injected": 0, "survived": 0, "lost": 0}
    for kind in ("dir", "file"):
        folder = root / kind
        folder.mkdir(parents=True)
        out = kill_during_writes(kind, folder / "artifact", folder / "acks.log", kills=kills, seed=7)
        totals["injected"] += out["kills"]
        totals["survived"] += out["kills"] - out["torn"]
        totals["lost"] += out["lost"]
    return totals


def fuzz_drill(n: int, root: Path) -> dict:
    from coldstart.testing.fuzz import fuzz

    return fuzz(root, n, seed=1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker-kills", type=int, default=3)
    parser.add_argument("--write-kills", type=int, default=100, help="per artifact kind (folder, file)")
    parser.add_argument("--fuzz", type=int, default=500)
    args = parser.parse_args(argv)
    import logging
    import warnings

    logging.disable(logging.WARNING)
    warnings.simplefilter("ignore")
    with tempfile.TemporaryDirectory(prefix="coldstart-reliability-") as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        train = training_drill(args.worker_kills, root / "train")
        t_train = time.perf_counter() - started
        writes = write_drill(args.write_kills, root / "writes")
        t_writes = time.perf_counter() - started - t_train
        fuzzed = fuzz_drill(args.fuzz, root / "fuzz")
        t_fuzz = time.perf_counter() - started - t_train - t_writes
    print("| drill | faults injected | faults survived | acknowledged records lost | inputs fuzzed | "
          "unclean errors | seconds |")
    print("|---|---|---|---|---|---|---|")
    print(f"| training: worker SIGKILL + kill mid-checkpoint | {train['injected']} | {train['survived']} | {train['lost']} epochs | | "
          f"| {t_train:.0f} |")
    print(f"| artifacts: writer SIGKILL mid-write | {writes['injected']} | {writes['survived']} | "
          f"{writes['lost']} | | | {t_writes:.0f} |")
    print(f"| data loaders: malformed inputs | | | | {fuzzed['inputs']} ({fuzzed['clean']} DataError, "
          f"{fuzzed['ok']} valid) | {fuzzed['unclean']} | {t_fuzz:.0f} |")
    for name, detail in fuzzed["unclean_cases"]:
        print(f"unclean: {name}: {detail}")
    if train["error"] is not None:
        print(f"training drill error: {train['error']}")


if __name__ == "__main__":
    main()
