"""A stated interest's taste: the users who favour what was named, the strongest fans leading (issue 31)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from coldstart.serving.profiles import users_taste

pytestmark = pytest.mark.timeout(30)


def _state(shares_of_horror: list[float], per_user: int = 20) -> SimpleNamespace:
    """Warm users, one axis each for their vectors, each with `per_user` training items of which the given share
    are Horror (items 0-19 Horror, 20-39 not)."""
    rows, seen = [], []
    for user, share in enumerate(shares_of_horror):
        horror = int(round(share * per_user))
        rows += [user] * per_user
        seen += list(range(horror)) + list(range(20, 20 + per_user - horror))
    vectors = np.eye(len(shares_of_horror), dtype=np.float32)
    return SimpleNamespace(tastes={}, warm_rows=(np.asarray(rows), np.asarray(seen), vectors),
                           item_ids=[f"i{j}" for j in range(40)], labelled={"genres: Horror": set(range(20))})


def test_the_strongest_fans_lead_a_stated_genres_taste():
    # Horror is half of all training interactions here; users at 100%, 75%, 25% and 0% of Horror
    taste = users_taste(_state([1.0, 0.75, 0.25, 0.0]), ("genres: Horror",))
    # excesses 0.5 and 0.25: squared, the whole-hearted fan weighs four times the lukewarm one (linear: twice)
    assert taste == pytest.approx(np.array([0.8, 0.2, 0.0, 0.0], np.float32))


def test_no_taste_when_nobody_favours_the_named_items():
    assert users_taste(_state([0.5, 0.5]), ("genres: Horror",)) is None
