"""Does what a new user says count? Genre precision@10 of first-person texts, over HTTP.

For every genre of the catalogue, a new user's profile holds only the text
"I love {genre} movies. {Genre} is my favourite genre."; the endpoint's top 10
are scored by the share of items of that genre. The same share is given for
the popularity list (what a profile that said nothing would get) and for the
catalogue as a whole. A few texts a real person might write follow, with their
top titles. The app is the real HTTP API (`coldstart.serving.routes`) over the
artifacts, in one uvicorn process.

    python -m benchmarks.stated_interest --artifacts out/demo [--text-weight 1.0] [--stated-share 0.7]
"""

from __future__ import annotations

import argparse
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

from coldstart.serving.slots import STATED_SHARE

FREE_TEXTS = ("slow science fiction, nothing with zombies",
              "funny animated films I can watch with my kids",
              "dark crime stories about the mafia",
              "old black-and-white detective films",
              "I cry at every romantic movie")


def genre_table(artifacts: Path, column: str = "genres") -> pd.DataFrame:
    """item_id -> set of genres, from the artifacts' copy of the split."""
    from coldstart.data.split import load_split

    items = load_split(Path(artifacts) / "split").items
    genres = items[column].fillna("").map(lambda v: {g.strip() for g in str(v).split("|") if g.strip()})
    return pd.DataFrame({"item_id": items["item_id"], "genres": genres, "title": items.get("title")})


def start_app(artifacts: Path, store: Path, text_weight: float, stated_share: float = STATED_SHARE) -> tuple[str, object]:
    """The HTTP API over the artifacts in this process (a thread); returns its URL and the server."""
    import uvicorn

    from coldstart.serving.routes import create_api
    from coldstart.serving.service import local_service

    service = local_service(artifacts, store, text_weight=text_weight, stated_share=stated_share)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_api(service), host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    deadline = time.monotonic() + 60
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    return f"http://127.0.0.1:{port}", server


def measure(url: str, genres: pd.DataFrame, popular: list[str], k: int = 10,
            skip: tuple[str, ...] = ()) -> pd.DataFrame:
    """One row per genre (but those in `skip`): precision@k of its stated-interest text, of the popularity list,
    and its share of the catalogue."""
    import httpx

    by_item = dict(zip(genres["item_id"], genres["genres"]))
    names = sorted(set().union(*genres["genres"]) - set(skip))
    rows = []
    with httpx.Client(base_url=url, timeout=60) as client:
        for genre in names:
            text = f"I love {genre} movies. {genre} is my favourite genre."
            answer = client.post("/v1/recommend", json={"profile": {"text": text}, "k": k})
            answer.raise_for_status()
            items = [i["item_id"] for i in answer.json()["items"]]
            hit = lambda ids: float(np.mean([genre in by_item.get(i, ()) for i in ids])) if ids else 0.0  # noqa
            rows.append({"genre": genre, "stated": hit(items), "popularity": hit(popular[:k]),
                         "catalogue": float(np.mean([genre in g for g in genres["genres"]]))})
    return pd.DataFrame(rows)


def free_texts(url: str, genres: pd.DataFrame, k: int = 5) -> list[str]:
    import httpx

    titles = dict(zip(genres["item_id"], genres["title"]))
    lines = []
    with httpx.Client(base_url=url, timeout=60) as client:
        for text in FREE_TEXTS:
            items = client.post("/v1/recommend", json={"profile": {"text": text}, "k": k}).json()["items"]
            lines.append(f'- "{text}": ' + "; ".join(str(titles.get(i["item_id"], i["item_id"])) for i in items))
    return lines


def popularity_list(artifacts: Path) -> list[str]:
    from coldstart.data.split import load_split

    return list(load_split(Path(artifacts) / "split").train["item_id"].value_counts().index)


def main() -> None:
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifacts", type=Path, required=True)
    parser.add_argument("--text-weight", type=float, nargs="+", default=[1.0])
    parser.add_argument("--stated-share", type=float, default=STATED_SHARE,
                        help="share of the slots for items of a genre the text names (default: the endpoint's)")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--skip", nargs="*", default=["unknown"],
                        help="Genre values that are no genre (MovieLens marks an item without one 'unknown').")
    args = parser.parse_args()
    genres = genre_table(args.artifacts)
    popular = popularity_list(args.artifacts)
    for weight in args.text_weight:
        with tempfile.TemporaryDirectory() as store:
            url, server = start_app(args.artifacts, Path(store), weight, args.stated_share)
            table = measure(url, genres, popular, args.k, tuple(args.skip))
            examples = free_texts(url, genres)
            server.should_exit = True
        above = int((table["stated"] > table["catalogue"]).sum())
        print(f"\ntext weight {weight}, stated share {args.stated_share}: mean genre precision@{args.k} {table['stated'].mean():.3f} "
              f"(popularity list {table['popularity'].mean():.3f}, catalogue share {table['catalogue'].mean():.3f}); "
              f"{above} of {len(table)} genres above their catalogue share"
              + (f" (not a genre, skipped: {', '.join(args.skip)})" if args.skip else "") + "\n")
        print("| genre | stated text | popularity list | catalogue share |\n|---|---|---|---|")
        for row in table.itertuples():
            print(f"| {row.genre} | {row.stated:.2f} | {row.popularity:.2f} | {row.catalogue:.2f} |")
        print("\n" + "\n".join(examples))


if __name__ == "__main__":
    main()
