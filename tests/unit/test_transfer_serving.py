"""The tuned transfer model is servable in the backbone's space: warm users and items keep their backbone
vectors, cold items get transfer's learnt vectors mapped there, new items its text tower's, new users their
profile neighbours'; serving.json weighs it with the others, and the HTTP API answers with it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from coldstart.content import build_content
from coldstart.data.split import load_split
from coldstart.evaluate import SplitData, evaluate
from coldstart.models.coldstart_model import load_recommender_artifact
from coldstart.models.mf import EmbeddingRecommender, TrainPairs
from coldstart.models.inputs import GeneratorInputs
from coldstart.models.transfer import TransferGenerator, TransferModel, TransferTraining, target_vectors, title_keys
from coldstart.pipeline import PipelineConfig
from coldstart.serving.routes import create_api
from coldstart.serving.served_models import ServingGenerator
from coldstart.serving.service import local_service
from coldstart.testing.serving_folder import build_artifacts
from trainers.stages import choose_generator
from trainers.transfer import save_transfer
from tuning.stages import save_transfer_generator


@pytest.fixture(scope="module")
def with_transfer(tmp_path_factory, minilm):
    """An artifacts folder with towers and a transfer model (trained on the target alone here), each saved with
    its real cold-val NDCG@20 as the pipeline saves them."""
    root = build_artifacts(tmp_path_factory.mktemp("transfer-serving"), minilm, epochs=10)
    data = SplitData.from_split(load_split(root / "split"))
    item_features, *_, spec = build_content(data, root / "embeddings", minilm)
    text = item_features[:, :spec.text_dim]
    torch.manual_seed(0)
    model = TransferModel(spec.text_dim, data.n_items, n_source_users=1, n_target_users=data.n_users, dim=16,
                          hidden=32)
    training = TransferTraining(model, text, lam=0.0, lr=1e-2)
    train = data.split.train
    pairs = TrainPairs(data.user_ids.get_indexer(train["user_id"]), data.item_ids.get_indexer(train["item_id"]),
                       np.flatnonzero(data.warm_items), seed=0)
    for _ in range(5):
        training.train_epoch((batch, (batch[0] * 0, batch[1], batch[2])) for batch in pairs.batches(256))
    model.eval()
    # What a source teaches the cold items it knows by title: an id embedding their tower vector never had.
    cold = np.flatnonzero(~data.warm_items)
    taught = cold[: len(cold) // 2]
    with torch.no_grad():
        model.item.weight[torch.as_tensor(taught)] = torch.randn(len(taught), 16, generator=torch.Generator().manual_seed(1))
    items_table = data.split.items.set_index("item_id").reindex(data.item_ids).reset_index(names="item_id")
    keys = title_keys(items_table, "title")
    row_keys = [keys[i] if i in set(taught) else None for i in range(data.n_items)]
    users, items = target_vectors(model, text, np.arange(data.n_items))
    cold_val = evaluate(EmbeddingRecommender(users, items), data, on="val", ks=(20,))["cold"]["ndcg@20"]
    save_transfer(root / "transfer" / "model", data, model, text,
                  {"lam": 0.0, "epoch": 4, "metrics": {"cold_val_ndcg@20": cold_val}, "selected_on": "cold_val_ndcg@20",
                   "row_keys": row_keys})
    cfg = PipelineConfig(split=root / "split", out=root)
    save_transfer_generator(data, cfg, root)
    return root, data, model, text


def test_warm_users_and_items_keep_the_backbone_and_cold_items_get_transfer_mapped_into_it(with_transfer):
    """Served in transfer's own space, every warm user lost a quarter of its NDCG; now warm users and items keep
    the backbone's vectors, and the cold items' learnt transfer vectors are carried into the backbone's space
    by the map fitted on the warm items."""
    root, data, _, _ = with_transfer
    learnt = load_recommender_artifact(root / "transfer" / "model", data)
    backbone = load_recommender_artifact(root / "backbone", data)
    served = load_recommender_artifact(root / "transfer" / "generator", data)
    warm_users, warm = np.flatnonzero(data.train.getnnz(axis=1) > 0), data.warm_items
    np.testing.assert_allclose(served.score(warm_users)[:, warm], backbone.score(warm_users)[:, warm], atol=1e-5)
    generator = ServingGenerator(root, "transfer")
    projection = generator.model.projection.detach().numpy()
    # the cold items the source taught keep what it taught; the others are placed as a new title is
    cold = np.flatnonzero(~warm)
    taught, untaught = cold[: len(cold) // 2], cold[len(cold) // 2:]
    np.testing.assert_allclose(served.item_vectors[taught], learnt.item_vectors[taught] @ projection, atol=1e-5)
    np.testing.assert_allclose(served.item_vectors[untaught],
                               generator.generate("item", generator.arrays["item_features"][untaught]), atol=1e-5)
    fitted = learnt.item_vectors[warm] @ projection
    assert np.linalg.norm(fitted - backbone.item_vectors[warm]) < 0.9 * np.linalg.norm(backbone.item_vectors[warm])
    chosen = choose_generator(root)
    serving = json.loads((root / "serving.json").read_text())
    scores = serving["cold_val_ndcg@20"]
    assert set(scores) == {"distill", "transfer"} and chosen == serving["generator"] == max(scores, key=scores.get)


def test_a_new_title_gets_the_tower_or_knn_bag_whichever_placed_the_splits_cold_items_better(with_transfer):
    """A title the source never saw gets knn-bag's vector unless the text tower placed the split's cold items
    better beyond noise from their content alone (val's audit half); the artifact records the evidence."""
    root, data, model, text = with_transfer
    generator = ServingGenerator(root, "transfer")
    record = generator.meta["unknown_titles"]
    low, high = record["tower_minus_knn-bag"]
    assert set(record["cold_val-audit_ndcg@20"]) == {"tower", "knn-bag"} and low <= high
    assert record["generator"] == ("tower" if low > 0 else "knn-bag")
    features = generator.arrays["item_features"][:3]
    inputs = GeneratorInputs.from_folders(data, root)
    bag = inputs.knn_bag()
    projection = generator.model.projection.detach().numpy()
    # the figures are the protocol's cold NDCG@20 of each placement on val's audit half
    tower_alone = TransferGenerator.of(model, user_features=generator.arrays["user_features"],
                                       user_vectors=generator.arrays["user_vectors"],
                                       warm_users=generator.arrays["warm_users"].astype(bool), projection=projection)
    expected = evaluate(EmbeddingRecommender(*inputs.vectors(tower_alone)), data, on="val-audit", ks=(20,))
    assert record["cold_val-audit_ndcg@20"]["tower"] == pytest.approx(expected["cold"]["ndcg@20"], abs=1e-6)
    with torch.no_grad():
        tower = model.tower(torch.as_tensor(text[:3])).numpy() @ projection
        knn = bag.generate_items(torch.as_tensor(features)).numpy()
    np.testing.assert_allclose(generator.generate("item", features), tower if record["generator"] == "tower" else knn,
                               rtol=1e-5, atol=1e-5)
    # the same generator made with knn-bag for new titles: an unknown title gets knn-bag's, a known one what the
    # source taught beside its tower vector
    with_bag = TransferGenerator.of(model, user_features=generator.arrays["user_features"],
                                    user_vectors=generator.arrays["user_vectors"],
                                    warm_users=generator.arrays["warm_users"].astype(bool), projection=projection,
                                    row_keys=["known (1999)", None, None], unknown=bag)
    with torch.no_grad():
        got = with_bag.generate_items(torch.as_tensor(features), keys=["known (1999)", "other (2001)", None]).numpy()
        taught = (model.tower(torch.as_tensor(text[:1])) + model.item.weight[:1]).numpy() @ projection
    known_row = bool(model.item.weight[0].abs().sum() > 0)
    np.testing.assert_allclose(got[0], (taught if known_row else knn)[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got[1:], knn[1:], rtol=1e-5, atol=1e-5)


def test_new_users_get_their_profile_neighbours(with_transfer):
    root, data, model, text = with_transfer
    generator = ServingGenerator(root, "transfer")
    # A new user is placed as knn-warm places users, over the backbone's user vectors.
    from coldstart.models.neighbours import KNNGenerator

    arrays = generator.arrays
    warm = arrays["warm_users"].astype(bool)
    knn = KNNGenerator.fit(item_features=arrays["item_features"], user_features=arrays["user_features"],
                           item_vectors=arrays["item_vectors"], user_vectors=arrays["user_vectors"],
                           warm_items=arrays["warm_items"].astype(bool), warm_users=warm,
                           item_dims=generator.content.text_dim, user_k=generator.model.config["user_k"])
    profiles = arrays["user_features"][:4]
    with torch.no_grad():
        np.testing.assert_allclose(generator.generate("user", profiles),
                                   knn.generate_users(torch.as_tensor(profiles)).numpy(), rtol=1e-5, atol=1e-6)
    assert not np.allclose(generator.generate("user", profiles[:1]), arrays["user_vectors"][warm].mean(axis=0))


def test_the_http_api_answers_with_the_transfer_generator(with_transfer, tmp_path):
    root, _, _, _ = with_transfer
    with TestClient(create_api(local_service(root, tmp_path / "store", generator="transfer"))) as client:
        health = client.get("/healthz").json()
        assert health["generator"] == "transfer"
        item = {"item_id": "new-film", "title": "A New Film", "attributes": {"year": 2001, "genres": "Comedy"}}
        assert client.post("/v1/items", json=item).status_code == 201
        r = client.post("/v1/recommend", json={"user_id": "u1", "k": 3, "candidates": ["new-film", "i1", "i2"],
                                               "exclude_seen": False})
        assert r.status_code == 200 and "new-film" in [i["item_id"] for i in r.json()["items"]]
        r = client.post("/v1/recommend", json={"profile": {"attributes": {"age": 30, "occupation": "job5"}},
                                               "k": 5})
        assert r.status_code == 200 and len(r.json()["items"]) == 5 and r.json()["path"] == "cold", r.text


def test_a_registered_item_the_source_knew_gets_the_vector_the_report_measured(with_transfer, tmp_path):
    """The split's cold items the source knew carry what its interactions taught (the shared id embedding);
    registered through the endpoint by title and attributes, the same items got the text tower alone, and the
    report's cold figure was not what a registration gets. A title the source never saw still gets the tower."""
    root, data, _, _ = with_transfer
    service = local_service(root, tmp_path / "store", generator="transfer")
    catalogue = service.ranker.target
    items = data.split.items.set_index("item_id")
    cold = np.flatnonzero(~data.warm_items)
    with TestClient(create_api(service)) as client:
        for pos in cold:
            row = items.loc[data.item_ids[pos]]
            attributes = {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()
                          if k != "title" and not (isinstance(v, float) and np.isnan(v))}
            body = {"item_id": f"again-{pos}", "title": row["title"], "attributes": attributes}
            assert client.post("/v1/items", json=body).status_code == 201
        new = {"item_id": "never-seen", "title": "A Film Nobody Knew (2003)", "attributes": {"genres": "Comedy"}}
        assert client.post("/v1/items", json=new).status_code == 201
    placed = catalogue.index.vectors([catalogue.item_pos[data.item_ids[p]] for p in cold])
    again = catalogue.index.vectors([catalogue.item_pos[f"again-{p}"] for p in cold])
    np.testing.assert_allclose(again, placed, rtol=1e-4, atol=1e-5)
    generator = ServingGenerator(root, "transfer")
    assert len(generator.model.known_keys) == len(cold) // 2
    tower_only = generator.generate("item", generator.arrays["item_features"][cold])
    assert not np.allclose(tower_only[: len(cold) // 2], placed[: len(cold) // 2], atol=1e-3)
    unknown = catalogue.index.vectors([catalogue.item_pos["never-seen"]])[0]
    text = service.encoder.target.embed(generator.content.text("item", new["attributes"], "", new["title"]))
    features = generator.content.features("item", text, new["attributes"])
    np.testing.assert_allclose(unknown, generator.generate("item", features)[0], rtol=1e-4, atol=1e-5)
