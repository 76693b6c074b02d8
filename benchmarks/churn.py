"""Churn: does what the serving path holds stay within a constant factor of the live set while entities come and go?

Through the request path in this process (`local_service`: the objects the Serve
replicas hold, over a fresh file store), each
round registers `--batch` new items and `--batch` new users (each liking two of
the new items), records an interaction of each new user with a new item, and
then deletes every entity of the round before, so the live set stays the same
size from round to round. After each round it prints the live set, what the
store keeps (the log's bytes and records), the faiss index's
rows, the catalogue's per-entity tables, and the process's resident memory;
at the end, the same for a replica started then over the same store.

    python -m benchmarks.churn --artifacts OUT [--rounds 20] [--batch 50]

Entities registered here are throwaway: the store is a temporary folder.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

import psutil


def held(catalogue) -> dict[str, int]:
    """Sizes of what the catalogue keeps per entity (and what never shrinks, if anything does)."""
    return {"index rows": len(catalogue.index), "item ids": len(catalogue.item_ids),
            "users": len(catalogue.users), "interactions": len(catalogue.interactions),
            "digests": len(catalogue.digests), "deletions": len(catalogue.deletions),
            "item events": sum(len(v) for v in catalogue.item_events.values()),
            "titles": sum(t is not None for t in catalogue.titles)}


def store_size(store) -> dict[str, int]:
    data = Path(store.path).read_bytes()  # the file log
    return {"log bytes": len(data), "log records": data.count(b"\n")}


async def churn(artifacts: Path, store_spec: Path, rounds: int, batch: int) -> list[dict]:
    from coldstart.serving.bodies import NewInteraction, NewItem, NewUser
    from coldstart.serving.service import local_service

    service = local_service(artifacts, store_spec)
    catalogue = service.ranker.target
    process, rows, previous = psutil.Process(), [], None
    for r in range(rounds):
        items = [f"churn-{r}-item-{i}" for i in range(batch)]
        users = [f"churn-{r}-user-{i}" for i in range(batch)]
        for i, item in enumerate(items):
            await service.register_item(NewItem(item_id=item, title=f"Churn film {r} {i}",
                                                 attributes={"genres": "Drama"}, text=f"A story, part {i}."))
        for i, user in enumerate(users):
            await service.register_user(NewUser(user_id=user, liked=[items[i], items[(i + 1) % batch]],
                                                text="I like quiet dramas."))
            await service.record_interaction(NewInteraction(user_id=user, item_id=items[(i + 2) % batch],
                                                            timestamp=float(r)))
        if previous is not None:
            for user in previous[1]:
                await service.delete("user", user)
            for item in previous[0]:
                await service.delete("item", item)
        previous = (items, users)
        rows.append({"round": r + 1, "live registered": catalogue.registered_items + catalogue.registered_users,
                     **store_size(catalogue.store), **held(catalogue),
                     "rss MB": round(process.memory_info().rss / 2**20, 1)})
        print(rows[-1], flush=True)
    # a replica started now replays the store as it is: the deleted entities' records are gone from it
    restarted = local_service(artifacts, store_spec).ranker.target
    rows.append({"round": "restart", "live registered": restarted.registered_items + restarted.registered_users,
                 **store_size(restarted.store), **held(restarted), "rss MB": rows[-1]["rss MB"]})
    print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifacts", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--batch", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        rows = asyncio.run(churn(args.artifacts, Path(scratch) / "store", args.rounds, args.batch))
    first, last, restart = rows[1], rows[-2], rows[-1]  # round 1 deletes nothing yet: compare from round 2 on
    print(f"\n| held | after round {first['round']} | after round {last['round']} | growth | a replica started "
          f"then |")
    print("|---|---|---|---|---|")
    for name in first:
        if name not in ("round", "rss MB"):
            growth = last[name] / first[name] if first[name] else float("nan")
            print(f"| {name} | {first[name]} | {last[name]} | {growth:.2f}x | {restart[name]} |")
    print(f"| rss MB | {first['rss MB']} | {last['rss MB']} | {last['rss MB'] / first['rss MB']:.2f}x | |")


if __name__ == "__main__":
    main()
