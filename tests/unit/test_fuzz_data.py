"""Hostile input to the data loaders: every malformed file ends in a DataError naming it, or loads.

The seeded stream in `coldstart/testing/fuzz.py` covers truncated, bit-flipped and garbage files,
invalid UTF-8, bad CSV quoting, wrong column types, nested values, nulls, huge strings, missing
and duplicate columns, and broken split.json / mapping files. The named tests below pin the
leaks the stream found (each raised something other than DataError before its fix).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from coldstart.data import schema
from coldstart.data.importer import ColumnMapping, import_dataset
from coldstart.data.schema import DataError, load_dataset, validate
from coldstart.data.split import load_split
from coldstart.testing import make_tables
from coldstart.testing.fuzz import fuzz, make_case, run_case


def test_every_fuzzed_input_ends_in_a_data_error_naming_its_file_or_loads(tmp_path):
    outcome = fuzz(tmp_path, n=250, seed=0)
    assert outcome["unclean_cases"] == []
    assert outcome["clean"] > 150  # most mutations do break the input: the stream is not all no-ops
    assert outcome["ok"] > 10  # and some leave it valid (BOM, CRLF, a 10 MB title), which must load


def test_the_fuzz_check_flags_an_exception_that_is_not_a_data_error(tmp_path, monkeypatch):
    def leaky(path):
        raise KeyError("user_id")

    monkeypatch.setattr("coldstart.data.schema.read_table", leaky)
    case = next(c for c in (make_case(tmp_path, i, seed=0) for i in range(20)) if c.target == "load_dataset")
    assert run_case(case)[0] == "unclean"


def _source(tmp_path, fmt="csv"):
    inter, items, users = make_tables(n_users=8, n_items=12, per_user=4)
    src = tmp_path / "src"
    src.mkdir()
    for name, frame in (("interactions", inter), ("items", items), ("users", users)):
        getattr(frame, f"to_{fmt}")(src / f"{name}.{fmt}", index=False)
    return src, inter, items, users


def test_byte_string_ids_with_invalid_utf8_are_a_data_error(tmp_path):
    src, inter, _, _ = _source(tmp_path, "parquet")
    inter["user_id"] = [s.encode() + b"\xff" for s in inter["user_id"]]
    inter.to_parquet(src / "interactions.parquet", index=False)
    with pytest.raises(DataError, match="column 'user_id'.*not text or numbers") as err:
        load_dataset(src)
    assert err.value.file == str(src / "interactions.parquet")


def test_nested_ids_are_a_data_error():
    inter, items, users = make_tables(n_users=8, n_items=12, per_user=4)
    items["item_id"] = [{"id": i} for i in items["item_id"]]
    with pytest.raises(DataError, match="items, column 'item_id'.*dict"):
        validate(inter, items, users)


def test_float_ids_beyond_float_precision_stay_distinct():
    frame = pd.DataFrame({"item_id": 1e30 + np.arange(5) * 1e15})
    ids = schema.ids_as_strings(frame, "item_id", file="items")["item_id"]
    assert ids.nunique() == 5  # an int64 cast would have collapsed them all into one id
    small = schema.ids_as_strings(pd.DataFrame({"item_id": [1.0, 2.0]}), "item_id", file="items")
    assert small["item_id"].tolist() == ["1", "2"]  # whole floats below 2**53 still read as integers


def test_duplicate_column_names_in_parquet_are_a_data_error(tmp_path):
    src, _, items, _ = _source(tmp_path)
    (src / "items.csv").unlink()
    table = pa.Table.from_pandas(items, preserve_index=False)
    pq.write_table(table.append_column("item_id", table.column("item_id")), src / "items.parquet")
    with pytest.raises(DataError, match="items.parquet"):
        load_dataset(src)


def test_a_huge_title_loads_and_a_huge_bad_id_gives_a_short_message(tmp_path):
    src, inter, items, _ = _source(tmp_path)
    items.loc[0, "title"] = "T" * (10 << 20)
    items.to_csv(src / "items.csv", index=False)
    assert len(load_dataset(src).items.loc[0, "title"]) == 10 << 20
    inter["user_id"] = inter["user_id"].astype(object)
    inter.loc[0, "user_id"] = "u" * (10 << 20)
    inter.to_csv(src / "interactions.csv", index=False)
    with pytest.raises(DataError) as err:  # the 10 MB id is unknown in users.csv
        load_dataset(src)
    assert len(str(err.value)) < 1000


@pytest.mark.parametrize("raw", [b"interactions: {user_id: us\xff\xfeer}\n", b"interactions: [unclosed\n"])
def test_a_bad_mapping_file_is_a_data_error(tmp_path, raw):
    (tmp_path / "map.yaml").write_bytes(raw)
    with pytest.raises(DataError, match="map.yaml"):
        ColumnMapping.from_yaml(tmp_path / "map.yaml")


def test_a_mapping_that_would_duplicate_a_column_is_a_data_error(tmp_path):
    src, inter, _, _ = _source(tmp_path)
    inter.assign(uid=inter["user_id"]).to_csv(src / "interactions.csv", index=False)
    with pytest.raises(DataError, match="occur twice"):
        import_dataset(src, tmp_path / "out", mapping=ColumnMapping(interactions={"user_id": "uid"}))
    with pytest.raises(DataError, match="more than one"):
        import_dataset(src, tmp_path / "out", mapping=ColumnMapping(interactions={"user_id": "uid", "item_id": "uid"}))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("content", [b'{"cold": "ite', b"[1, 2]", b'{"cold": "items\xff"}'])
def test_a_broken_split_json_is_a_data_error(tiny_split, content):
    (tiny_split / "split.json").write_bytes(content)
    with pytest.raises(DataError, match="split.json"):
        load_split(tiny_split)


def test_an_import_that_fails_while_writing_leaves_no_output_and_keeps_the_old_one(tmp_path, monkeypatch):
    src, *_ = _source(tmp_path)
    out = tmp_path / "out"
    first = import_dataset(src, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real = pd.DataFrame.to_parquet

    def failing(frame, path, *args, **kwargs):
        if str(path).endswith("items.parquet"):  # interactions already written: a half-built folder
            raise OSError(28, "No space left on device")
        return real(frame, path, *args, **kwargs)

    monkeypatch.setattr(pd.DataFrame, "to_parquet", failing)
    with pytest.raises(OSError):
        import_dataset(src, out)
    with pytest.raises(OSError):
        import_dataset(src, tmp_path / "fresh")
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the old import, untouched
    assert len(load_dataset(out).interactions) == len(first.interactions)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "src"]  # no "fresh", no temporary folder

