"""Cold-start quality over seeds, in one process: every model on the same splits, backbone and LLM vectors.

The jobs are the ones the Ray workers run (`trainers/*`), driven here through the
training skeleton in-process (`trainers.loop.LocalContext`), so a comparison of
several models over several seeds fits on two cores. Splits, LLM vectors and
backbones are cached under --cache (default ~/.cache/coldstart/quality).

    python -m benchmarks.quality --dataset ml-100k --cold items --seeds 42 43 44
    python -m benchmarks.quality --models knn-warm towers --features text attributes both
    python -m benchmarks.quality --encoder all-mpnet-base-v2 --models knn-warm knn-bag towers vae

prints cold / warm / all test NDCG@20 per model and seed, then mean ± std and each
model's ratio to `knn-warm` and to popularity; `--json FILE` keeps every figure.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch

from coldstart import artifacts
from coldstart.evaluate import SplitData, evaluate


def cache_root(path: str | None) -> Path:
    base = Path(path) if path else Path(os.environ.get("COLDSTART_CACHE", Path.home() / ".cache" / "coldstart"))
    return base / "quality"


def prepare(dataset: str, cold: str, seed: int, root: Path, encoder, embeddings: str = "embeddings",
            item_template: str | None = None) -> Path:
    """Split, LLM vectors (embed job's format, in `embeddings`; items rendered by `item_template` where given)
    and backbone for one seed; reused when present."""
    from coldstart.data import movielens
    from coldstart.data.schema import load_dataset
    from coldstart.data.split import make_split, save_split
    from coldstart.models.vectors import write_vectors
    from coldstart.text.templates import TextTemplates, item_texts, user_texts

    folder = root / f"{dataset}-{cold}-{seed}"
    if not (folder / "split" / "split.json").is_file():
        ds = load_dataset(movielens.fetch(dataset), name=dataset)
        save_split(make_split(ds, cold, seed), folder / "split")
    from coldstart.data.split import load_split

    split = load_split(folder / "split")
    emb = folder / embeddings
    if not (emb / "embed.json").is_file():
        templates = TextTemplates(**({"item": item_template} if item_template else {}))
        items = item_texts(split.items, templates)
        all_users = sorted(set().union(*(set(f["user_id"]) for f in split.sets.values())))
        users = user_texts(split.users, split.train, split.items, templates, all_users)
        write_vectors(emb / "items.parquet", "item_id", items["item_id"], encoder.encode(list(items["text"])))
        write_vectors(emb / "users.parquet", "user_id", users["user_id"], encoder.encode(list(users["text"])))
        artifacts.write_json(emb / "embed.json", {"encoder": encoder.cfg.model_dump(), "dim": encoder.dim,
                                                  "templates": templates.model_dump()})
    if not (folder / "backbone" / "model.json").is_file():
        from trainers.backbone import BackboneConfig, BackboneJob
        from trainers.loop import LocalContext, fit

        data = SplitData.from_split(split)
        job = BackboneJob(BackboneConfig(split=folder / "split", out=folder / "unused", seed=seed), data=data)
        started = time.perf_counter()
        stopping = fit(job, LocalContext(folder=folder / "backbone-run"))
        artifacts.write_json(folder / "backbone-run" / "summary.json",
                             {"best": stopping.best, "seconds": time.perf_counter() - started})
        import shutil

        shutil.copytree(folder / "backbone-run" / "best", folder / "backbone")
    return folder


def remembered(encode, cache):
    """`encode` over the vector cache the embed job keeps (`coldstart.text.vector_cache.VectorCache`): each text
    is looked up by its hash first, and what is encoded is kept there (empty texts are neither, as in the job),
    so seeds, templates and later runs share their vectors."""
    from coldstart.text.templates import text_hash

    def encode_once(texts: list[str]) -> np.ndarray:
        hashes = [text_hash(t) for t in texts]
        found = cache.lookup(h for t, h in zip(texts, hashes) if t.strip())
        missing = list(dict.fromkeys(t for t, h in zip(texts, hashes) if h not in found))
        if missing:
            made = dict(zip(map(text_hash, missing), encode(missing)))
            written = [text_hash(t) for t in missing if t.strip()]
            cache.add(written, [made[h] for h in written])
            found.update(made)
        return np.stack([found[h] for h in hashes]) if texts else encode(texts)

    return encode_once


def run_models(folder: Path, seed: int, names: list[str], features: str,
               embeddings: str = "embeddings") -> dict[str, dict]:
    """{model: evaluate() on test} for the named models over one prepared seed."""
    from benchmarks.quality_models import MODELS, Inputs

    inputs = Inputs.load(folder, seed, features, embeddings)
    out = {}
    for name in names:
        started = time.perf_counter()
        recommender = MODELS[name](inputs)
        out[name] = evaluate(recommender, inputs.data, on="test", ks=(20,))
        out[name]["val"] = evaluate(recommender, inputs.data, on="val", ks=(20,))
        out[name]["seconds"] = time.perf_counter() - started
        print(f"  {name:28s} cold {out[name]['cold']['ndcg@20']:.4f} warm {out[name]['warm']['ndcg@20']:.4f} "
              f"all {out[name]['all']['ndcg@20']:.4f} (val cold {out[name]['val']['cold']['ndcg@20']:.4f}, "
              f"{out[name]['seconds']:.0f} s)", flush=True)
    return out


def summary(results: dict[int, dict[str, dict]], names: list[str], group: str = "cold") -> str:
    lines = [f"| model | {group} NDCG@20 mean ± std | per seed | vs knn-warm | vs popularity |", "|---|---|---|---|---|"]
    means = {}
    for name in names:
        values = np.array([results[s][name][group]["ndcg@20"] for s in results])
        means[name] = values
    for name in names:
        v = means[name]
        ratio = lambda base: f"{v.mean() / means[base].mean():.3f}x" if base in means else "n/a"  # noqa: E731
        lines.append(f"| {name} | {v.mean():.4f} ± {v.std():.4f} | {', '.join(f'{x:.4f}' for x in v)} | "
                     f"{ratio('knn-warm')} | {ratio('popularity')} |")
    return "\n".join(lines)


def against_first(runs: dict[str, dict[int, dict[str, dict]]], names: list[str], group: str = "cold") -> str:
    """Each run (e.g. an item template) against the first, per model: test mean ± std over seeds, the ratio of
    means, the paired t-test's p over seeds, the seeds it leads on, and val's ratio."""
    from scipy.stats import ttest_rel

    first = next(iter(runs.values()))
    lines = [f"| run | model | {group} NDCG@20 mean ± std | vs the first | paired p | ahead on | val vs the first |",
             "|---|---|---|---|---|---|---|"]
    for run, results in runs.items():
        seeds = sorted(results)
        for name in names:
            test, base = (np.array([r[s][name][group]["ndcg@20"] for s in seeds]) for r in (results, first))
            val, base_val = (np.array([r[s][name]["val"][group]["ndcg@20"] for s in seeds]) for r in (results, first))
            p = float(ttest_rel(test, base).pvalue) if results is not first and len(seeds) > 1 else float("nan")
            lines.append(f"| {run} | {name} | {test.mean():.4f} ± {test.std():.4f} | {test.mean() / base.mean():.3f}x | "
                         f"{p:.2f} | {int((test > base).sum())} of {len(seeds)} | {val.mean() / base_val.mean():.3f}x |")
    return "\n".join(lines)


def main() -> None:
    from benchmarks.quality_models import MODELS
    from coldstart.text.encoder import TextEncoder

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--cold", default="items")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    parser.add_argument("--models", nargs="+", default=["popularity", "knn-warm", "towers"])
    parser.add_argument("--features", nargs="+", default=["both"], choices=["text", "attributes", "both"])
    parser.add_argument("--encoder", default="default", help="Text encoder: 'default' (all-MiniLM-L6-v2), "
                                                              "'all-mpnet-base-v2' (make install-mpnet) or a "
                                                              "model folder; each keeps its own vectors.")
    parser.add_argument("--item-template", nargs="+", default=[None],
                        help="item text templates to compare (e.g. '{title} ({year})'); default: the shipped one")
    parser.add_argument("--cache")
    parser.add_argument("--json")
    args = parser.parse_args()
    unknown = set(args.models) - set(MODELS)
    if unknown:
        parser.error(f"unknown models {sorted(unknown)}; known: {sorted(MODELS)}")
    torch.set_num_threads(int(os.environ.get("QUALITY_THREADS", "2")))
    root = cache_root(args.cache)
    from coldstart.text.encoder import EncoderConfig
    from coldstart.text.templates import TextTemplates
    from coldstart.text.vector_cache import VectorCache

    encoder = TextEncoder(EncoderConfig(model=args.encoder))
    encoder.encode = remembered(encoder.encode, VectorCache.for_encoder(encoder.cfg))
    everything = {}
    for template in args.item_template:
        embeddings = "embeddings" if args.encoder == "default" else f"embeddings-{Path(args.encoder).name}"
        if template:
            embeddings += f"-items-{TextTemplates(item=template).fingerprint()}"
        for features in args.features:
            results = {}
            for seed in args.seeds:
                print(f"{args.dataset} {args.cold}-cold seed {seed}, features {features}, encoder {args.encoder}"
                      + (f", item template {template!r}" if template else ""), flush=True)
                folder = prepare(args.dataset, args.cold, seed, root, encoder, embeddings, template)
                results[seed] = run_models(folder, seed, args.models, features, embeddings)
            everything[features if not template else f"{features} {template}"] = results
            for group in ("cold", "warm", "all"):
                print(f"\n{args.dataset} {args.cold}-cold, features {features}, seeds {args.seeds}, test"
                      + (f", item template {template!r}" if template else "") + ":\n")
                print(summary(results, args.models, group))
    if len(everything) > 1:
        print(f"\n{args.dataset} {args.cold}-cold, seeds {args.seeds}, each run against the first:\n")
        print(against_first(everything, args.models))
    if args.json:
        artifacts.write_json(args.json, everything)


if __name__ == "__main__":
    main()
