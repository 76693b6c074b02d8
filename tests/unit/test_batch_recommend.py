"""Batch recommendations without Ray: the core (`coldstart.serving.batch`) and `coldstart recommend --actors 0`."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from coldstart.data.schema import DataError
from coldstart.serving.batch import COLUMNS, BatchOptions, BatchRecommender, read_registrations, read_user_ids, \
    recommend_in_process
from coldstart.serving.catalogue import Catalogue
from coldstart.serving.served_models import ServingGenerator
from coldstart.serving.stores import open_store
from coldstart.testing.serving_folder import build_artifacts

K = 5


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory, minilm):
    return build_artifacts(tmp_path_factory.mktemp("batch-artifacts"), minilm, epochs=10)


@pytest.fixture(scope="module")
def generator(artifacts):
    return ServingGenerator(artifacts)


def _register(artifacts, generator, spec) -> Catalogue:
    """An item that scores highest for most users, and a user who likes it, through the serving path."""
    catalogue = Catalogue.from_artifacts(artifacts, generator, open_store(spec))
    catalogue.register_item("new-hit", generator.arrays["item_vectors"][0] * 10, title="Hit", attributes={},
                            text="", generator="distill")
    catalogue.register_user("new-fan", None, liked=["i1"], attributes={}, text="", generator="distill")
    return catalogue


def test_all_users_warm_cold_and_registered_ranked_as_serving_ranks_them(artifacts, generator, store):
    serving = _register(artifacts, generator, store)
    recs = recommend_in_process(BatchOptions(artifacts=artifacts, store=store, k=K))
    assert tuple(recs.columns) == COLUMNS
    artifact_users = list(generator.meta["user_ids"])
    users = list(dict.fromkeys(recs["user_id"]))
    assert users == artifact_users + ["new-fan"]  # every user, the artifact's order, then registrations
    warm = dict(zip(artifact_users, generator.arrays["warm_users"].astype(bool)))
    paths = recs.groupby("user_id", sort=False)["path"].first()
    assert all(paths[u] == ("warm" if warm[u] else "cold") for u in artifact_users)
    assert paths["new-fan"] == "cold"
    for user_id in users:  # exactly what POST /v1/recommend {"user_id": ...} answers
        answer = serving.recommend_user(user_id, K)
        mine = recs[recs["user_id"] == user_id]
        assert list(mine["item_id"]) == [i["item_id"] for i in answer["items"]]
        assert list(mine["rank"]) == list(range(1, len(answer["items"]) + 1))
        np.testing.assert_array_equal(mine["score"].to_numpy(), np.float32([i["score"] for i in answer["items"]]))
    assert (recs["item_id"] == "new-hit").sum() >= 10  # a registered item is in the lists
    assert "i1" not in set(recs.loc[recs["user_id"] == "new-fan", "item_id"])  # liked = seen, left out


def test_the_artifacts_cold_users_are_included(tmp_path, artifacts):
    """An artifact whose split holds cold users (users without training interactions) ranks them too."""
    import shutil

    from coldstart.models.saved import load_artifact, save_artifact

    folder = shutil.copytree(artifacts, tmp_path / "artifacts")
    # Seven of the artifact's users made cold (as a user-cold split has them): their vectors are generated.
    meta, tensors = load_artifact(folder / "distill")
    tensors["warm_users"][:7] = 0
    save_artifact(folder / "distill", meta.pop("kind"), meta, tensors)
    recs = recommend_in_process(BatchOptions(artifacts=folder, store=tmp_path / "store", k=K))
    cold = list(ServingGenerator(folder).meta["user_ids"][:7])
    by_user = recs.groupby("user_id", sort=False)["path"].first()
    assert [by_user[u] for u in cold] == ["cold"] * 7
    assert (by_user == "warm").sum() == len(by_user) - 7


def test_a_file_of_users_in_each_format(artifacts, tmp_path):
    options = BatchOptions(artifacts=artifacts, store=tmp_path / "store", k=K)
    recommender = BatchRecommender(options)
    text = tmp_path / "users.txt"
    text.write_text("# weekly mail\nu3\n\nu1\nu3\n  u7  \n")
    assert recommender.users(text) == ["u3", "u1", "u7"]  # order kept, blanks, comments and repeats out
    pd.DataFrame({"user_id": ["u2", "u5"], "other": [1, 2]}).to_parquet(tmp_path / "users.parquet")
    assert recommender.users(tmp_path / "users.parquet") == ["u2", "u5"]
    (tmp_path / "users.csv").write_text("user_id,segment\n007,a\nu4,b\n")
    assert read_user_ids(tmp_path / "users.csv") == ["007", "u4"]  # ids stay strings, leading zeros kept
    recs = recommender.recommend(recommender.users(text))
    assert list(dict.fromkeys(recs["user_id"])) == ["u3", "u1", "u7"] and len(recs) == 3 * K


def test_unknown_users_in_the_file_stop_the_job_naming_the_file(artifacts, tmp_path):
    recommender = BatchRecommender(BatchOptions(artifacts=artifacts, store=tmp_path / "store"))
    users = tmp_path / "users.txt"
    users.write_text("u1\nghost-1\nu2\nghost-2\n")
    with pytest.raises(DataError) as caught:
        recommender.users(users)
    message = str(caught.value)
    assert message.startswith(f"{users}: 2 of 4 user id(s) are neither users of") and "'ghost-1'" in message
    (tmp_path / "no-column.csv").write_text("id\nu1\n")
    with pytest.raises(DataError, match="no-column.csv, column 'user_id': missing column"):
        recommender.users(tmp_path / "no-column.csv")
    with pytest.raises(DataError, match="users file not found"):
        recommender.users(tmp_path / "nope.txt")


def test_registrations_are_read_up_to_the_drivers_position_and_nothing_is_written(artifacts, generator, store,
                                                                                  tmp_path):
    assert read_registrations(store) == ([], 0)
    if not store.startswith("postgresql://"):
        assert not (tmp_path / "store").exists()  # read-only: not even the folder is made
    _register(artifacts, generator, store)
    records, position = read_registrations(store)
    assert [r["id"] for r in records] == ["new-hit", "new-fan"]
    late = Catalogue.from_artifacts(artifacts, generator, open_store(store))
    late.register_item("late", generator.arrays["item_vectors"][1], title="Late", attributes={}, text="",
                       generator="distill")
    assert [r["id"] for r in read_registrations(store, position)[0]] == ["new-hit", "new-fan"]
    pinned = BatchRecommender(BatchOptions(artifacts=artifacts, store=store, upto=position))
    assert "late" not in pinned.catalogue.item_pos and "new-hit" in pinned.catalogue.item_pos
    with pytest.raises(RuntimeError, match="never register"):
        pinned.catalogue.register_item("x", generator.arrays["item_vectors"][1], title="x", attributes={}, text="",
                                       generator="distill")


def test_the_command_without_ray_writes_a_file_or_a_folder(artifacts, generator, tmp_path):
    from typer.testing import CliRunner

    from coldstart.cli import app

    store = tmp_path / "store"
    _register(artifacts, generator, str(store))
    expected = recommend_in_process(BatchOptions(artifacts=artifacts, store=store, k=K))
    for out in (tmp_path / "recs.parquet", tmp_path / "recs"):
        result = CliRunner().invoke(app, ["recommend", "--artifacts", str(artifacts), "--store", str(store),
                                          "--k", str(K), "--actors", "0", "--out", str(out)])
        assert result.exit_code == 0, result.output
        assert f"{len(expected)} rows for 121 users (1 registered users in the store)" in result.output
        written = pd.read_parquet(out)
        assert out.is_file() == (out.suffix == ".parquet")
        pd.testing.assert_frame_equal(written, expected, check_dtype=False)
        assert str(written["rank"].dtype) == "int32" and str(written["score"].dtype) == "float32"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["recs", "recs.parquet", "store"]  # no temporary left


def test_the_command_names_a_bad_users_file(artifacts, tmp_path):
    from typer.testing import CliRunner

    from coldstart.cli import app

    users = tmp_path / "users.txt"
    users.write_text("nobody\n")
    result = CliRunner().invoke(app, ["recommend", "--artifacts", str(artifacts), "--store", str(tmp_path / "s"),
                                      "--users", str(users), "--actors", "0", "--out", str(tmp_path / "r.parquet")])
    assert result.exit_code == 2
    assert f"{users}: 1 of 1 user id(s)" in result.output and "'nobody'" in result.output
    assert not (tmp_path / "r.parquet").exists()
