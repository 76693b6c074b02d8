"""Two splits written the way a user brings their own data, for running every default stage off the demo's path.

- `user-cold/`: a user cold-start split as CSV files, with a users table (age, gender, occupation and a
  free-text `bio` column) and an items table;
- `bare-items/`: an item cold-start split of interactions (user_id, item_id only) and items of ids and
  titles alone, no users table.

    python -m benchmarks.own_splits --out /tmp/own
    coldstart pipeline --split /tmp/own/user-cold --out /tmp/own/user-cold-run --tune.budget 2 ...

HISTORY.md ("Off the demo's path"; summed up in RESULTS.md, "Own splits") lists the settings each run used and
what it found.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from coldstart.data.schema import validate
from coldstart.data.split import make_split
from coldstart.testing import make_tables

SETS = ("train", "warm_val", "warm_test", "cold_val", "cold_test")


def user_cold(folder: Path) -> Path:
    inter, items, users = make_tables(n_users=150, n_items=120, per_user=15, seed=5)
    moods = np.random.default_rng(1).choice(["slow", "funny", "dark"], len(users))
    users = users.assign(bio=[f"I like {m} films." for m in moods])
    split = make_split(validate(inter, items, users), "users", seed=0)
    folder.mkdir(parents=True, exist_ok=True)
    for name in SETS:
        split.sets[name].to_csv(folder / f"{name}.csv", index=False)
    items.to_csv(folder / "items.csv", index=False)
    users.to_csv(folder / "users.csv", index=False)
    return folder


def bare_items(folder: Path) -> Path:
    inter, items, _ = make_tables(n_users=120, n_items=150, per_user=15, seed=7)
    items = items[["item_id", "title"]]
    split = make_split(validate(inter, items, None), "items", seed=1)
    folder.mkdir(parents=True, exist_ok=True)
    for name in SETS:
        split.sets[name][["user_id", "item_id"]].to_csv(folder / f"{name}.csv", index=False)
    items.to_csv(folder / "items.csv", index=False)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    for build, name in ((user_cold, "user-cold"), (bare_items, "bare-items")):
        print(build(Path(args.out) / name))


if __name__ == "__main__":
    main()
