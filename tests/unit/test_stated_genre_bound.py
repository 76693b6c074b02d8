"""The genre-level oracle of `benchmarks/stated_genre_bound.py` on a hand-made example small enough to check
against every list.

Two users; the genre's items (g1-g3) are few of what they hold, so a floor of 3 genre items in the top 4
costs NDCG: the greedy must pay it, and still do as well as the best list that meets it.
"""

from __future__ import annotations

from itertools import permutations

import numpy as np
import pytest

from benchmarks.stated_genre_bound import shared_list, user_ndcg

pytestmark = pytest.mark.timeout(30)

CANDIDATES = ["x1", "x2", "x3", "g1", "g2", "g3", "x4"]  # in popularity order: ties go left
GENRE = {"g1", "g2", "g3"}
USERS = [{"held": {"x1", "x2", "g1"}, "told": ["g2"]},  # g2 is left out of this user's list
         {"held": {"x1", "x3"}, "told": []}]
K = TOP = 4


def _mean_ndcg(ranked: list[str]) -> float:
    full = list(ranked) + [c for c in CANDIDATES if c not in ranked]
    return float(np.mean([user_ndcg(full, u, K) for u in USERS]))


def _oracle(least: int) -> list[str]:
    return shared_list([u["held"] for u in USERS], [set(u["told"]) for u in USERS], CANDIDATES, GENRE,
                       least=least, k=K, top=TOP)


def test_the_floor_is_kept_and_costs_what_the_best_list_meeting_it_costs():
    free, floored = _oracle(0), _oracle(3)
    assert sum(i in GENRE for i in free[:TOP]) < 3  # the floor binds: ignoring it gives another list
    assert sum(i in GENRE for i in floored[:TOP]) >= 3
    assert _mean_ndcg(floored) < _mean_ndcg(free)
    meeting = [list(p) for p in permutations(CANDIDATES, 5) if sum(i in GENRE for i in p[:TOP]) >= 3]
    assert _mean_ndcg(floored) >= max(_mean_ndcg(p) for p in meeting) - 1e-12
    assert _mean_ndcg(floored) > _mean_ndcg(["g1", "g2", "g3", "x1"])  # a list it could have chosen


def test_without_a_floor_it_is_the_best_list():
    best = max(_mean_ndcg(list(p)) for p in permutations(CANDIDATES, 5))
    assert _mean_ndcg(_oracle(0)) == pytest.approx(best)


def test_a_user_s_told_items_are_left_out_of_their_list():
    assert user_ndcg(["g2", "x1"], USERS[0], K) == user_ndcg(["x1"], USERS[0], K)
