import json

import pandas as pd
import pytest

from coldstart.data.schema import DataError
from coldstart.data.split import load_split, make_split, save_split
from coldstart.testing import make_tables
from coldstart.data.schema import validate


@pytest.fixture
def bigger():
    inter, items, users = make_tables(n_users=120, n_items=200, per_user=20, seed=3)
    return validate(inter, items, users, name="bigger")


@pytest.mark.parametrize("cold", ["items", "users"])
def test_split_invariants(bigger, cold):
    split = make_split(bigger, cold, seed=42)
    key = "item_id" if cold == "items" else "user_id"
    sets = split.sets
    train_keys = set(sets["train"][key])
    cold_val, cold_test = set(sets["cold_val"][key]), set(sets["cold_test"][key])

    # No cold entity in train; cold val and test entities are disjoint.
    assert not (cold_val | cold_test) & train_keys
    assert not cold_val & cold_test
    # 20% cold, split 50/50, up to rounding.
    n_entities = bigger.interactions[key].nunique()
    n_cold = len(cold_val | cold_test)
    assert n_cold == n_entities - int(0.8 * n_entities)
    assert len(cold_val) == int(0.5 * n_cold)
    # Every warm val/test user and item occurs in train.
    for name in ("warm_val", "warm_test"):
        assert set(sets[name]["user_id"]) <= set(sets["train"]["user_id"])
        assert set(sets[name]["item_id"]) <= set(sets["train"]["item_id"])
    # All warm interactions are kept, and roughly 80/10/10.
    n_warm = sum(len(sets[n]) for n in ("train", "warm_val", "warm_test"))
    n_cold_rows = len(sets["cold_val"]) + len(sets["cold_test"])
    assert n_warm + n_cold_rows == len(bigger.interactions[["user_id", "item_id"]].drop_duplicates())
    assert len(sets["train"]) >= 0.8 * n_warm - 1
    assert len(sets["warm_val"]) <= int(0.1 * n_warm)


@pytest.mark.parametrize("cold", ["items", "users"])
def test_all_sets_keep_only_warm_side_entities_in_both(bigger, cold):
    split = make_split(bigger, cold, seed=1)
    other = "user_id" if cold == "items" else "item_id"
    for stage in ("val", "test"):
        warm, cold_rows, both = (split.sets[f"warm_{stage}"], split.sets[f"cold_{stage}"],
                                 split.sets[f"all_{stage}"])
        shared = set(warm[other]) & set(cold_rows[other])
        assert set(both[other]) == shared
        expected = len(warm[warm[other].isin(shared)]) + len(cold_rows[cold_rows[other].isin(shared)])
        assert len(both) == expected


def test_same_seed_same_split_other_seed_other_split(bigger):
    a, b, c = make_split(bigger, "items", 42), make_split(bigger, "items", 42), make_split(bigger, "items", 7)
    for name in a.sets:
        pd.testing.assert_frame_equal(a.sets[name], b.sets[name])
    assert a.cold_ids != c.cold_ids


def test_split_does_not_depend_on_row_order(bigger):
    shuffled = bigger.interactions.sample(frac=1.0, random_state=0)
    other = validate(shuffled, bigger.items, bigger.users)
    a, b = make_split(bigger, "items", 42), make_split(other, "items", 42)
    for name in a.sets:
        pd.testing.assert_frame_equal(a.sets[name], b.sets[name])


def test_save_load_round_trip(tmp_path, bigger):
    split = make_split(bigger, "users", 42)
    save_split(split, tmp_path / "s")
    info = json.loads((tmp_path / "s" / "split.json").read_text())
    assert info["protocol"] == "coldrec-v1" and info["seed"] == 42 and info["cold"] == "users"
    assert info["cold_ids"]["test"] == split.cold_ids["test"]
    again = load_split(tmp_path / "s")
    assert again.cold == "users"
    for name in split.sets:
        pd.testing.assert_frame_equal(again.sets[name], split.sets[name], check_dtype=False)


def test_bring_your_own_csv_split_without_json(tmp_path, bigger):
    split = make_split(bigger, "items", 42)
    folder = tmp_path / "byo"
    folder.mkdir()
    for name in ("train", "warm_val", "warm_test", "cold_val", "cold_test"):
        split.sets[name].to_csv(folder / f"{name}.csv", index=False)
    bigger.items.to_csv(folder / "items.csv", index=False)
    loaded = load_split(folder)
    assert loaded.cold == "items"
    assert loaded.cold_ids == split.cold_ids
    assert len(loaded.sets["all_test"]) == len(split.sets["all_test"])


def test_a_cold_entity_leaking_into_train_is_an_error(tmp_path, bigger):
    split = make_split(bigger, "items", 42)
    leaked = split.sets["cold_test"].iloc[:1]
    split.sets["train"] = pd.concat([split.sets["train"], leaked])
    save_split(split, tmp_path / "s")
    with pytest.raises(DataError, match="also occur in train") as err:
        load_split(tmp_path / "s")
    assert leaked["item_id"].iloc[0] in str(err.value)


def test_split_folder_missing_a_set(tmp_path, bigger):
    save_split(make_split(bigger, "items", 42), tmp_path / "s")
    (tmp_path / "s" / "cold_val.parquet").unlink()
    with pytest.raises(DataError, match="missing table 'cold_val'"):
        load_split(tmp_path / "s")
