"""The embedding job's blocks cut by rows (before) and by work (now), on the texts of a real split.

The demo's embed stage embeds ml-100k's 1,682 item titles and 943 user texts, the
latter about four times as costly each. Sent longest first in blocks of 1,024 rows,
every user text fell into the first block and one actor encoded it while the other
finished the titles and waited; `trainers.embed.cut_blocks` now cuts on cumulative
characters, at least four blocks per actor. Both cuts run through the same actor pool
and cluster, interleaved (rows, work, rows, work, ...), on the same texts.

    python -m benchmarks.embed_blocks [--dataset ml-100k] [--repeats 2] [--replicas 2]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import pandas as pd


def cut_by_rows(lengths, block_rows: int, parts: int) -> list[slice]:
    """The cut before: `block_rows` rows a block, whatever the texts' lengths."""
    return [slice(i, min(i + block_rows, len(lengths))) for i in range(0, len(lengths), block_rows)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--replicas", type=int, default=2)
    args = parser.parse_args()

    import ray

    from coldstart.data import movielens
    from coldstart.data.schema import load_dataset
    from coldstart.data.split import make_split, save_split
    from coldstart.text.templates import TextTemplates
    from trainers import embed
    from trainers.common import local_cluster

    scratch = Path(tempfile.mkdtemp(prefix="embed-blocks-"))
    split = save_split(make_split(load_dataset(movielens.fetch(args.dataset), name=args.dataset), "items", 42),
                       scratch / "split")
    texts, _ = embed.build_texts(split, TextTemplates())
    pending = pd.concat([frame.assign(kind=kind) for kind, frame in texts.items()], ignore_index=True)
    cfg = embed.EmbedConfig(split=split, out=scratch / "out", replicas=args.replicas)
    cuts = {"rows (before)": cut_by_rows, "work (now)": embed.cut_blocks}
    seconds: dict[str, list[float]] = {name: [] for name in cuts}
    ray.init(**local_cluster(4), log_to_driver=False)
    try:
        for _ in range(args.repeats):
            for name, cut in cuts.items():
                embed.cut_blocks, original = cut, embed.cut_blocks
                try:
                    t = time.perf_counter()
                    out = embed.embed_with_ray(pending, cfg, scratch / "work")
                    seconds[name].append(time.perf_counter() - t)
                finally:
                    embed.cut_blocks = original
                assert len(out) == len(pending)
    finally:
        ray.shutdown()
        shutil.rmtree(scratch, ignore_errors=True)
    lengths = pending["text"].str.len()
    print(f"{len(pending)} texts of {args.dataset} (items {len(texts['items'])}, users {len(texts['users'])}; "
          f"mean {lengths.mean():.0f} characters), {args.replicas} actors of one thread, block_rows "
          f"{cfg.block_rows}\n")
    print("| blocks cut by | " + " | ".join(f"run {i + 1} s" for i in range(args.repeats)) + " | best s |")
    print("|---|" + "---|" * (args.repeats + 1))
    for name, times in seconds.items():
        print(f"| {name} | " + " | ".join(f"{t:.1f}" for t in times) + f" | {min(times):.1f} |")
    print(f"\nratio (rows / work, best of each): {min(seconds['rows (before)']) / min(seconds['work (now)']):.2f}x")


if __name__ == "__main__":
    main()
