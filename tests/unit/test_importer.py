import pytest

from coldstart.data.importer import ColumnMapping, import_dataset
from coldstart.data.schema import DataError, load_dataset
from coldstart.testing import make_tables


def test_import_maps_columns_from_yaml(tmp_path):
    inter, items, users = make_tables()
    src = tmp_path / "src"
    src.mkdir()
    inter.rename(columns={"user_id": "uid", "item_id": "movie", "rating": "stars"}).to_csv(
        src / "interactions.csv", index=False)
    items.rename(columns={"item_id": "movie"}).to_parquet(src / "items.parquet", index=False)
    users.rename(columns={"user_id": "uid"}).to_csv(src / "users.csv", index=False)
    (tmp_path / "map.yaml").write_text(
        "interactions: {user_id: uid, item_id: movie, rating: stars}\nitems: {item_id: movie}\nusers: {user_id: uid}\n")
    ds = import_dataset(src, tmp_path / "out", mapping=ColumnMapping.from_yaml(tmp_path / "map.yaml"))
    again = load_dataset(tmp_path / "out")
    assert len(again.interactions) == len(inter) == len(ds.interactions)
    assert {"user_id", "item_id", "rating"} <= set(again.interactions.columns)


def test_import_names_a_missing_mapped_column_and_writes_nothing(tmp_path):
    inter, items, _ = make_tables()
    src = tmp_path / "src"
    src.mkdir()
    inter.to_csv(src / "interactions.csv", index=False)
    items.to_csv(src / "items.csv", index=False)
    mapping = ColumnMapping(interactions={"user_id": "customer"})
    with pytest.raises(DataError, match="'customer'"):
        import_dataset(src, tmp_path / "out", mapping=mapping)
    assert not (tmp_path / "out").exists()


def test_mapping_onto_an_unknown_target_column(tmp_path):
    inter, items, _ = make_tables()
    src = tmp_path / "src"
    src.mkdir()
    inter.to_csv(src / "interactions.csv", index=False)
    items.to_csv(src / "items.csv", index=False)
    with pytest.raises(DataError, match="unknown target column"):
        import_dataset(src, tmp_path / "out", mapping=ColumnMapping(interactions={"score": "rating"}))
