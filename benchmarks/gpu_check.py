"""GPU paths, run on a lent CUDA machine: every training job's epoch, the embed job's actor code.

Training (always): one epoch of every job the Ray workers run (backbone,
distill, vae, transfer, encoder; `trainers/testing.py` builds them on
tiny inputs) through the training skeleton (`trainers/loop.py`), in one
torch.distributed group of world size 1 with the NCCL backend, as a Ray Train
GPU worker is (that machine has no Ray), the model left unwrapped at that world
size as Ray's `prepare_model` leaves it, in fp32 and bf16. It checks that the
model sits on the GPU, that every figure is finite, and that the metric
reduction over NCCL gives back what it was given; it prints rows/s per job.

Two ranks (`two_rank_check`): the backbone and the towers in a torch.distributed
group of two processes, DDP-wrapped as Ray's `prepare_model` wraps them (NCCL on
two GPUs where the machine has them, else gloo on the CPU, which is also what
tests/unit/test_sampler.py runs): the ranks' epoch shards together cover every
interaction once, rank 0 alone validates and both report its figures, and the
gradients' sync leaves the same weights on both ranks.

Embedding (with --model and --texts): the throughput of `EncodeBatch` (the Ray
Data actor's code) in float32 and bfloat16, the cosine of bf16 to fp32, the
fraction of the GPU's measured bf16 matmul peak, and the distillation step's
texts/s in fp32 and under bf16 autocast.

    python -m benchmarks.gpu_check                                  # training checks, CUDA + NCCL
    python -m benchmarks.gpu_check --model DIR --texts texts.json   # and the embedding figures
    python -m benchmarks.gpu_check --device cpu --backend gloo      # the same code on a CPU (a unit test)
    python -m benchmarks.gpu_check --ranks-only --device cpu --backend gloo   # the two-rank check alone
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import pandas as pd
import torch


def peak(dtype, size=8192, repeats=10) -> float:
    a = torch.randn(size, size, device="cuda", dtype=dtype)
    b = torch.randn(size, size, device="cuda", dtype=dtype)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(repeats):
        a @ b
    torch.cuda.synchronize()
    return 2 * size**3 * repeats / (time.perf_counter() - t)


def training_check(device: str = "cuda", backend: str = "nccl", precisions=("fp32", "bf16")) -> list[dict]:
    """One epoch of every job per precision, in a world-size-1 process group; a row of figures per run."""
    import socket
    import tempfile
    from pathlib import Path

    import torch.distributed as dist

    from trainers.testing import tiny_jobs
    from coldstart.training import unwrap
    from trainers.loop import LocalContext, fit, reduce_mean

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
    from pathlib import Path

    import torch.distributed as dist

    from trainers.testing import tiny_jobs
    from trainers.loop import LocalContext, fit

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
    finally:
        dist.destroy_process_group()


def two_rank_check(device: str = "cpu", backend: str = "gloo", jobs=("backbone", "distill")) -> list[dict]:
    """Each job fitted by two ranks (`_rank_main`); raises AssertionError naming what broke, else a row per job."""
    import tempfile
    from pathlib import Path

    import torch.multiprocessing as mp

    from coldstart.ports import free_port

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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--backend", default="nccl")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--model", help="An encoder for the embedding figures (skipped without it).")
    parser.add_argument("--texts", help="A JSON list of texts for the embedding figures.")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--ranks-only", action="store_true", help="Only the two-rank check.")
    args = parser.parse_args()
    if not args.ranks_only:
        training_check(args.device, args.backend, tuple(args.precisions.split(",")))
    two_gpus = args.device == "cuda" and torch.cuda.device_count() >= 2
    two_rank_check("cuda" if two_gpus else "cpu", "nccl" if two_gpus else "gloo")
    if args.model and args.texts:
        embedding_check(args)


def embedding_check(args) -> None:
    from benchmarks.common import encoder_flops_per_token
    from coldstart.models.student_encoder import EncoderDistillation, build_student
    from trainers.embed import EncodeBatch

    texts = json.loads(open(args.texts).read())
    print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, {len(texts)} texts")
    bf16_peak = peak(torch.bfloat16)
    print(f"measured bf16 matmul peak: {bf16_peak / 1e12:.0f} TFLOP/s")
    batch = pd.DataFrame({"id": [str(i) for i in range(len(texts))], "kind": "items", "text": texts,
                          "text_hash": ["x"] * len(texts)})
    results = {}
    for dtype in ("float32", "bfloat16"):
        actor = EncodeBatch({"model": args.model, "dtype": dtype, "device": "cuda",
                             "batch_size": args.batch_size}, threads=4)
        actor(batch.iloc[:512])
        torch.cuda.synchronize()
        before = actor.encoder.stats.tokens
        t = time.perf_counter()
        out = actor(batch)
        torch.cuda.synchronize()
        seconds = time.perf_counter() - t
        tokens = actor.encoder.stats.tokens - before
        vectors = np.stack(out["vector"].to_numpy())
        flops = tokens * encoder_flops_per_token(actor.encoder.model.config, tokens / len(texts))
        results[dtype] = vectors
        print(f"EncodeBatch {dtype:9s} {len(texts) / seconds:9.0f} texts/s, {flops / seconds / 1e12:6.2f} TFLOP/s "
              f"= {flops / seconds / bf16_peak:.2%} of the bf16 peak")
    # Where the time goes: tokenizing on the CPU against the forward pass on the GPU.
    enc = actor.encoder
    t = time.perf_counter()
    tokenized = [enc.tokenizer(texts[i:i + args.batch_size], padding=True, truncation=True, max_length=256,
                               return_tensors="pt") for i in range(0, len(texts), args.batch_size)]
    print(f"tokenizing alone: {len(texts) / (time.perf_counter() - t):.0f} texts/s")
    for dtype in (torch.float32, torch.bfloat16):
        enc.model.to(dtype)
        with torch.inference_mode():
            for b in tokenized[:3]:
                enc.model(**b.to("cuda"))
            torch.cuda.synchronize()
            t = time.perf_counter()
            for b in tokenized:
                enc.model(**b.to("cuda"))
            torch.cuda.synchronize()
        print(f"forward alone {str(dtype):15s} {len(texts) / (time.perf_counter() - t):9.0f} texts/s")
    cosine = float((results["float32"] * results["bfloat16"]).sum(1).mean())
    print(f"mean cosine bf16 vs fp32: {cosine:.5f}")

    targets = results["float32"]
    student, tokenizer = build_student(args.model, layers=2)
    student.cuda()
    for amp in (False, True):
        trainer = EncoderDistillation(student, tokenizer, device="cuda", max_length=128)
        n = min(len(texts), 8192)

        def batches():
            for i in range(0, n, 128):
                yield texts[i:i + 128], targets[i:i + 128]
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            trainer.train_epoch(batches())  # warm-up epoch
            torch.cuda.synchronize()
            t = time.perf_counter()
            metrics = trainer.train_epoch(batches())
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t
        print(f"distillation step {'bf16 autocast' if amp else 'fp32':13s} {n / seconds:8.0f} texts/s, "
              f"loss {metrics['train_loss']:.4f}")


if __name__ == "__main__":
    main()
