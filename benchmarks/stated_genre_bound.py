"""How far a list that knows only a user's stated genre can go: an in-sample bound for issue 31.

Issue 31 asks a stated genre for NDCG@20 of 1.1x popularity with genre precision@10 of 0.7. For the
users, told/held halves and stated genres of `stated_interest_users.py` (its `--bound`), this measures

- how many of a user's held items carry the genre they state, against the genre's catalogue share;
- an oracle: for each genre, ONE list shared by every user stating it, built slot by slot with the
  held-out answers in hand (each slot takes the item of largest gain in those users' summed NDCG@20,
  each user's told items left out of their list as the benchmark leaves them out), with at least
  round(10 p) of its top 10 in the genre, for several p;
- the same list built leave-one-out: each user scored on the list fitted to the OTHER users stating
  their genre (a user alone in a genre gets the popularity list, the genre's most popular items
  forced into the top 10 to meet the floor). How much of the oracle is fitting its own answers;
- the same list fitted on the warm (training) users who state the genre, each split in told and held
  halves the same way: a genre-level list learnt without the cold users' answers.

Lists are continued in popularity order past where the greedy stops (ties go to the more popular item).

The oracle sees what it is scored on, so it is an upper bound for lists that know only the stated genre,
not a result. Were no told items left out, greedy would be exact (an item's gain would be the same
at every slot up to the slot's discount, and the best constrained list is the items of largest gain
with the genre's best forced into the top 10); leaving a user's told items out shifts their later
ranks, so there greedy may fall a little short of the best such list (on ml-100k a floor of 5 once
scored a hair above none, which an exact search could not): read the oracle as an estimate of the
bound, not a proof of it.
"""

from __future__ import annotations

import numpy as np

from coldstart.metrics import reference_metrics

TOP = 10  # genre precision is counted in the top 10 (benchmarks/stated_interest.py)
PRECISIONS = (0.0, 0.3, 0.5, 0.7)


def shared_list(held: list[set[str]], told: list[set[str]], candidates: list[str], in_genre: set[str],
                least: int = 0, k: int = 20, top: int = TOP) -> list[str]:
    """One list for all these users, greedily maximising their summed NDCG@k (told items left out per user),
    with at least `least` of its first `top` items in `in_genre`. Ties go to the earlier candidate; the list
    stops, `top` items or more long, where no item left would add to any user's NDCG."""
    index = {item: j for j, item in enumerate(candidates)}
    held_m = np.zeros((len(held), len(candidates)))
    told_m = np.zeros((len(held), len(candidates)), dtype=bool)
    for u, (h, t) in enumerate(zip(held, told)):
        held_m[u, [index[i] for i in h if i in index]] = 1.0
        told_m[u, [index[i] for i in t if i in index]] = True
    ideal = np.array([sum(1 / np.log2(r + 2) for r in range(min(len(h), k))) or 1.0 for h in held])
    genre = np.array([item in in_genre for item in candidates])
    free = np.ones(len(candidates), dtype=bool)
    position = np.zeros(len(held), dtype=int)  # each user's next rank once their told items are left out
    chosen: list[int] = []
    while free.any():
        weight = np.where(position < k, 1 / np.log2(position + 2), 0.0) / ideal
        gain = np.where(free, weight @ held_m, -np.inf)
        slot = len(chosen)
        if slot >= top and gain.max() <= 0:  # no user still in their top k holds any item left: the rest is ties
            break
        if slot < top and least - genre[chosen].sum() >= top - slot and (free & genre).any():
            gain = np.where(genre, gain, -np.inf)  # the rest of the top must be the genre's
        pick = int(np.argmax(gain))
        chosen.append(pick)
        free[pick] = False
        position += ~told_m[:, pick]
    return [candidates[j] for j in chosen]


def _fitted(users: list[dict], order: list[str], in_genre: set[str], least: int, k: int) -> list[str]:
    """`shared_list` for these users, continued in `order` past where the greedy stopped."""
    ranked = shared_list([u["held"] for u in users], [set(u["told"]) for u in users], order, in_genre, least, k)
    chosen = set(ranked)
    return ranked + [i for i in order if i not in chosen]


def user_ndcg(ranked: list[str], user: dict, k: int = 20) -> float:
    """NDCG@k of a shared list for one user, their told items left out (as the benchmark ranks)."""
    told = set(user["told"])
    return reference_metrics([i for i in ranked if i not in told], user["held"], k)[f"ndcg@{k}"]


def _quartiles(values: list[float]) -> str:
    q1, q2, q3 = np.percentile(values, [25, 50, 75])
    return f"{np.mean(values):.3f} | {q1:.3f} | {q2:.3f} | {q3:.3f}"


def print_bound(users: list[dict], stated: list[str | None], genres: dict[str, set[str]],
                base: dict[str, float], order: list[str], popular: list[float], k: int = 20,
                warm: dict[str, list[dict]] | None = None) -> None:
    """The held share of the stated genre, then the oracle's NDCG@k per precision floor against popularity.

    `order`: the catalogue by training counts (the popularity list; the greedy's ties go to the more
    popular item); `popular`: each user's popularity NDCG@k, which users without a stated genre keep;
    `warm`: genre -> the warm users stating it (told and held halves of their training items)."""
    stating = [n for n, g in enumerate(stated) if g]
    carry = {n: {i for i, gs in genres.items() if stated[n] in gs} for n in stating}
    held_share = {n: len(users[n]["held"] & carry[n]) / len(users[n]["held"]) for n in stating}
    rows = {"held items carrying the stated genre": list(held_share.values()),
            "told items carrying it (where it was read)": [len(set(users[n]["told"]) & carry[n])
                                                           / len(users[n]["told"]) for n in stating],
            "the genre's catalogue share (items)": [len(carry[n]) / len(genres) for n in stating],
            "the genre's share of training interactions": [base[stated[n]] for n in stating]}
    print(f"{len(stating)} of {len(users)} users state a genre ({len(set(filter(None, stated)))} genres); "
          f"popularity NDCG@{k} {np.mean(popular):.4f}\n")
    print("| per user stating a genre | mean | quartile 1 | median | quartile 3 |\n|---|---|---|---|---|")
    for name, values in rows.items():
        print(f"| {name} | {_quartiles(values)} |")
    shares = np.asarray(rows["held items carrying the stated genre"])
    print(f"\nheld share >= 0.5: {(shares >= 0.5).sum()} of {len(stating)} users; >= 0.7: {(shares >= 0.7).sum()}\n")

    print("ORACLE: in-sample, it sees the held-out answers, so it is an upper bound for lists that know only the "
          "stated genre, not a result.\nOne list per genre, chosen greedily; users without a stated genre keep "
          "popularity. Leave-one-out: each user's list fitted on the others stating their genre; warm-fitted: on the "
          "warm users stating it.\n")
    print(f"| precision@{TOP} floor | genre items in the oracle's top {TOP} | oracle NDCG@{k} | vs popularity | "
          f"leave-one-out | vs popularity | warm-fitted | vs popularity |\n|---|---|---|---|---|---|---|---|")
    by_genre: dict[str, list[int]] = {}
    for n in stating:
        by_genre.setdefault(stated[n], []).append(n)

    oracle: dict[float, list[float]] = {}
    apart: dict[float, list[float]] = {}
    learnt: dict[float, list[float]] = {}
    for p in PRECISIONS:
        least = round(TOP * p)
        oracle[p], apart[p], learnt[p], precision = list(popular), list(popular), list(popular), []
        for members in by_genre.values():
            in_genre = carry[members[0]]
            ranked = _fitted([users[n] for n in members], order, in_genre, least, k)
            precision += [len(set(ranked[:TOP]) & in_genre) / TOP] * len(members)
            for n in members:
                oracle[p][n] = user_ndcg(ranked, users[n], k)
                others = _fitted([users[m] for m in members if m != n], order, in_genre, least, k)
                apart[p][n] = user_ndcg(others, users[n], k)
            fans = _fitted((warm or {}).get(stated[members[0]], []), order, in_genre, least, k)
            for n in members:
                learnt[p][n] = user_ndcg(fans, users[n], k)
        floor = f"{least} of {TOP}" if least else "none"
        print(f"| {floor} | {np.mean(precision):.2f} | " + " | ".join(
            f"{np.mean(v):.4f} | {np.mean(v) / np.mean(popular):.3f}x" for v in (oracle[p], apart[p], learnt[p]))
              + " |", flush=True)

    print(f"\n| genre | users | held share | oracle, no floor | oracle, 7 of {TOP} | leave-one-out, 7 of {TOP} | "
          f"warm-fitted, 7 of {TOP} | popularity |\n|---|---|---|---|---|---|---|---|")
    for g, members in sorted(by_genre.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        row = (np.mean([values[n] for n in members])
               for values in (held_share, oracle[0.0], oracle[0.7], apart[0.7], learnt[0.7], popular))
        print(f"| {g} | {len(members)} | " + " | ".join(f"{v:.4f}" for v in row) + " |")
