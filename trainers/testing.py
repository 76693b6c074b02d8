"""Every training job of the project on tiny generated inputs, built in seconds and without Ray.

The GPU check (`benchmarks/gpu_check.py`) runs one epoch of each on CUDA, and the
unit tests of the training skeleton run them on the CPU: both see the jobs the
Ray workers run (`trainers/*`), only their inputs are small. Both run the same
checks, defined here: `training_check` (every job in a world-size-1 process
group) and `two_rank_check` (two ranks, DDP: shard union, one validation, equal
weights). Nothing is
downloaded: the encoder job's teacher is a two-layer BERT with random weights and
a word-level vocabulary written here.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from coldstart import registry
from coldstart.data.schema import validate
from coldstart.data.split import load_split, make_split, save_split
from coldstart.evaluate import SplitData
from coldstart.models.coldstart_model import save_backbone
from coldstart.ports import free_port
from coldstart.testing import make_tables
from coldstart.training import unwrap
from trainers import loop
from trainers.loop import LocalContext, fit, reduce_mean

WORDS = ("a film about cats space love war ghosts fish robots music crime dogs the of and in").split()


def tiny_teacher(folder: Path, hidden: int = 32) -> Path:
    """A random two-layer BERT and its tokenizer, saved as a Hugging Face folder."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    BertTokenizerFast(vocab_file=str(vocab)).save_pretrained(folder)
    config = BertConfig(vocab_size=len(WORDS) + 5, hidden_size=hidden, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=2 * hidden, max_position_embeddings=64)
    BertModel(config).save_pretrained(folder)
    return folder


class FrameShard:
    """Ray Data's `iter_batches` over a pandas frame, so the encoder job runs without Ray."""

    def __init__(self, frame: pd.DataFrame):
        self.frame = frame

    def iter_batches(self, batch_size: int, batch_format: str = "numpy", **_):
        for start in range(0, len(self.frame), batch_size):
            part = self.frame.iloc[start:start + batch_size]
            yield {"text": part["text"].to_numpy(), "target": np.stack(part["target"].to_numpy())}


def tiny_jobs(root: Path, *, n_users: int = 40, n_items: int = 60, seed: int = 1) -> dict[str, Callable]:
    """name -> make(**config overrides) -> a TrainJob, for every job: backbone, distill, vae, transfer, encoder."""
    from trainers.backbone import BackboneConfig, BackboneJob
    from trainers.distill import DistillConfig, DistillJob
    from trainers.distill_encoder import DistillEncoderConfig, EncoderJob
    from trainers.generator import GeneratorConfig, VAEJob
    from trainers.transfer import TransferConfig, TransferJob

    root = Path(root)
    inter, items, users = make_tables(n_users=n_users, n_items=n_items, per_user=10, seed=seed)
    split_dir = save_split(make_split(validate(inter, items, users), "items", seed=0), root / "split")
    data = SplitData.from_split(load_split(split_dir))
    rng = np.random.default_rng(seed)
    user_vectors = rng.normal(size=(data.n_users, 8)).astype(np.float32)
    item_vectors = rng.normal(size=(data.n_items, 8)).astype(np.float32)
    item_vectors[~data.warm_items] = 0.0  # as a real backbone: nothing learnt for items it never saw
    save_backbone(root / "backbone", data, user_vectors, item_vectors, {"epoch": 0})
    arrays = {"item_features": rng.normal(size=(data.n_items, 6)).astype(np.float32),
              "user_features": rng.normal(size=(data.n_users, 5)).astype(np.float32),
              "item_text": rng.normal(size=(data.n_items, 4)).astype(np.float32),
              "user_text": rng.normal(size=(data.n_users, 4)).astype(np.float32)}
    paths = dict(split=split_dir, embeddings=root / "unused", backbone=root / "backbone", out=root / "unused")

    train = data.split.train
    n_source_items, n_source_users = data.n_items + 10, 30
    transfer_inputs = {
        "text": rng.normal(size=(n_source_items, 4)).astype(np.float32),
        "target_users": data.user_ids.get_indexer(train["user_id"]),
        "target_items": data.item_ids.get_indexer(train["item_id"]),
        "target_negatives": np.flatnonzero(data.warm_items),
        "source_users": rng.integers(0, n_source_users, 300), "source_items": rng.integers(0, n_source_items, 300),
        "source_negatives": np.arange(n_source_items), "n_source_users": n_source_users, "coverage": {}}

    teacher = tiny_teacher(root / "teacher")
    texts = [" ".join(rng.choice(WORDS, 6)) for _ in range(24)]
    frame = pd.DataFrame({"text": texts, "target": list(rng.normal(size=(len(texts), 16)).astype(np.float32))})

    def backbone(**kw):
        return BackboneJob(BackboneConfig(split=split_dir, out=root / "unused", dim=8, batch_size=64, **kw), data=data)

    def distill(**kw):
        cfg = DistillConfig(**paths, batch_size=64, hidden=16, **{"teacher_llm": 0.5, **kw})
        return DistillJob(cfg, arrays, {}, data=data)

    def vae(**kw):
        return VAEJob(GeneratorConfig(**paths, batch_size=64, hidden=16, latent=4, **kw), arrays, {}, data=data)

    def transfer(**kw):
        cfg = TransferConfig(target=split_dir, embeddings=root / "unused", out=root / "unused", dim=8, hidden=16,
                             batch_size=64, **kw)
        return TransferJob(cfg, transfer_inputs, data=data)

    def encoder(**kw):
        cfg = DistillEncoderConfig(embeddings=root / "unused", out=root / "unused", teacher=str(teacher), layers=1,
                                   batch_size=8, **{"epochs": 1, **kw})
        return EncoderJob(cfg, 16, train=FrameShard(frame), val=FrameShard(frame.iloc[:8]))

    return {"backbone": backbone, "distill": distill, "vae": vae, "transfer": transfer, "encoder": encoder}


# ---- the device checks `benchmarks/gpu_check.py` runs on a lent GPU, and the unit tests on the CPU ----


def training_check(device: str = "cuda", backend: str = "nccl", precisions=("fp32", "bf16")) -> list[dict]:
    """One epoch of every job per precision, in a world-size-1 process group; a row of figures per run."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    if device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            jobs = tiny_jobs(Path(tmp))
            for precision in precisions:
                for name, make in jobs.items():
                    job = make(epochs=2, patience=2)
                    ctx = LocalContext(device, folder=Path(tmp) / f"{name}-{precision}")
                    models = []
                    build = job.build_model
                    job.build_model = lambda build=build: models.append(build()) or models[-1]
                    started = time.perf_counter()
                    stopping = fit(job, ctx, precision=precision)
                    seconds = time.perf_counter() - started
                    where = {p.device.type for p in unwrap(models[0]).parameters()}
                    last = stopping.history[-1]
                    finite = all(np.isfinite(v) for v in last.values() if isinstance(v, float))
                    rows.append({"job": name, "precision": precision, "device": ",".join(sorted(where)),
                                 "epochs": len(stopping.history), "seconds": seconds, "finite": finite,
                                 "rows_per_second": last.get("interactions_per_second", last.get("texts_per_second")),
                                 "loss": last.get("train_loss"), job.key: last[job.key]})
                    assert where == {torch.device(device).type}, f"{name}: model on {where}"
                    assert finite, f"{name} {precision}: non-finite figures {last}"
        values, total = reduce_mean({"a": 1.5, "b": -2.0}, 3.0, torch.device(device))
        assert values == {"a": 1.5, "b": -2.0} and total == 3.0, (values, total)
    finally:
        dist.destroy_process_group()
    for row in rows:
        print(f"train {row['job']:9s} {row['precision']:5s} on {row['device']}: {row['epochs']} epochs in "
              f"{row['seconds']:.2f} s, {row['rows_per_second']:9.0f} rows/s, loss {row['loss']:.4f}, "
              f"finite {row['finite']}")
    print(f"metric reduction over {backend} on {device}: ok")
    return rows


def _rank_main(rank: int, world: int, port: int, root: str, job_name: str, device: str, backend: str) -> None:
    """One rank of a two-process group: fit a tiny job through the skeleton; write what the parent checks."""
    torch.set_num_threads(1)
    if device == "cuda":
        device = f"cuda:{rank}"
        torch.cuda.set_device(torch.device(device))
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        job = tiny_jobs(Path(root) / f"rank-{rank}")[job_name](epochs=2, patience=5)
        calls, built, shards = [], [], []
        validate, build, shard = job.validate, job.build_model, job.shard
        job.validate = lambda model: (calls.append(1), validate(model))[1]
        job.build_model = lambda: (built.append(build()), built[-1])[1]
        job.shard = lambda n, epoch, *a, **kw: (shards.append((n, epoch, shard(n, epoch, *a, **kw))), shards[-1][2])[1]
        ctx = LocalContext(device)
        fit(job, ctx)
        first = [(n, order.tolist()) for n, epoch, order in shards if epoch == 0][:1]
        weights = {k: v.detach().double().sum().item() for k, v in built[0].state_dict().items()}
        Path(root, f"rank-{rank}.json").write_text(json.dumps({
            "validations": len(calls), "reports": ctx.reports, "weights": weights, "shard": first,
            "device": sorted({p.device.type for p in built[0].parameters()})}))
        dist.barrier()  # neither rank tears the group down while the other still talks over it
    finally:
        dist.destroy_process_group()
    # gloo's threads may still be winding down at interpreter exit, where C++ aborts them ("terminate called
    # without an active exception"): what this rank had to say is written, so leave without that teardown
    os._exit(0)


def two_rank_check(device: str = "cpu", backend: str = "gloo", jobs=("backbone", "distill")) -> list[dict]:
    """Each job fitted by two ranks (`_rank_main`); raises AssertionError naming what broke, else a row per job."""
    rows = []
    for job_name in jobs:
        with tempfile.TemporaryDirectory() as root:
            started = time.perf_counter()
            mp.start_processes(_rank_main, args=(2, free_port(), root, job_name, device, backend), nprocs=2,
                               join=True, start_method="spawn")
            seconds = time.perf_counter() - started
            ranks = [json.loads((Path(root) / f"rank-{r}.json").read_text()) for r in range(2)]
        (n, first), (_, second) = ranks[0]["shard"][0], ranks[1]["shard"][0]
        assert len(first) == len(second), f"{job_name}: unequal shards {len(first)} and {len(second)}"
        assert set(first) | set(second) == set(range(n)), f"{job_name}: the shards miss rows of {n}"
        assert [r["validations"] for r in ranks] == [2, 0], f"{job_name}: validations per rank {ranks}"
        for mine, theirs in zip(*(r["reports"] for r in ranks)):
            ours = ({k: v for k, v in report.items() if "val" in k} for report in (mine, theirs))
            assert next(ours) == next(ours), f"{job_name}: the ranks report different validation figures"
        w0, w1 = ranks[0]["weights"], ranks[1]["weights"]
        drift = max(abs(w0[k] - w1[k]) / max(abs(w0[k]), 1e-12) for k in w0)
        assert w0 and drift < 1e-6, f"{job_name}: the ranks' weights differ after training (relative {drift:.2e})"
        rows.append({"job": job_name, "backend": backend, "device": ranks[0]["device"], "rows": n,
                     "shard": len(first), "seconds": seconds, "weight_drift": drift})
        print(f"two ranks {job_name:9s} over {backend} on {','.join(ranks[0]['device'])}: shards of {len(first)} "
              f"cover all {n} rows, one validation, weights equal (relative drift {drift:.1e}), {seconds:.1f} s")
    return rows


@contextlib.contextmanager
def in_process(folder: Path) -> Iterator[None]:
    """Every trainer's driver fits its job in this process instead of on Ray Train, each run checkpointing in a
    folder of its own under `folder`: the pipeline's stages, as they are, run on tiny data without a cluster.

    `run_job` is what every driver calls (`trainers.loop`); each trainer module (every registered one is imported
    first) sees it given a `LocalContext`, as a one-worker Tune trial runs a job."""
    for spec in registry.trained():
        spec.trainer_module()
    original, runs = loop.run_job, itertools.count()

    def run_here(job_class, cfg, *, context=None, **kwargs):
        context = context or LocalContext(folder=Path(folder) / f"{job_class.name}-{next(runs)}")
        return original(job_class, cfg, context=context, **kwargs)

    patched = [module for name, module in list(sys.modules.items())
               if name.split(".")[0] == "trainers" and getattr(module, "run_job", None) is original]
    for module in patched:
        module.run_job = run_here
    try:
        yield
    finally:
        for module in patched:
            module.run_job = original
