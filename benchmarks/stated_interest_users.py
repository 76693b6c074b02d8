"""What a stated interest is worth to a real new user: NDCG@20 of cold users who say their favourite genre.

`benchmarks/stated_interest.py` asks whether a text steers the list; this asks
whether it makes the list better for real people. On serving artifacts of a
user cold-start run (`coldstart pipeline --cold users`), each cold user of the
split's evaluation set is split in two at random (seed 0): what they would tell
(`told`, half their items) and what is scored (`held`, the other half). From
the told half they "state" the genre they watch most out of proportion, the
genre of highest lift (its share of their told items over its share of all
training interactions, among genres with at least two told items; `--stated
most`: the genre of most told items, ties to the higher lift), in each of
`PHRASINGS` ("I love {genre} movies.", "Mostly {genre} films for me, ...", ...;
the text rows average over them). Each profile is ranked in-process through the served
request path (`coldstart.serving.service.local_service`: encoder, generator,
ranker), the told items left out, and NDCG@20 is taken over the held items:

- popularity: the training interactions' counts (what a service without a profile shows);
- attributes: the split's age, gender, occupation (the cold-user path of the protocol);
- text: the stated genre alone; attributes + text: both;
- attributes + liked: the told items as liked items (what a few first interactions give; a reference);
- attributes + titles: "I loved A, B and C." naming the first three told items as people write titles
  ("The Godfather"), which the catalogue takes as liked (`coldstart.serving.titles`).

A stated genre comes from the user's own held-out history, so these figures are
not comparable with the protocol's user cold-start table, which has attributes
only (RESULTS marks them apart).

    python -m benchmarks.stated_interest_users --artifacts OUT [--stated-share 0.3 0.7] [--stated lift|most] [--on test]

`--bound` measures instead how far any list that knows only the stated genre
could go on the same users (`benchmarks/stated_genre_bound.py`): the share of
their held items in that genre, and per precision floor an in-sample oracle
(one list per genre chosen with the held-out answers in hand) beside the same
list fitted leave-one-out and on the warm users who state the genre.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.stated_genre_bound import print_bound
from coldstart.serving.slots import STATED_SHARE

K = 20
# How people say it: the first is the benchmark's original; none of them is in the tests.
PHRASINGS = ("I love {genre} movies.",
             "Mostly {genre} films for me, that is what I watch on weekends.",
             "Big fan of {lower} - the more the better.",
             "Put on something {lower} and I am happy.",
             "{genre}. Always {lower}.")


def told_and_held(artifacts: Path, on: str = "test", seed: int = 0) -> list[dict]:
    """Per cold user of the `cold_{on}` set (two items or more; `on="train"`: the warm users' training
    items): their attributes, told items and held items."""
    from coldstart.data.split import load_split

    split = load_split(Path(artifacts) / "split")
    users = split.users.astype({"user_id": str}).set_index("user_id")
    pairs = (split.train if on == "train" else split.sets[f"cold_{on}"]).astype({"user_id": str, "item_id": str})
    rng = np.random.default_rng(seed)
    out = []
    for user, items in pairs.groupby("user_id", sort=True)["item_id"]:
        items = np.asarray(sorted(set(items)), dtype=object)
        if len(items) < 2:
            continue
        order = rng.permutation(len(items))
        half = len(items) // 2
        attributes = {k: v for k, v in users.loc[user].items() if pd.notna(v)} if user in users.index else {}
        out.append({"user_id": user, "attributes": {k: (v.item() if hasattr(v, "item") else v)
                                                    for k, v in attributes.items()},
                    "told": list(items[order[:half]]), "held": set(items[order[half:]])})
    return out


def stated_genre(told: list[str], genres: dict[str, set[str]], base: dict[str, float], least: int = 2,
                 by: str = "lift") -> str | None:
    """The genre of highest lift among the told items (its share there over its `base` share), counted at
    least `least` times (`by="most"`: the genre of most told items, ties to the higher lift); None if none is."""
    counts = Counter(g for item in told for g in genres.get(item, ()))
    lifts = {g: n / len(told) / base[g] for g, n in counts.items() if n >= least and base.get(g, 0) > 0}
    key = lifts.get if by == "lift" else (lambda g: (counts[g], lifts[g]))
    return max(sorted(lifts), key=key) if lifts else None


def genre_shares(artifacts: Path, column: str = "genres", skip: tuple[str, ...] = ("unknown",)
                 ) -> tuple[dict[str, set[str]], dict[str, float]]:
    """(item -> its genres, genre -> its share of all training interactions)."""
    from coldstart.data.split import load_split

    split = load_split(Path(artifacts) / "split")
    items = split.items.astype({"item_id": str})
    genres = {i: {g.strip() for g in str(v).split("|") if g.strip() and g.strip() not in skip}
              for i, v in zip(items["item_id"], items[column].fillna(""))}
    trained = split.train["item_id"].astype(str)
    counts = Counter(g for item in trained for g in genres.get(item, ()))
    return genres, {g: n / len(trained) for g, n in counts.items()}


def ndcg(ranked: list[str], held: set[str], k: int = K) -> float:
    from coldstart.metrics import reference_metrics

    return reference_metrics(ranked, held, k)[f"ndcg@{k}"]


def measure(artifacts: Path, users: list[dict], text_weight: float, store: Path,
            stated_share: float = STATED_SHARE, by: str = "lift") -> dict[str, list[float]]:
    """{profile kind: NDCG@20 per user} for one text weight, through the in-process request path; a stated
    genre's rows are each user's mean over `PHRASINGS`."""
    from coldstart.serving.bodies import MAX_K, RecommendRequest
    from coldstart.serving.service import local_service

    from coldstart.data.split import load_split
    from coldstart.serving.titles import spoken_title

    service = local_service(artifacts, store, text_weight=text_weight, stated_share=stated_share)
    genres, base = genre_shares(artifacts)
    items = load_split(Path(artifacts) / "split").items.astype({"item_id": str})
    titles = dict(zip(items["item_id"], items["title"])) if "title" in items.columns else {}

    async def ranked(profile: dict, told: list[str]) -> list[str]:
        k = min(MAX_K, K + len(told))
        answer = await service.recommend(RecommendRequest(profile=profile, k=k))
        left_out = set(told)
        return [i.item_id for i in answer.items if i.item_id not in left_out]

    async def run() -> dict[str, list[float]]:
        scores: dict[str, list[float]] = {}
        for user in users:
            genre = stated_genre(user["told"], genres, base, by=by)
            texts = [p.format(genre=genre, lower=genre.lower()) for p in PHRASINGS] if genre else []
            named = [spoken_title(titles[i]) for i in user["told"][:3] if titles.get(i)]
            said = f"I loved {', '.join(named[:-1])} and {named[-1]}." if len(named) > 1 else \
                (f"I loved {named[0]}." if named else "")
            profiles = {"attributes": {"attributes": user["attributes"]},
                        "attributes + liked": {"attributes": user["attributes"], "liked": user["told"]},
                        "attributes + titles": {"attributes": user["attributes"], "text": said}}
            for kind, profile in profiles.items():
                scores.setdefault(kind, []).append(ndcg(await ranked(profile, user["told"]), user["held"]))
            for kind, base_profile in (("text", {}), ("attributes + text", {"attributes": user["attributes"]})):
                if texts:
                    said_each = [ndcg(await ranked({**base_profile, "text": t}, user["told"]), user["held"])
                                 for t in texts]
                    scores.setdefault(kind, []).append(float(np.mean(said_each)))
            if not texts:  # no genre stands out: the profile says what it can without one
                scores.setdefault("text", []).append(np.nan)
                scores.setdefault("attributes + text", []).append(scores["attributes"][-1])
        return scores

    return asyncio.run(run())


def popular_order(artifacts: Path) -> list[str]:
    """The catalogue's items by training interactions, most first (those never trained on last)."""
    from coldstart.data.split import load_split

    split = load_split(Path(artifacts) / "split")
    order = list(split.train["item_id"].astype(str).value_counts().index)
    return order + sorted(set(split.items["item_id"].astype(str)) - set(order))


def popularity(artifacts: Path, users: list[dict]) -> list[float]:
    order = popular_order(artifacts)
    lists = ([i for i in order[:K + len(told)] if i not in told] for told in (set(u["told"]) for u in users))
    return [ndcg(ranked, u["held"]) for ranked, u in zip(lists, users)]


def paired_interval(a: list[float], b: list[float]) -> tuple[float, float]:
    """95% bootstrap interval over users of mean(a) - mean(b), users without a stated genre (NaN in `a`) left out."""
    from coldstart.serving.evidence import paired_interval as interval

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return interval(a[~np.isnan(a)], b[~np.isnan(a)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifacts", type=Path, required=True)
    parser.add_argument("--text-weight", type=float, nargs="+", default=[1.0])
    parser.add_argument("--stated-share", type=float, nargs="+", default=[STATED_SHARE],
                        help="shares of the slots for items of a named genre (0: the text matched to items' texts)")
    parser.add_argument("--stated", default="lift", choices=["lift", "most"],
                        help="the genre a user states: most out of proportion (lift) or most watched (most)")
    parser.add_argument("--on", default="test", choices=["val", "test"])
    parser.add_argument("--bound", action="store_true",
                        help="instead: the held share of the stated genre and an in-sample oracle of genre-only lists")
    args = parser.parse_args()
    users = told_and_held(args.artifacts, args.on)
    if not users:
        parser.error(f"{args.artifacts}/split has no cold users in cold_{args.on}: run the pipeline with --cold users")
    popular = popularity(args.artifacts, users)
    pop = np.mean(popular)
    genres, base = genre_shares(args.artifacts)
    if args.bound:
        print(f"{len(users)} cold users of cold_{args.on}; stated genre by {args.stated}")
        warm: dict[str, list[dict]] = {}
        for user in told_and_held(args.artifacts, "train"):
            if genre := stated_genre(user["told"], genres, base, by=args.stated):
                warm.setdefault(genre, []).append(user)
        print_bound(users, [stated_genre(u["told"], genres, base, by=args.stated) for u in users], genres, base,
                    popular_order(args.artifacts), popular, K, warm)
        return
    stated = sum(stated_genre(u["told"], genres, base, by=args.stated) is not None for u in users)
    print(f"{len(users)} cold users of cold_{args.on}; {stated} state a genre; popularity NDCG@{K} {pop:.4f}\n")
    print(f"| text weight | stated share | profile | NDCG@{K} | vs popularity | minus attributes alone (95% over "
          f"users) |\n|---|---|---|---|---|---|")
    for weight in args.text_weight:
        for share in args.stated_share:
            with tempfile.TemporaryDirectory() as store:
                scores = measure(args.artifacts, users, weight, Path(store), share, args.stated)
            for kind in ("attributes", "text", "attributes + text", "attributes + titles", "attributes + liked"):
                mean = float(np.nanmean(scores[kind]))
                low, high = paired_interval(scores[kind], scores["attributes"]) if kind != "attributes" else ("", "")
                against = f"{low:+.4f} to {high:+.4f}" if low != "" else "-"
                print(f"| {weight:g} | {share:g} | {kind} | {mean:.4f} | {mean / pop:.3f}x | {against} |", flush=True)

if __name__ == "__main__":
    main()
