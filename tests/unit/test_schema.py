import logging

import pandas as pd
import pytest

from coldstart.data.schema import DataError, load_dataset, save_dataset, validate
from coldstart.testing import make_tables


def write(folder, interactions, items, users=None, fmt="csv"):
    folder.mkdir(parents=True, exist_ok=True)
    for name, frame in (("interactions", interactions), ("items", items), ("users", users)):
        if frame is None:
            continue
        if fmt == "csv":
            frame.to_csv(folder / f"{name}.csv", index=False)
        else:
            frame.to_parquet(folder / f"{name}.parquet", index=False)
    return folder


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_loads_either_format_with_string_ids(tmp_path, fmt):
    inter, items, users = make_tables()
    inter["user_id"] = inter["user_id"].str[1:].astype(int)  # numeric ids in the file
    users["user_id"] = users["user_id"].str[1:].astype(int)
    ds = load_dataset(write(tmp_path / "d", inter, items, users, fmt))
    assert ds.interactions["user_id"].map(type).eq(str).all()
    assert set(ds.interactions["user_id"]) <= set(ds.users["user_id"])
    assert len(ds.interactions) == len(inter)


def test_save_and_load_round_trip(tmp_path, tiny):
    save_dataset(tiny, tmp_path / "d")
    again = load_dataset(tmp_path / "d")
    pd.testing.assert_frame_equal(again.interactions, tiny.interactions, check_dtype=False)
    assert (tmp_path / "d" / "dataset.json").is_file()


def test_missing_file_names_the_table(tmp_path):
    inter, items, _ = make_tables()
    folder = write(tmp_path / "d", inter, None)
    with pytest.raises(DataError, match="missing table 'items'"):
        load_dataset(folder)


def test_missing_column_names_file_and_column(tmp_path):
    inter, items, _ = make_tables()
    folder = write(tmp_path / "d", inter.drop(columns=["item_id"]), items)
    with pytest.raises(DataError) as err:
        load_dataset(folder)
    assert "interactions.csv" in str(err.value) and "item_id" in str(err.value)


def test_empty_table(tmp_path):
    inter, items, _ = make_tables()
    folder = write(tmp_path / "d", inter.iloc[:0], items, fmt="parquet")
    with pytest.raises(DataError, match="empty"):
        load_dataset(folder)


def test_duplicate_item_ids_name_the_value():
    inter, items, _ = make_tables()
    items.loc[3, "item_id"] = "i7"
    with pytest.raises(DataError) as err:
        validate(inter, items, files={"items": "items.csv"})
    assert "duplicate" in str(err.value) and "'i7'" in str(err.value) and "items.csv" in str(err.value)


def test_null_ids():
    inter, items, _ = make_tables()
    inter.loc[5, "user_id"] = None
    with pytest.raises(DataError, match=r"column 'user_id': 1 null id\(s\), first at row 5"):
        validate(inter, items)


def test_non_numeric_rating_names_the_value():
    inter, items, _ = make_tables()
    inter["rating"] = inter["rating"].astype(object)
    inter.loc[2, "rating"] = "five"
    with pytest.raises(DataError) as err:
        validate(inter, items)
    assert "rating" in str(err.value) and "'five'" in str(err.value)


def test_unknown_items_are_an_error_or_dropped_with_a_count(caplog):
    inter, items, users = make_tables()
    extra = pd.DataFrame({"user_id": ["u1", "u2"], "item_id": ["ghost", "ghost"], "rating": [1.0, 2.0],
                          "timestamp": [1, 2]})
    inter = pd.concat([inter, extra], ignore_index=True)
    with pytest.raises(DataError) as err:
        validate(inter, items, users)
    assert "'ghost'" in str(err.value) and "--drop-unknown" in str(err.value)
    with caplog.at_level(logging.WARNING):
        ds = validate(inter, items, users, drop_unknown=True)
    assert "dropped 2 interaction(s)" in caplog.text
    assert len(ds.interactions) == len(inter) - 2


def test_unknown_users_when_a_users_table_exists():
    inter, items, users = make_tables()
    users = users[users["user_id"] != "u3"]
    with pytest.raises(DataError, match="'u3'"):
        validate(inter, items, users)


def test_unreadable_file_is_a_data_error(tmp_path):
    folder = tmp_path / "d"
    folder.mkdir()
    (folder / "interactions.parquet").write_bytes(b"PAR1 truncated")
    inter, items, _ = make_tables()
    items.to_csv(folder / "items.csv", index=False)
    with pytest.raises(DataError, match="interactions.parquet: cannot read table"):
        load_dataset(folder)


def test_invalid_utf8_csv_is_a_data_error(tmp_path):
    folder = tmp_path / "d"
    folder.mkdir()
    (folder / "interactions.csv").write_bytes(b"user_id,item_id\nu1,\xff\xfe\n")
    inter, items, _ = make_tables()
    items.to_csv(folder / "items.csv", index=False)
    with pytest.raises(DataError, match="interactions.csv"):
        load_dataset(folder)
