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

from trainers.testing import training_check, two_rank_check


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
