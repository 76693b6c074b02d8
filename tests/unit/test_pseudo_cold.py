"""Pseudo-cold folds: warm entities hidden from a generator, placed from content, scored on their real
interactions (`coldstart.pseudo_cold`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from coldstart import pseudo_cold
from coldstart.data.schema import validate
from coldstart.data.split import make_split
from coldstart.evaluate import SplitData
from coldstart.metrics import reference_metrics
from coldstart.models.inputs import GeneratorInputs
from coldstart.models.neighbours import KNNGenerator
from coldstart.testing import make_tables

pytestmark = pytest.mark.timeout(60)

DIM, TEXT = 8, 6


def inputs_for(cold: str, signal: float, seed: int = 0) -> GeneratorInputs:
    """A generated split whose backbone vectors are the training matrix's leading singular vectors, and whose
    text features are `signal` times a linear map of those vectors plus noise (noise alone where it is 0)."""
    interactions, items, users = make_tables(n_users=60, n_items=80, per_user=15, seed=seed)
    data = SplitData.from_split(make_split(validate(interactions, items, users, name="tiny"), cold, seed=seed))
    left, values, right = np.linalg.svd(data.train.toarray().astype(np.float64), full_matrices=False)
    user_vectors, item_vectors = left[:, :DIM] * np.sqrt(values[:DIM]), right[:DIM].T * np.sqrt(values[:DIM])
    rng = np.random.default_rng(seed)
    mapping = rng.normal(size=(DIM, TEXT))
    item_text = (signal * item_vectors @ mapping + 0.1 * rng.normal(size=(data.n_items, TEXT))).astype(np.float32)
    user_text = (signal * user_vectors @ mapping + 0.1 * rng.normal(size=(len(data.user_ids), TEXT))).astype(np.float32)
    return GeneratorInputs(data, user_vectors.astype(np.float32), item_vectors.astype(np.float32),
                           item_features=item_text, user_features=user_text, user_text=user_text,
                           item_text=item_text, content={"text_dim": TEXT})


def knn(inputs: GeneratorInputs, k: int, **warm) -> KNNGenerator:
    return inputs.knn_warm(k, k, **warm)


def test_an_items_share_adds_up_to_the_folds_cold_ndcg_computed_by_hand():
    inputs = inputs_for("items", signal=1.0)
    data = inputs.data
    got = pseudo_cold.shares(inputs, knn(inputs, 3), "item")
    rows = np.flatnonzero(data.warm_items)
    assert set(got) == set(data.item_ids[rows])
    fold = pseudo_cold.folds_of(len(rows))
    train = data.train.toarray() > 0
    means = []
    for f in range(pseudo_cold.FOLDS):
        hidden = rows[fold == f]
        kept = np.asarray(data.warm_items, bool).copy()
        kept[hidden] = False
        placed = knn(inputs, 3, warm_items=kept).generate_items(torch.as_tensor(inputs.item_features[hidden])).numpy()
        values = []
        users = np.flatnonzero(train[:, hidden].any(axis=1))
        scores = inputs.user_vectors[users] @ placed.T  # one product: placements that tie, tie alike
        for u, row in zip(users, scores):
            order = hidden[np.argsort(-row, kind="stable")]
            values.append(reference_metrics(list(data.item_ids[order]), set(data.item_ids[hidden[train[u, hidden]]]),
                                            20)["ndcg@20"])
        means.append(np.mean(values))
    assert sum(got.values()) == pytest.approx(np.mean(means), abs=1e-9)


def test_a_hidden_item_is_not_its_own_neighbour():
    """An item's own row would place it exactly (one neighbour, itself): hidden, a one-neighbour kNN over random
    text places it no better than chance, far below the backbone's own vectors for it."""
    inputs = inputs_for("items", signal=0.0)
    one = pseudo_cold.shares(inputs, knn(inputs, 1), "item")
    own = pseudo_cold.shares(inputs, OwnVectors(inputs), "item")
    assert sum(own.values()) > 1.5 * sum(one.values())


class OwnVectors:
    """A 'generator' that returns each item's backbone vector, found by its content: the ceiling."""

    def __init__(self, inputs):
        self.inputs = inputs

    def refit(self, **arrays):
        return self

    def generate_items(self, x):
        rows = [int(np.flatnonzero((self.inputs.item_features == row).all(axis=1))[0]) for row in x.numpy()]
        return torch.as_tensor(self.inputs.item_vectors[rows])


def test_where_content_predicts_the_vectors_the_generator_that_uses_it_scores_higher():
    inputs = inputs_for("items", signal=2.0)
    close = sum(pseudo_cold.shares(inputs, knn(inputs, 3), "item").values())
    everyone = sum(pseudo_cold.shares(inputs, knn(inputs, 60), "item").values())  # about the mean warm item
    assert close > everyone


def test_new_users_pseudo_cold_against_popularity():
    """User cold-start: each hidden user ranks the warm items; popularity's reference counts the other folds'
    interactions (checked by hand), and a kNN over profiles that predict the users' vectors beats random ones."""
    inputs = inputs_for("users", signal=2.0)
    data = inputs.data
    popular = pseudo_cold.popularity_shares(inputs)
    rows = np.flatnonzero(inputs.warm_users)
    assert set(popular) == set(data.user_ids[rows])
    fold = pseudo_cold.folds_of(len(rows))
    train = data.train.toarray() > 0
    items = np.flatnonzero(data.warm_items)
    values = []
    for f in range(pseudo_cold.FOLDS):
        counts = train[rows[fold != f]][:, items].sum(axis=0)
        order = items[np.argsort(-counts, kind="stable")]
        for u in rows[fold == f]:
            values.append(reference_metrics(list(data.item_ids[order]), set(data.item_ids[np.flatnonzero(train[u])]),
                                            20)["ndcg@20"] if train[u].any() else 0.0)
    assert sum(popular.values()) == pytest.approx(np.mean(values), abs=1e-9)
    informed = sum(pseudo_cold.shares(inputs, knn(inputs, 5), "user").values())
    blind = inputs_for("users", signal=2.0)
    blind.user_features = np.random.default_rng(1).normal(size=blind.user_features.shape).astype(np.float32)
    assert informed > sum(pseudo_cold.shares(blind, knn(blind, 5), "user").values())


def test_a_generator_trained_by_a_job_has_no_pseudo_cold_figure():
    inputs = inputs_for("items", signal=1.0)
    assert pseudo_cold.shares(inputs, torch.nn.Linear(2, 2), "item") is None


def test_on_a_large_catalogue_a_sample_of_the_warm_entities_is_hidden(monkeypatch):
    """Past `MAX_HIDDEN` warm entities, a random sample of that many is hidden (the others stay neighbours), so
    the figure's cost does not grow with the catalogue; the users are scored in chunks of `CHUNK`."""
    monkeypatch.setattr(pseudo_cold, "MAX_HIDDEN", 30)
    monkeypatch.setattr(pseudo_cold, "CHUNK", 7)
    inputs = inputs_for("items", signal=1.0)
    got = pseudo_cold.shares(inputs, knn(inputs, 3), "item")
    assert len(got) == 30 and set(got) < set(inputs.data.item_ids[inputs.data.warm_items])
    assert 0 < sum(got.values()) <= 1
    users = inputs_for("users", signal=1.0)
    assert len(pseudo_cold.shares(users, knn(users, 3), "user")) == len(pseudo_cold.popularity_shares(users)) == 30


@pytest.fixture(scope="module")
def user_cold_run(tmp_path_factory):
    """A user-cold run's folder (the backbone, baselines and ensemble stages as the pipeline runs them), its
    data, and serving's choice over it, recorded in its serving.json."""
    from coldstart import registry
    from coldstart.pipeline import PipelineConfig
    from coldstart.serving.evidence import choose_served
    from coldstart.serving.served_models import update_serving
    from coldstart.stages import run_stages
    from coldstart.testing.serving_folder import run_folder
    from trainers.stages import stages as train_stages
    from trainers.testing import in_process

    out = tmp_path_factory.mktemp("user-cold")
    data = run_folder(out, "users", seed=1, n_users=90, n_items=70)
    small = {"epochs": 10, "batch_size": 256, "hidden": 16, "dim": 8}
    options = {spec.name: {k: v for k, v in small.items() if k in spec.options_class().model_fields}
               for spec in registry.MODELS.values() if spec.options}
    cfg = PipelineConfig(split=out / "split", out=out, scale={"num_workers": 1}, **options)
    table = train_stages()
    with in_process(out / "runs"):
        run_stages([table[s] for s in ("backbone", "baselines", "ensemble")], 1,
                   lambda stage, planned: stage.run(data, cfg, out))
    choice = choose_served(out, data)
    update_serving(out, **choice)
    return out, data, choice


@pytest.mark.timeout(180)
def test_on_a_user_cold_split_the_default_is_the_pseudo_cold_winner_with_popularity_beside_it(user_cold_run):
    """Serving's choice on a user-cold run: the default is the refittable generator that placed hidden warm
    users best, and serving.json records popularity's figure and its interval against the default."""
    _, data, choice = user_cold_run
    pseudo = {n: e["pseudo_cold_ndcg@20"] for n, e in choice["evidence"].items() if "pseudo_cold_ndcg@20" in e}
    assert {"knn-warm", "knn-bag", "knn-residual"} <= set(pseudo) and "regression" not in pseudo
    assert choice["default"] == max(pseudo, key=pseudo.get)
    record = choice["pseudo_cold"]
    assert record["side"] == "user" and record["entities"] == int(data.train.getnnz(axis=1).astype(bool).sum())
    low, high = record["popularity_vs_default"]
    assert low <= record["popularity_ndcg@20"] - pseudo[choice["default"]] <= high
    assert not any(k.endswith("shares") for k in record)


@pytest.mark.timeout(180)
def test_a_run_fits_the_served_generators_stated_interest_map_and_serving_loads_it(user_cold_run):
    """The map of `coldstart.serving.statements` is fitted on the served generator's pseudo-cold placements of
    the warm users, kept beside the artifacts per column, and held by the catalogue the ranker builds."""
    from coldstart.serving import statements
    from coldstart.serving.catalogue import Catalogue
    from coldstart.serving.evidence import fit_stated_map
    from coldstart.serving.served_models import ServingGenerator

    out, data, choice = user_cold_run
    generator = ServingGenerator(out, "auto")
    assert generator.name == choice["generator"]
    record = fit_stated_map(out, data)
    assert record["generator"] == generator.name
    if getattr(generator.model, "refit", None) is None:  # trained by a job: no pseudo-cold placements
        assert "none" in record and statements.load(out, generator.name) is None
        return
    assert "genres" in record["columns"] and record["columns"]["genres"]["statements"] > 0
    maps = statements.load(out, generator.name)
    assert set(maps) == set(record["columns"])
    dim = generator.arrays["user_vectors"].shape[1]  # [generated | taste | 1] -> the collaborative space
    assert maps["genres"].shape == (2 * dim + 1, dim)
    catalogue = Catalogue.from_artifacts(out, generator, encoder=None)
    assert set(catalogue.stated_map) == set(maps)
