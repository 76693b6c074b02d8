"""What a stated interest is worth to a user (`benchmarks/stated_interest_users.py`), on the tiny serving artifacts.

Every generated user likes one genre; half their items are what they tell, the
other half what is scored. Saying that genre must rank their held items above
the popularity list.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from benchmarks.stated_interest_users import genre_shares, measure, ndcg, popularity, stated_genre
from coldstart.data.split import load_split


def test_the_stated_genre_is_the_one_watched_out_of_proportion():
    genres = {"a": {"Drama"}, "b": {"Drama", "Horror"}, "c": {"Horror"}, "d": {"Drama"}, "e": {"Comedy"}}
    base = {"Drama": 0.5, "Horror": 0.05, "Comedy": 0.2}
    assert stated_genre(["a", "b", "c", "d"], genres, base) == "Horror"  # 2 of 4 against 5%: Drama is 3 of 4 / 50%
    assert stated_genre(["a", "c", "e"], genres, base) is None  # no genre told twice


def test_saying_the_genre_a_user_likes_ranks_their_items_above_popularity(serving_artifacts, tmp_path):
    split = load_split(serving_artifacts / "split")
    users_table = split.users.astype({"user_id": str}).set_index("user_id")
    pairs = pd.concat([split.train, split.sets["warm_test"]]).astype({"user_id": str, "item_id": str})
    users = []
    for user, items in list(pairs.groupby("user_id")["item_id"])[:12]:
        items = sorted(set(items))
        users.append({"user_id": user, "told": items[::2], "held": set(items[1::2]),
                      "attributes": {"age": int(users_table.loc[user, "age"])}})
    scores = measure(serving_artifacts, users, text_weight=1.0, store=tmp_path / "store")
    assert set(scores) == {"attributes", "text", "attributes + text", "attributes + titles", "attributes + liked"}
    assert all(len(v) == len(users) for v in scores.values())
    genres, base = genre_shares(serving_artifacts)
    assert all(stated_genre(u["told"], genres, base) for u in users)
    assert np.mean(scores["text"]) > np.mean(popularity(serving_artifacts, users)) + 0.2
    assert ndcg(["x", "y"], {"x"}) == 1.0 and ndcg(["y", "x"], {"x"}) < 1.0
