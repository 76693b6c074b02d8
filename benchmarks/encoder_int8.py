"""The teacher in int8 or bfloat16 on a CPU: how much sooner a new user's texts are encoded, and what it costs in
fidelity and in cold-item ranking.

`TextEncoder.to_int8` turns the model's linear layers into dynamic int8, each output channel on its own scale;
`--variants bfloat16` runs the model in bfloat16 (native on CPUs with AVX512-BF16 or AMX); `--variants onnx` runs
it in float32 in ONNX Runtime (`TextEncoder.to_onnx`, the serving default on a CPU). In one run, against the same
encoder in float32 in torch:

1. latency of what a profile request encodes (its rendered attributes and its free text, one call), interleaved,
   on `--threads` threads (the Serve replica's: 1);
2. cosine to float32's vectors over ml-100k's item and user texts and short stated interests (mean and least);
3. cold-item NDCG@20 of content-kNN with item vectors from each, on ml-100k item-cold splits (`--seeds`);
4. with `--served OUT/seed-N ...` (pipeline folders): what users get, through the serving path. Each cold
   item of the split is made again as its registration would make it (its text rendered by the artifact's
   templates, encoded by each encoder, placed by the served generator) and the catalogue the ranker holds is
   measured on test (cold and all NDCG@20, `coldstart.serving.evidence.served_metrics`), beside the
   catalogue as the pipeline left it; under a generator that knows items by title (transfer), once more as
   titles its source never saw.

    python -m benchmarks.encoder_int8 [--variants int8 bfloat16] [--seeds 42 43 44] [--threads 1]
        [--served OUT/seed-42 OUT/seed-43 ...]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from benchmarks.stated_interest_users import PHRASINGS
from coldstart.data import movielens
from coldstart.data.schema import load_dataset
from coldstart.data.split import make_split
from coldstart.evaluate import SplitData, evaluate
from coldstart.models.baselines import ContentKNNRecommender
from coldstart.text.encoder import TextEncoder
from coldstart.text.templates import TextTemplates, item_texts, user_texts

GENRES = ("Horror", "Comedy", "Drama", "Sci-Fi", "Romance", "Western", "Film-Noir", "Children's")


def profile_pairs(users: pd.DataFrame, n: int = 200, seed: int = 0) -> list[list[str]]:
    """What a profile request encodes: the rendered attributes of a real user, and a stated interest."""
    rng = np.random.default_rng(seed)
    texts = user_texts(users, pd.DataFrame({"user_id": [], "item_id": []}), pd.DataFrame({"item_id": []}),
                       TextTemplates())["text"].tolist()
    said = [p.format(genre=g, lower=g.lower()) for p in PHRASINGS for g in GENRES]
    return [[texts[rng.integers(len(texts))], said[rng.integers(len(said))]] for _ in range(n)]


def latencies(encoders: dict[str, TextEncoder], pairs: list[list[str]], rounds: int = 3) -> dict[str, float]:
    """Median ms per call of each encoder, the encoders taking turns pair by pair over `rounds`."""
    times: dict[str, list[float]] = {name: [] for name in encoders}
    for name, enc in encoders.items():
        for pair in pairs[:20]:
            enc.encode(pair)
    for r in range(rounds):
        for pair in pairs:
            for name in (list(encoders) if r % 2 == 0 else list(encoders)[::-1]):
                started = time.perf_counter()
                encoders[name].encode(pair)
                times[name].append(time.perf_counter() - started)
    return {name: float(np.median(t)) * 1000 for name, t in times.items()}


def served(out: Path, encoders: dict[str, TextEncoder]) -> dict[str, dict[str, float]]:
    """{as left | remade by ENCODER: {cold, all: test NDCG@20}} through the served catalogue of `out`, and the
    mean cosine of each remade cold item's vector to the one the pipeline left."""
    from coldstart.data.split import load_split
    from coldstart.serving.catalogue import Catalogue
    from coldstart.serving.evidence import K, served_metrics
    from coldstart.serving.served_models import ServingGenerator

    data = SplitData.from_split(load_split(out / "split"))
    generator = ServingGenerator(out)
    catalogue = Catalogue.from_artifacts(out, generator, encoder=None)
    items = load_split(out / "split").items.astype({"item_id": str}).set_index("item_id")
    title = generator.content.roles("item").title
    cold = [p for p, is_cold in enumerate(catalogue.item_cold) if is_cold]
    entries = []
    for p in cold:
        row = items.loc[catalogue.item_ids[p]]
        attributes = {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items() if k != title and pd.notna(v)}
        entries.append((attributes, "", row.get(title)))
    texts = generator.content.texts("item", entries)
    left = catalogue.index.vectors(np.asarray(cold)).copy()

    def measure() -> dict[str, float]:
        figures, _ = served_metrics(catalogue, data, on="test", ks=(K,), groups=("cold", "all"))
        return {group: figures[group][f"ndcg@{K}"] for group in ("cold", "all")}

    rows = {"as left": measure()}
    titles = [(a, t) for a, _, t in entries]
    runs = [(f"remade by {name}", encoder, titles) for name, encoder in encoders.items()]
    if generator.item_keys(titles) is not None:  # a generator that knows items by title (transfer)
        runs.append(("remade by float32, as titles it never saw", encoders["float32"], None))
    for name, encoder, known in runs:
        features = generator.content.features("item", encoder.encode(texts), [a for a, _, _ in entries])
        remade = generator.generate("item", features, known)
        for p, vector in zip(cold, remade):
            catalogue.index.update(p, vector)
        cosine = (remade * left).sum(1) / np.maximum(np.linalg.norm(remade, axis=1) * np.linalg.norm(left, axis=1),
                                                     1e-12)
        rows[name] = {**measure(), "cosine": float(cosine.mean())}
    for p, vector in zip(cold, left):
        catalogue.index.update(p, vector)
    return rows


VARIANTS = {"int8": lambda: TextEncoder(device="cpu").to_int8(),
            "bfloat16": lambda: TextEncoder(device="cpu", dtype="bfloat16"),
            "onnx": lambda: TextEncoder(device="cpu").to_onnx()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="*", default=[42, 43, 44],
                        help="item-cold splits for content-kNN (none: skip)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--served", type=Path, nargs="*", default=[],
                        help="pipeline folders: cold items made again by each encoder, measured as served")
    parser.add_argument("--variants", nargs="+", default=["int8"], choices=sorted(VARIANTS),
                        help="what to set beside float32 in torch: int8 (dynamic, per channel), bfloat16, onnx "
                             "(float32 in ONNX Runtime)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    data = load_dataset(movielens.fetch("ml-100k"))
    items = item_texts(data.items, TextTemplates())
    users = user_texts(data.users, data.interactions, data.items, TextTemplates())
    full = TextEncoder(device="cpu")
    encoders = {"float32": full, **{name: VARIANTS[name]() for name in args.variants}}

    pairs = profile_pairs(data.users)
    ms = latencies(encoders, pairs)
    print(f"profile request's texts (rendered attributes + a stated interest, one call), {args.threads} thread(s), "
          f"median of {3 * len(pairs)} interleaved calls: float32 {ms['float32']:.2f} ms, " +
          ", ".join(f"{name} {ms[name]:.2f} ms ({ms['float32'] / ms[name]:.2f}x)" for name in args.variants))

    item_vectors = {name: enc.encode(items["text"].tolist()) for name, enc in encoders.items()}
    print("\n| texts | n | " + " | ".join(f"cosine {name} to float32, mean | least" for name in args.variants) +
          " |\n|---|---|" + "---|---|" * len(args.variants))
    for kind, texts in (("items", items["text"].tolist()), ("users (with liked titles)", users["text"].tolist()),
                        ("profile pairs", [t for pair in pairs for t in pair])):
        vectors = item_vectors if kind == "items" else {name: enc.encode(texts) for name, enc in encoders.items()}
        cells = []
        for name in args.variants:
            cosine = (vectors["float32"] * vectors[name]).sum(1)
            cells += [f"{cosine.mean():.4f}", f"{cosine.min():.4f}"]
        print(f"| {kind} | {len(texts)} | " + " | ".join(cells) + " |")

    if args.seeds:
        print("\n| seed | cold NDCG@20 content-kNN, float32 | " + " | ".join(f"{name} | ratio" for name in args.variants)
              + " |\n|---|---|" + "---|---|" * len(args.variants))
        ratios = {name: [] for name in args.variants}
        for seed in args.seeds:
            split = make_split(data, "items", seed)
            cold = SplitData.from_split(split)
            scores = {}
            for name, vectors in item_vectors.items():
                aligned = np.stack(pd.Series(list(vectors), index=items["item_id"]).reindex(cold.item_ids).to_numpy())
                scores[name] = evaluate(ContentKNNRecommender(cold, aligned), cold)["cold"]["ndcg@20"]
            for name in args.variants:
                ratios[name].append(scores[name] / scores["float32"])
            print(f"| {seed} | {scores['float32']:.4f} | " + " | ".join(
                f"{scores[name]:.4f} | {ratios[name][-1]:.3f}x" for name in args.variants) + " |")
        for name, values in ratios.items():
            print(f"\n{name} / float32 cold NDCG@20: {mean_std(values)}")

    if args.served:
        print("\n| folder | cold items' vectors | cold test NDCG@20 | all test NDCG@20 | cosine to as left |\n"
              "|---|---|---|---|---|")
        ratios = {(name, group): [] for name in args.variants for group in ("cold", "all")}
        for out in args.served:
            rows = served(out, encoders)
            for name, row in rows.items():
                print(f"| {out.name} | {name} | {row['cold']:.4f} | {row['all']:.4f} | "
                      f"{row['cosine']:.4f} |" if "cosine" in row else
                      f"| {out.name} | {name} | {row['cold']:.4f} | {row['all']:.4f} | - |")
            for name, group in ratios:
                ratios[name, group].append(rows[f"remade by {name}"][group] / rows["remade by float32"][group])
        for (name, group), values in ratios.items():
            print(f"served {group} NDCG@20, {name} / float32 (remade): {mean_std(values)}")


def mean_std(values: list[float]) -> str:
    return f"{np.mean(values):.3f}x ± {np.std(values, ddof=1) if len(values) > 1 else 0.0:.3f}"


if __name__ == "__main__":
    main()
