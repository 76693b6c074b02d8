"""The contract every model in `coldstart.registry` keeps, checked on each entry: registering a model is what puts
it under these tests (lkpy's component tests, over our artifacts).

Each model is made on one tiny generated split (`coldstart.testing.make_tables`, texts from a word-hashing
encoder, so content carries the users' genres) by the pipeline stage that makes it, as the pipeline runs it,
its trainer fitting in this process instead of on Ray Train (`trainers.testing.in_process`). Then, model by
model, from its artifact folder alone:

- its configuration round-trips: the class rebuilds from the artifact's config (a generator's weights load into
  it), and its trainer's config and the pipeline's options for it survive a dump and a YAML file;
- saved again from what was loaded, it scores exactly as before;
- an unknown user and an unknown item (ids the artifact never saw) get zero vectors: every score of theirs is 0,
  the other scores are unchanged (`load_recommender_artifact`'s rule; serving places new ones by registration);
- nothing known (an empty history, no text, no attributes): a generator still places the user or item, with a
  finite vector; a model that is no generator (the backbone) places no one: see the rule above;
- it learned: its test NDCG@20 beats random ranking's (cold items for a generator, warm for the backbone).
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from coldstart import artifacts, registry
from coldstart.config import load_config, to_yaml
from coldstart.content import build_content
from coldstart.evaluate import SplitData, evaluate
from coldstart.models.baselines import RandomRecommender
from coldstart.models.coldstart_model import (load_backbone, load_cold_model, load_recommender_artifact,
                                              placed_items, save_backbone, save_cold_model)
from coldstart.models.towers import cold_start_vectors
from coldstart.pipeline import PipelineConfig
from coldstart.stages import run_stages
from coldstart.testing.serving_folder import run_folder
from trainers.loop import LocalContext, run_in_process
from trainers.stages import split_dir, stages as train_stages
from trainers.testing import in_process
from trainers.transfer import TransferConfig, TransferJob
from tuning.jobs import tune_config_class
from tuning.stages import save_transfer_generator

pytestmark = pytest.mark.timeout(120)  # the models are made once for the module, in about 10 s

MODELS = list(registry.MODELS.values())
SMALL = {"epochs": 15, "batch_size": 256, "hidden": 32, "dim": 16, "latent": 8}  # where a model's options have them


def make_transfer(data: SplitData, cfg: PipelineConfig, out: Path) -> None:
    """Transfer's stage is a search on Ray Tune: here its job fits the pipeline's options in this process on the
    target's interactions and a made-up source over the same items (what its driver would read from a source
    dataset), and the stage's own step makes the servable generator of it."""
    _, _, _, item_text, _ = build_content(data, out / "embeddings")
    rng = np.random.default_rng(0)
    train = data.split.train
    inputs = {"text": item_text, "target_users": data.user_ids.get_indexer(train["user_id"]),
              "target_items": data.item_ids.get_indexer(train["item_id"]),
              "target_negatives": np.flatnonzero(data.warm_items), "source_users": rng.integers(0, 30, 300),
              "source_items": rng.integers(0, data.n_items, 300), "source_negatives": np.arange(data.n_items),
              "n_source_users": 30, "coverage": {}}
    job_cfg = TransferConfig(**{**cfg.transfer.model_dump(), "lam": 0.0}, target=split_dir(data),
                             embeddings=out / "embeddings", out=out / "transfer" / "model", scale=cfg.scale)
    run_in_process(TransferJob, job_cfg, LocalContext(folder=out / "runs" / "transfer"), inputs={"inputs": inputs})
    save_transfer_generator(data, cfg, out)


# Models whose own stage cannot run in this process (a search), by name: how each is made instead.
MAKERS = {"transfer": make_transfer}


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """(OUT, the split's data): every registered model made into its folder under OUT."""
    out = tmp_path_factory.mktemp("contract")
    data = run_folder(out)  # generated data, its split, texts embedded, profiles' vectors kept
    options = {spec.name: {k: v for k, v in SMALL.items() if k in spec.options_class().model_fields}
               for spec in MODELS if spec.options}
    cfg = PipelineConfig(split=out / "split", out=out, scale={"num_workers": 1}, **options)
    table = train_stages()
    stages = [table[name] for name in dict.fromkeys(spec.stage for spec in MODELS if spec.name not in MAKERS)]
    with in_process(out / "runs"):
        run_stages(stages, 1, lambda stage, planned: stage.run(data, cfg, out))
    for name, make in MAKERS.items():
        make(data, cfg, out)
    return out, data


@pytest.fixture(params=MODELS, ids=lambda spec: spec.name)
def spec(request) -> registry.ModelSpec:
    return request.param


def _all_scores(model, data) -> np.ndarray:
    return model.score(np.arange(len(data.user_ids)))


def test_its_config_round_trips(spec, made, tmp_path):
    out, _ = made
    meta = artifacts.read_json(out / spec.folder / "model.json")
    cls = registry.resolve(spec.model)
    model = cls(**meta["config"])
    if spec.generator:
        assert meta["kind"] == cls.KIND and model.config == meta["config"]
        model.load_state_dict(load_cold_model(out / spec.folder)[1].state_dict())  # every weight fits, strictly
    if spec.trainer:
        config_class = spec.config_class()
        paths = {name: tmp_path for name, field in config_class.model_fields.items() if field.is_required()}
        cfg = config_class(**paths)
        assert config_class.model_validate(cfg.model_dump(mode="json")) == cfg
        (tmp_path / "job.yaml").write_text(to_yaml(cfg))
        assert load_config(config_class, tmp_path / "job.yaml") == cfg
    if spec.options:
        pipeline = PipelineConfig()
        assert getattr(pipeline, spec.name) == spec.options_class()()
        assert PipelineConfig.model_validate(pipeline.model_dump(mode="json")) == pipeline
    if spec.search:
        searched = tune_config_class(spec.name)
        assert set(spec.search.space) <= set(searched.model_fields), "a searched field the trainer does not take"


def test_saved_again_from_what_was_loaded_it_scores_the_same(spec, made, tmp_path):
    out, data = made
    before = _all_scores(load_recommender_artifact(out / spec.folder, data), data)
    if spec.generator:
        meta, model, arrays = load_cold_model(out / spec.folder)
        users, items = cold_start_vectors(model, user_vectors=arrays["user_vectors"],
                                          item_vectors=arrays["item_vectors"],
                                          warm_users=arrays["warm_users"].astype(bool),
                                          warm_items=placed_items(arrays), user_features=arrays["user_features"],
                                          item_features=arrays["item_features"])
        np.testing.assert_allclose(users @ items.T, before, rtol=1e-5, atol=1e-5)
        save_cold_model(tmp_path / "again", data, model, user_vectors=arrays["user_vectors"],
                        item_vectors=arrays["item_vectors"], user_features=arrays["user_features"],
                        item_features=arrays["item_features"], content=meta["content"],
                        meta={"metrics": meta["metrics"]}, placed_items=arrays.get("placed_items"))
    else:
        meta, user, item = load_backbone(out / spec.folder)
        save_backbone(tmp_path / "again", data, user, item, {"epoch": meta.get("epoch")})
    after = _all_scores(load_recommender_artifact(tmp_path / "again", data), data)
    np.testing.assert_array_equal(after, before)


def test_an_unknown_user_and_an_unknown_item_score_zero(spec, made):
    out, data = made
    known = _all_scores(load_recommender_artifact(out / spec.folder, data), data)
    strangers = SimpleNamespace(user_ids=data.user_ids.append(pd.Index(["stranger"])),
                                item_ids=data.item_ids.append(pd.Index(["unheard-of"])))
    scores = load_recommender_artifact(out / spec.folder, strangers).score(np.arange(len(strangers.user_ids)))
    assert np.isfinite(scores).all()
    assert not scores[-1].any() and not scores[:, -1].any()
    np.testing.assert_allclose(scores[:-1, :-1], known, rtol=1e-6, atol=1e-6)


@torch.no_grad()
def test_with_nothing_known_a_generator_still_places_the_user_and_the_item(spec, made):
    out, _ = made
    if not spec.generator:
        pytest.skip(f"{spec.name} places no new user or item: one it never saw scores 0 (the test above)")
    _, model, arrays = load_cold_model(out / spec.folder)
    nothing_user = torch.zeros(1, arrays["user_features"].shape[1])  # no history, no profile, no attributes
    nothing_item = torch.zeros(1, arrays["item_features"].shape[1])  # no text, no attributes
    user, item = model.generate_users(nothing_user), model.generate_items(nothing_item)
    assert user.shape == (1, arrays["user_vectors"].shape[1]) and item.shape == (1, arrays["item_vectors"].shape[1])
    assert torch.isfinite(user).all() and torch.isfinite(item).all()


def test_it_learned_better_than_random_ranking(spec, made):
    out, data = made
    group = "cold" if spec.generator else "warm"  # what it is for: new items, or the users' known tastes
    figure = evaluate(load_recommender_artifact(out / spec.folder, data), data, on="test", ks=(20,))[group]
    chance = np.mean([evaluate(RandomRecommender(data, seed=s), data, on="test", ks=(20,))[group]["ndcg@20"]
                      for s in range(5)])
    assert figure["ndcg@20"] > chance, f"{spec.name}: {group} NDCG@20 {figure['ndcg@20']:.4f}, random {chance:.4f}"


@torch.no_grad()
def test_a_generator_fitted_without_a_job_refits_to_itself(made):
    """Serving's default comes from pseudo-cold folds (`coldstart.pseudo_cold`), which refit a generator with warm
    entities hidden: refitted on the run's own warm entities, each generator that offers it (knn-warm, knn-bag,
    knn-residual at least) places new items and users exactly as its artifact does."""
    from coldstart.models.inputs import GeneratorInputs

    out, data = made
    arrays = GeneratorInputs.from_folders(data, out).fit_arrays()
    refitted = []
    for spec in registry.generators():
        _, model, saved = load_cold_model(out / spec.folder)
        again = getattr(model, "refit", lambda **_: None)(**arrays)
        if again is None:
            continue
        refitted.append(spec.name)
        for side in ("item", "user"):
            x = torch.as_tensor(saved[f"{side}_features"])
            np.testing.assert_allclose(getattr(again, f"generate_{side}s")(x).numpy(),
                                       getattr(model, f"generate_{side}s")(x).numpy(), rtol=1e-5, atol=1e-5,
                                       err_msg=f"{spec.name} ({side}s)")
    assert {"knn-warm", "knn-bag", "knn-residual"} <= set(refitted)
