"""Batch recommendations: the Ray Data job (1 and 2 actors) against a plain single-process loop.

The same users, the same objects on both sides: `coldstart.serving.batch.BatchRecommender`
built from the artifacts and the registration store, every user ranked with
`Catalogue.recommend_user` (top-k, seen items excluded), rows written to one
parquet file. The loop is `coldstart recommend --actors 0`; the job is
`--actors N`. Both times run from the command's start to the file in place,
catalogue builds included (the job builds one on the driver to check the users,
then one per actor, in parallel); the Ray cluster is started once, before.
Repeats are interleaved so drift on the machine hits every variant alike; the
median is reported. A last variant writes a folder of parts instead of one file
(no copy through the driver). Before and after, a probe measures what two
processes get from the machine's cores against one (2.0x on two idle cores; less
when something else runs), which bounds what two actors can gain. Ray's workers
run at nice 0 here, as the loop does (Ray's default is 15).

Artifacts: generated data built with tests/serving_artifacts, once per size, into
`--root` (reused when there): `--sizes USERSxITEMS ...`, by default ml-100k's
(943 users, 1,682 items) and the same items for 30,000 users, where the ranking
itself outweighs the job's fixed costs (Ray Data's start, each actor's imports and
catalogue). The models are untrained and text vectors come from a hashing
stand-in for MiniLM: the ranking costs the same whatever the vectors mean, and
building takes a minute, not an hour. `--registered` items and users are
registered through the serving path, so registered entities are ranked too.

    python -m benchmarks.batch_recommend [--sizes 943x1682 30000x1682] [--k 100] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd


class HashEncoder:
    """Unit text vectors from a hash of the text: MiniLM's width, none of its cost."""

    dim = 384

    def encode(self, texts: list[str]) -> np.ndarray:
        import zlib

        out = np.stack([np.random.default_rng(zlib.crc32(t.encode())).standard_normal(self.dim) for t in texts]) \
            if texts else np.zeros((0, self.dim))
        return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)


def build(folder: Path, users: int, items: int, registered: int) -> None:
    from coldstart.serving.catalogue import Catalogue
    from coldstart.serving.served_models import ServingGenerator
    from coldstart.serving.stores import open_store
    from coldstart.testing.serving_folder import build_artifacts

    started = time.perf_counter()
    # Untrained (epochs=0): ranking costs the same whatever the vectors are, and training 30,000 users takes
    # long. ~100 interactions per user as ml-100k has (the seen lists that each ranking excludes).
    build_artifacts(folder, HashEncoder(), epochs=0, n_users=users, n_items=items, per_user=100)
    generator = ServingGenerator(folder)
    catalogue = Catalogue.from_artifacts(folder, generator, open_store(folder / "registry"))
    vectors = generator.arrays["item_vectors"]
    for i in range(registered):
        catalogue.register_item(f"reg-item-{i}", vectors[i % len(vectors)] * 1.5, title=f"Registered {i}",
                                attributes={}, text="", generator="distill")
        catalogue.register_user(f"reg-user-{i}", None, liked=[f"reg-item-{i}", "i1"], attributes={}, text="",
                                generator="distill")
    print(f"built {folder} in {time.perf_counter() - started:.0f} s")


def _spin(start=None, done=None) -> float:
    if start is not None:
        done.put("ready")
        start.wait()
    began = time.perf_counter()
    total = 0
    for i in range(10_000_000):
        total += i
    if done is not None:
        done.put(time.perf_counter())
    return time.perf_counter() - began


def parallel_capacity() -> float:
    """Work two processes get done at once, relative to one alone (2.0 on two idle cores)."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    alone = _spin()
    start, done = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_spin, args=(start, done)) for _ in range(2)]
    for p in procs:
        p.start()
    for _ in procs:  # both started and waiting: their start-up is not measured
        done.get()
    began = time.perf_counter()
    start.set()
    together = max(done.get() for _ in procs) - began
    for p in procs:
        p.join()
    return 2 * alone / together


def measure(artifacts: Path, args, run, RecommendConfig) -> None:
    out = Path(tempfile.mkdtemp(prefix="coldstart-bench-recs-"))
    # (actors, layout): the plain loop, the job per actor count, and the most actors writing a folder of
    # parts (no merge on the driver: what the job costs without the single-file copy)
    variants = [(0, "file"), *((n, "file") for n in args.actors), (max(args.actors), "folder")]
    times: dict[tuple, list[float]] = {v: [] for v in variants}
    for _ in range(args.repeats):
        for actors, layout in variants:
            path = out / (f"recs-{actors}.parquet" if layout == "file" else f"recs-{actors}")
            result = run(RecommendConfig(artifacts=artifacts, k=args.k, actors=actors, out=path))
            times[(actors, layout)].append(result.seconds)
    plain = pd.read_parquet(out / "recs-0.parquet")
    for n in args.actors:  # the job is only fast if it is right
        pd.testing.assert_frame_equal(pd.read_parquet(out / f"recs-{n}.parquet"), plain)
    keys = ["user_id", "rank"]
    parts = pd.read_parquet(out / f"recs-{max(args.actors)}").sort_values(keys, ignore_index=True)
    pd.testing.assert_frame_equal(parts, plain.sort_values(keys, ignore_index=True), check_dtype=False)
    users, base = result.users, statistics.median(times[(0, "file")])
    print(f"{artifacts.name}: {users} users ({result.registered_users} registered), k={args.k}, {len(plain)} rows; "
          f"median of {args.repeats} interleaved runs")
    for (actors, layout), runs in times.items():
        t = statistics.median(runs)
        name = "plain loop, 1 process" if actors == 0 else f"Ray Data job, {actors} actor(s)" + \
            (", parts" if layout == "folder" else "")
        ratio = "" if actors == 0 else f"  ratio {base / t:.2f}x"
        print(f"  {name:32s} {users / t:8.0f} users/s  {t:7.2f} s{ratio}  ({', '.join(f'{x:.2f}' for x in runs)})")
    shutil.rmtree(out, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", type=Path, default=Path(tempfile.gettempdir()) / "coldstart-bench-batch")
    parser.add_argument("--sizes", nargs="+", default=["943x1682", "30000x1682"])
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--registered", type=int, default=50)
    parser.add_argument("--actors", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    folders = []
    for size in args.sizes:
        users, items = (int(x) for x in size.split("x"))
        folder = args.root / f"{users}x{items}"
        if not (folder / "distill").is_dir():
            build(folder, users, items, args.registered)
        folders.append(folder)

    import ray

    from trainers.recommend import RecommendConfig, run

    # Ray runs its workers at nice 15: on a machine something else also uses, that alone starves the actors
    # against a loop at nice 0. Both sides compete on equal terms here.
    os.environ.setdefault("RAY_worker_niceness", "0")
    # 4 logical CPUs on 2 cores, as `coldstart serve` starts; no dashboard: nothing here needs it
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    print(f"parallel capacity before: {parallel_capacity():.2f}x (2 processes vs 1)")
    warmup = Path(tempfile.mkdtemp(prefix="coldstart-bench-warmup-"))
    run(RecommendConfig(artifacts=folders[0], k=args.k, actors=max(args.actors), out=warmup / "recs.parquet"))
    shutil.rmtree(warmup, ignore_errors=True)
    for folder in folders:
        measure(folder, args, run, RecommendConfig)
    print(f"parallel capacity after: {parallel_capacity():.2f}x (2 processes vs 1)")
    ray.shutdown()


if __name__ == "__main__":
    main()
