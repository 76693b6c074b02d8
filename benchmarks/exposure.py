"""New items in mixed lists: a replay of what users click over rounds, through the request path.

On item-cold pipeline artifacts (OUT), the users of the split's `all_{on}` set
are replayed: their held-out interactions there (old and new items) are what
they would click. Each round, every user gets a list of K from
`POST /v1/recommend {"user_id": ...}` (in-process: `local_service`, the objects
the replicas hold, over a fresh store), clicks the listed items among their
held-out ones, and each click is recorded with `POST /v1/interactions`, so a
clicked new item warms up (its vector folds in the clickers'; once its
interactions outweigh its content it competes as an old item) before the next
round; clicked items are seen and not shown again.

Policies, each from the same folder and a fresh store:
- current endpoint: the generator with the best cold-val NDCG@20 (serving.json's
  per-stage record, what was served before the served-path evidence), no slots
  kept for new items;
- no policy: the served generator (serving.json), no slots kept;
- fixed share: the served generator, half of the slots for new items;
- learnt: the served generator with the slots it learnt on validation (serving.json).

    python -m benchmarks.exposure --artifacts OUT [--rounds 5] [--users 400] [--on test] [--shares 0.1 0.2]
        [--new-until 20]

Prints cumulative hits (all items, new items) per round and each policy's
lift over the current endpoint.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

import numpy as np

K = 20
FIXED_SHARE = 0.5


def replay_users(artifacts: Path, on: str, limit: int | None, seed: int = 0) -> dict[str, set[str]]:
    from coldstart.data.split import load_split

    pairs = load_split(Path(artifacts) / "split").sets[f"all_{on}"].astype({"user_id": str, "item_id": str})
    held = {u: set(items) for u, items in pairs.groupby("user_id")["item_id"]}
    users = sorted(held)
    if limit and limit < len(users):
        users = sorted(np.random.default_rng(seed).choice(users, limit, replace=False))
    return {u: held[u] for u in users}


async def _list(service, user: str) -> list[str]:
    from coldstart.serving.bodies import RecommendRequest

    answer = await service.recommend(RecommendRequest(user_id=user, k=K))
    return [i.item_id for i in answer.items]


def simulate(artifacts: Path, held: dict[str, set[str]], generator: str, new_slots,
             rounds: int, new_until: int | None = None) -> list[tuple[int, int]]:
    """Cumulative (hits, new-item hits) after each round; `new_until`: the catalogue's (default if None)."""
    from coldstart.serving.bodies import NewInteraction
    from coldstart.serving.service import local_service

    with tempfile.TemporaryDirectory() as store:
        service = local_service(artifacts, Path(store), generator=generator)
        catalogue = service.ranker.target
        catalogue.new_slots = new_slots
        if new_until is not None:
            catalogue.new_until = new_until
        new = {i for i, cold in zip(catalogue.item_ids, catalogue.item_cold) if cold}
        remaining = {u: set(items) for u, items in held.items()}

        async def run() -> list[tuple[int, int]]:
            totals, hits, new_hits = [], 0, 0
            for step in range(rounds):
                for user, wanted in remaining.items():
                    clicked = [i for i in await _list(service, user) if i in wanted]
                    for item in clicked:
                        wanted.discard(item)
                        await service.record_interaction(NewInteraction(user_id=user, item_id=item,
                                                                        timestamp=float(step)))
                    hits += len(clicked)
                    new_hits += sum(i in new for i in clicked)
                totals.append((hits, new_hits))
            return totals

        return asyncio.run(run())


def policies(artifacts: Path, shares: tuple[float, ...] = ()) -> dict[str, tuple[str, object]]:
    """{policy: (generator, its `Slots` for new items)}; `shares`: more fixed shares to compare."""
    from coldstart.serving.served_models import serving_record
    from coldstart.serving.slots import Slots

    record = serving_record(artifacts)
    served = record["generator"]
    before = record.get("cold_val_ndcg@20") or {served: 0.0}
    current = max(before, key=before.get)
    return {"current endpoint": (current, Slots()), "no policy": (served, Slots()),
            "fixed share": (served, Slots.share(FIXED_SHARE)), "learnt": (served, Slots.served(record, served)),
            **{f"share {share:g}": (served, Slots.share(share)) for share in shares}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifacts", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--users", type=int, default=400, help="users replayed (a seeded sample); 0: all")
    parser.add_argument("--on", default="test", choices=["val", "test"])
    parser.add_argument("--shares", type=float, nargs="*", default=[], help="more fixed shares to compare")
    parser.add_argument("--new-until", type=int, default=None,
                        help="interactions after which an item leaves the new items' slots (default: serving's)")
    args = parser.parse_args()
    held = replay_users(args.artifacts, args.on, args.users or None)
    plan = policies(args.artifacts, tuple(args.shares))
    results = {name: simulate(args.artifacts, held, generator, share, args.rounds, args.new_until)
               for name, (generator, share) in plan.items()}
    base_hits, base_new = results["current endpoint"][-1]
    print(f"{len(held)} users of all_{args.on}, {args.rounds} rounds of {K}\n")
    print("| policy | generator | new items' slots | " + " | ".join(f"round {r + 1} hits (new)" for r in range(args.rounds))
          + " | hits vs current | new-item hits vs current |")
    print("|---|---|---|" + "---|" * args.rounds + "---|---|")
    for name, totals in results.items():
        generator, slots = plan[name]
        hits, new = totals[-1]
        print(f"| {name} | {generator} | {slots} | "
              + " | ".join(f"{h} ({n})" for h, n in totals)
              + f" | {hits / max(base_hits, 1):.3f}x | {new / max(base_new, 1):.3f}x |", flush=True)


if __name__ == "__main__":
    main()
