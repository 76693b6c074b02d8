"""One reading of entity columns: loaders, templates, one-hots and title matching agree on odd values."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from coldstart.data.columns import clean_entity_table, read_year
from coldstart.data.schema import load_dataset, save_dataset, validate
from coldstart.data.split import load_split, make_split, save_split
from coldstart.features import AttributeEncoder
from coldstart.models.transfer import match_items, match_key
from coldstart.text.templates import MOVIELENS_ITEM, render
from coldstart.testing import make_tables


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno == logging.WARNING and r.name == "coldstart.data.columns"]


def _items(**columns) -> pd.DataFrame:
    n = len(next(iter(columns.values())))
    return pd.DataFrame({"item_id": [f"i{j}" for j in range(n)], **columns})


def test_junk_years_read_as_missing_with_one_warning_naming_file_column_and_example(caplog):
    items = _items(year=["1995", "unkonwn", "", None, "1e30", "1987.0", "n/a"])
    caplog.set_level(logging.WARNING)
    out = clean_entity_table(items, "item_id", file="items.csv")
    assert str(out["year"].dtype) == "Int64"
    assert out["year"].tolist() == [1995, pd.NA, pd.NA, pd.NA, pd.NA, 1987, pd.NA]
    (message,) = _warnings(caplog)
    # blanks and nulls are plain missing values; only the three given-but-unreadable ones count
    assert "items.csv" in message and "'year'" in message and " 3 " in message and "'unkonwn'" in message


def test_float_years_become_whole_years_and_non_finite_ones_missing(caplog):
    caplog.set_level(logging.WARNING)
    out = clean_entity_table(_items(release_year=[1995.0, np.nan, np.inf]), "item_id", file="f")
    assert out["release_year"].tolist() == [1995, pd.NA, pd.NA]
    assert len(_warnings(caplog)) == 1  # the infinity; NaN was already missing


def test_read_year_reads_single_values_as_the_column_reading_does():
    assert read_year("1995") == 1995
    assert read_year(1995.0) == 1995
    assert read_year(" 1995 ") == 1995
    assert read_year("unkonwn") is None
    assert read_year(None) is None
    assert read_year(pd.NA) is None
    assert read_year([1995]) is None


def test_empty_titles_are_missing_and_titles_are_stripped(caplog):
    items = _items(title=["  Heat ", " ", "", None, "Casino"])
    caplog.set_level(logging.WARNING)
    out = clean_entity_table(items, "item_id", file="items.csv")
    assert out["title"].iloc[0] == "Heat" and out["title"].iloc[4] == "Casino"
    assert out["title"].isna().tolist() == [False, True, True, True, False]
    (message,) = _warnings(caplog)
    assert "items.csv" in message and "'title'" in message and "2 empty title" in message


@pytest.mark.parametrize("raw", ["Action, Comedy", "Action;Comedy", "Action||Comedy|", " Action | Comedy ",
                                 "Action|Comedy"])
def test_genre_lists_read_as_pipe_joined_whatever_the_separators(raw):
    assert clean_entity_table(_items(genres=[raw]), "item_id")["genres"].iloc[0] == "Action|Comedy"


@pytest.mark.parametrize(("raw", "warned"), [("Action, Comedy", True), ("Action;Comedy", True),
                                             ("Action||Comedy|", True), (" Action | Comedy ", False),
                                             ("Action|Comedy", False)])
def test_only_genre_values_changed_beyond_spacing_are_warned_about(caplog, raw, warned):
    caplog.set_level(logging.WARNING)
    clean_entity_table(_items(genres=[raw, "Drama"]), "item_id", file="items.csv")
    assert len(_warnings(caplog)) == int(warned)
    if warned:
        assert "'genres'" in caplog.text and repr(raw) in caplog.text


def test_list_columns_by_name_or_by_their_pipes():
    items = _items(tags=["a; b", "|", np.nan], blurb=["a | b", "c|d", "x, y"], note=["a|b", "c, d", "e"])
    out = clean_entity_table(items, "item_id")
    assert out["tags"].iloc[0] == "a|b" and out["tags"].isna().tolist() == [False, True, True]
    assert out["blurb"].tolist() == ["a|b", "c|d", "x, y"]  # found by its pipes: commas stay text
    pd.testing.assert_series_equal(out["note"], items["note"])  # one value in three with a pipe: free text


def test_one_warning_per_column_and_the_input_is_left_alone(caplog):
    items = _items(title=["A", " ", ""], year=["x", "y", "1990"], genres=["a,b", "c;d", "e"], other=["x", "", "?"])
    before = items.copy()
    caplog.set_level(logging.WARNING)
    clean_entity_table(items, "item_id", file="shop/items.csv")
    messages = _warnings(caplog)
    assert len(messages) == 3
    assert all(m.startswith("shop/items.csv") for m in messages)
    for column, example in (("title", "' '"), ("year", "'x'"), ("genres", "'a,b'")):
        assert sum(f"'{column}'" in m and example in m for m in messages) == 1
    pd.testing.assert_frame_equal(items, before)


def test_clean_generated_tables_come_out_identical(caplog):
    _, items, users = make_tables()
    caplog.set_level(logging.WARNING)
    pd.testing.assert_frame_equal(clean_entity_table(items, "item_id", file="items"), items)
    pd.testing.assert_frame_equal(clean_entity_table(users, "user_id", file="users"), users)
    assert _warnings(caplog) == []


def test_clean_movielens_like_tables_come_out_identical(caplog):
    """The shape `coldstart.data.movielens.convert` writes: object text, Int64 years with a gap."""
    items = pd.DataFrame({
        "item_id": ["1", "2", "267"],
        "title": ["Toy Story (1995)", "GoldenEye (1995)", "unknown"],
        "year": pd.array([1995, 1995, None], dtype="Int64"),
        "genres": ["Animation|Children's|Comedy", "Action|Adventure|Thriller", "unknown"],
    }).astype({"item_id": object, "title": object, "genres": object})
    users = pd.DataFrame({"user_id": ["1", "2"], "age": [24, 53], "gender": ["M", "F"],
                          "occupation": ["technician", "other"], "zip_code": ["85711", "94043"]})
    caplog.set_level(logging.WARNING)
    pd.testing.assert_frame_equal(clean_entity_table(items, "item_id", file="ml.item"), items)
    pd.testing.assert_frame_equal(clean_entity_table(users, "user_id", file="ml.user"), users)
    assert _warnings(caplog) == []


def test_validate_reads_items_and_users_and_names_the_file(caplog):
    interactions, items, users = make_tables(n_users=8, n_items=12, per_user=4)
    items["year"] = items["year"].astype(object)
    items.loc[3, "year"] = "unkonwn"
    users["birth_year"] = ["?"] + [1970] * (len(users) - 1)
    caplog.set_level(logging.WARNING)
    ds = validate(interactions, items, users, files={"items": "my/items.csv", "users": "my/users.csv"})
    assert pd.isna(ds.items.loc[3, "year"]) and str(ds.items["year"].dtype) == "Int64"
    assert pd.isna(ds.users.loc[0, "birth_year"])
    messages = _warnings(caplog)
    assert any("my/items.csv" in m and "'unkonwn'" in m for m in messages)
    assert any("my/users.csv" in m and "'birth_year'" in m for m in messages)


def _csv_split_with_junk(tmp_path):
    interactions, items, users = make_tables(n_users=16, n_items=24, per_user=6)
    folder = save_split(make_split(validate(interactions, items, users), "items", seed=0), tmp_path / "split")
    items = pd.read_parquet(folder / "items.parquet").astype({"year": object})
    items.loc[0, "year"] = "unkonwn"
    items.loc[1, "title"] = "   "
    items.loc[2, "genres"] = "Action, Comedy"
    (folder / "items.parquet").unlink()
    items.to_csv(folder / "items.csv", index=False)
    return folder


def test_a_csv_split_with_junk_values_loads_saves_and_reloads(tmp_path, caplog):
    folder = _csv_split_with_junk(tmp_path)
    caplog.set_level(logging.WARNING)
    split = load_split(folder)
    assert len(_warnings(caplog)) == 3 and all("items.csv" in m for m in _warnings(caplog))
    assert pd.isna(split.items.loc[0, "year"]) and pd.isna(split.items.loc[1, "title"])
    assert split.items.loc[2, "genres"] == "Action|Comedy"
    save_split(split, tmp_path / "again")
    caplog.clear()
    again = load_split(tmp_path / "again")
    assert _warnings(caplog) == []  # read once, clean for good
    pd.testing.assert_frame_equal(again.items, split.items, )
    assert str(again.items["year"].dtype) == "Int64"


def test_a_dataset_with_junk_values_loads_and_saves(tmp_path):
    interactions, items, users = make_tables(n_users=8, n_items=12, per_user=4)
    src = tmp_path / "src"
    src.mkdir()
    items["year"] = items["year"].astype(object)
    items.loc[0, "year"] = "unkonwn"
    for name, frame in (("interactions", interactions), ("items", items), ("users", users)):
        frame.to_csv(src / f"{name}.csv", index=False)
    ds = load_dataset(src)
    save_dataset(ds, tmp_path / "out")
    assert pd.isna(load_dataset(tmp_path / "out").items.loc[0, "year"])


def test_an_object_column_of_mixed_years_saves_as_parquet(tmp_path):
    interactions, items, users = make_tables(n_users=8, n_items=12, per_user=4)
    items["year"] = [1990, "1991", "unkonwn", 1993.0] + [2000] * (len(items) - 4)  # pyarrow refuses this mix
    save_dataset(validate(interactions, items, users), tmp_path / "out")
    assert load_dataset(tmp_path / "out").items["year"].iloc[:4].tolist() == [1990, 1991, pd.NA, 1993]


def test_match_key_never_raises_and_a_missing_title_has_no_key():
    assert match_key("Heat", "unkonwn") == match_key("Heat", None) == "heat ()"
    assert match_key("Heat", pd.NA) == "heat ()"
    assert match_key("Heat", "1995") == match_key("Heat", 1995.0) == "heat (1995)"
    assert match_key(np.nan, 1995) is None
    assert match_key(pd.NA, 1995) is None
    assert match_key("(1995)", 1995) is None


def test_missing_titles_never_match_each_other():
    source = pd.DataFrame({"item_id": ["s1", "s2", "s3"], "title": [np.nan, "Heat", "  "], "year": [1995] * 3})
    target = pd.DataFrame({"item_id": ["t1", "t2"], "title": [np.nan, ""], "year": [1995, 1995]})
    assert match_items(source, target).isna().all()


def test_missing_and_junk_years_match_on_title_with_an_empty_year():
    source = pd.DataFrame({"item_id": ["s1", "s2"], "title": ["Heat", "Babe"],
                           "year": pd.array([None, 1995], dtype="Int64")})
    target = pd.DataFrame({"item_id": ["t1", "t2"], "title": ["heat", "Babe"], "year": ["unkonwn", "1995"]})
    assert match_items(source, target).to_dict() == {"t1": "s1", "t2": "s2"}


@pytest.mark.parametrize("side", ["source", "target"])
def test_a_table_without_titles_matches_nothing(side):
    tables = {"source": pd.DataFrame({"item_id": ["s1"], "title": ["Heat"], "year": [1995]}),
              "target": pd.DataFrame({"item_id": ["t1"], "title": ["Heat"], "year": [1995]})}
    tables[side] = tables[side].drop(columns="title")
    matched = match_items(tables["source"], tables["target"])
    assert matched.index.tolist() == ["t1"] and matched.isna().all()


def test_tables_without_years_match_on_titles_alone():
    source = pd.DataFrame({"item_id": ["s1", "s2"], "title": ["Usual Suspects, The", "Heat"]})
    target = pd.DataFrame({"item_id": ["t1", "t2"], "title": ["The Usual Suspects", "Casino"]})
    matched = match_items(source, target)
    assert matched["t1"] == "s1" and pd.isna(matched["t2"])


def test_templates_render_the_cleaned_table_without_empty_brackets():
    items = _items(title=["Movie 3", " Movie 4 "], year=["unkonwn", "1995"], genres=["Action; Comedy", "Drama"])
    cleaned = clean_entity_table(items, "item_id")
    expected = ["Movie 3. Genres: Action, Comedy.", "Movie 4 (1995). Genres: Drama."]
    assert render(MOVIELENS_ITEM, cleaned, "item_id") == expected
    assert render(MOVIELENS_ITEM, items, "item_id") == expected  # a raw table reads the same


def _encoder_and_cleaned():
    items = _items(year=["1995", "unkonwn", "1987", "2003"],
                   genres=["Action|Comedy", "Drama", "Action, Drama", "Comedy"])
    cleaned = clean_entity_table(items, "item_id")
    return AttributeEncoder.fit(cleaned, "item_id"), cleaned


def test_one_hots_of_the_cleaned_table_give_a_missing_year_no_decade_bit():
    encoder, cleaned = _encoder_and_cleaned()
    kinds = {c["name"]: (c["kind"], c["values"]) for c in encoder.columns}
    assert kinds["year"] == ("decade", [1980, 1990, 2000])
    assert kinds["genres"] == ("multi", ["Action", "Comedy", "Drama"])
    matrix = encoder.transform(cleaned)
    decades = matrix[:, :3]
    assert (decades[1] == 0).all() and (decades[[0, 2, 3]] > 0).sum(axis=1).tolist() == [1, 1, 1]


@pytest.mark.parametrize("year", ["1995", 1995, 1995.0, np.int64(1995)])
def test_one_hots_of_a_serving_row_read_its_year_whatever_its_type(year):
    encoder, cleaned = _encoder_and_cleaned()
    row = pd.DataFrame([{"item_id": "", "year": year, "genres": "Action; Comedy"}], dtype=object)
    np.testing.assert_allclose(encoder.transform(row), encoder.transform(cleaned.iloc[[0]]))


@pytest.mark.parametrize("year", ["soon", "", np.inf, [1995]])
def test_one_hots_of_a_serving_row_with_an_unreadable_year_have_no_decade_bit(year):
    encoder, _ = _encoder_and_cleaned()
    row = pd.DataFrame([{"item_id": "", "year": year, "genres": "Drama"}], dtype=object)
    vector = encoder.transform(row)[0]
    assert (vector[:3] == 0).all() and vector[3:].sum() > 0
