"""A new trained generator is its model module, its trainer module and one registry entry: nothing else is edited.

This module is all three for a tiny generator (two linear maps from content to the backbone's space, fitted to
the warm items' and users' vectors): the class, its job and driver, and a `register(ModelSpec(...))` in a
fixture. Every table of models then has it, each read from the registry: serving's generator folders and
choices, the ensemble's members and the stages it waits for, `coldstart train` and `coldstart tune`, Tune's
jobs, the pipeline's options, default stages and stage table; and its stage trains it (in this process).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import typer
from pydantic import BaseModel, ConfigDict, Field, create_model
from torch import nn
from typer.testing import CliRunner

from coldstart import registry
from coldstart.cli import app
from coldstart.commands.train import add_model_commands
from coldstart.models.coldstart_model import load_recommender_artifact, save_backbone
from coldstart.models.kinds import cold_model
from coldstart.pipeline import PipelineConfig, model_options
from coldstart.serving.config import GENERATOR_FOLDERS, ServeConfig
from coldstart.serving.served_models import ServingGenerator, pick_generator
from coldstart.testing.serving_folder import run_folder
from coldstart.training import StepTraining
from trainers import cold_model as cold_model_job
from trainers.common import TrainResult
from trainers.stages import choose_generator
from trainers.stages import stages as train_stages
from trainers.testing import in_process
from tuning.jobs import search_job
from tuning.stages import stages as tune_stages

pytestmark = pytest.mark.timeout(120)

runner = CliRunner()


# ---- the model module ------------------------------------------------------------------------------------------

class TinyOptions(BaseModel):
    """Hyper-parameters of the tiny generator."""

    model_config = ConfigDict(extra="forbid")
    epochs: int = Field(5, gt=0, description="Most epochs.")
    patience: int = Field(5, gt=0, description="Stop after this many epochs without a better cold-val NDCG@20.")
    batch_size: int = Field(256, gt=0, description="Interactions per step.")
    lr: float = Field(1e-2, gt=0, description="Adam learning rate.")
    seed: int = Field(0, description="Seed of initialisation and sampling.")


@cold_model
class TinyGenerator(nn.Module):
    KIND = "test-tiny-generator"

    def __init__(self, item_in: int, user_in: int, dim: int):
        super().__init__()
        self.config = {"item_in": item_in, "user_in": user_in, "dim": dim}
        self.items, self.users = nn.Linear(item_in, dim), nn.Linear(user_in, dim)

    def generate_items(self, x: torch.Tensor) -> torch.Tensor:
        return self.items(x)

    def generate_users(self, x: torch.Tensor) -> torch.Tensor:
        return self.users(x)


class TinyTraining(StepTraining):
    """Each batch's items and users mapped onto their backbone vectors (MSE)."""

    def __init__(self, model, *, item_features, user_features, item_vectors, user_vectors, lr, device=None,
                 precision="fp32"):
        super().__init__(model, torch.optim.Adam(model.parameters(), lr=lr), device=device, precision=precision)
        self.item_features, self.user_features = self.place(item_features), self.place(user_features)
        self.item_vectors, self.user_vectors = self.place(item_vectors), self.place(user_vectors)

    def loss(self, batch):
        users, items, _ = batch
        model = self.model.module if hasattr(self.model, "module") else self.model
        item_loss = (model.generate_items(self.item_features[items]) - self.item_vectors[items]).pow(2).mean()
        user_loss = (model.generate_users(self.user_features[users]) - self.user_vectors[users]).pow(2).mean()
        return item_loss + user_loss, {"items": item_loss, "users": user_loss}


# ---- the trainer module ----------------------------------------------------------------------------------------

class TinyConfig(cold_model_job.ColdModelInputs, TinyOptions):
    pass


class TinyJob(cold_model_job.ColdModelJob):
    name = "tiny"
    config_class = TinyConfig

    def build_model(self) -> TinyGenerator:
        return TinyGenerator(*self.dims)

    def build_training(self, model, device, precision) -> TinyTraining:
        return TinyTraining(model, item_features=self.arrays["item_features"],
                            user_features=self.arrays["user_features"], item_vectors=self.item_vectors,
                            user_vectors=self.user_vectors, lr=self.cfg.lr, device=device, precision=precision)


def run(cfg: TinyConfig, callbacks: list | None = None, context=None) -> TrainResult:
    return cold_model_job.run(TinyJob, cfg, callbacks, context)


# ---- the registry entry ----------------------------------------------------------------------------------------

@pytest.fixture
def tiny():
    spec = registry.register(registry.ModelSpec(
        "tiny", model=f"{__name__}:TinyGenerator", folder="tiny", stage="tiny", row="coldstart (tiny)",
        about="Two linear maps from content to the backbone's space", trainer=f"{__name__}:TinyConfig",
        usage="Needs --split, --embeddings, --backbone, --out.", options=f"{__name__}:TinyOptions",
        search=registry.Search({"lr": registry.loguniform(1e-3, 1e-1)}), ensemble_member=True))
    yield spec
    registry.unregister("tiny")


# ---- every table has it ----------------------------------------------------------------------------------------

def test_serving_can_choose_it_by_name(tiny, tmp_path):
    assert GENERATOR_FOLDERS["tiny"] == "tiny" and "tiny" in list(GENERATOR_FOLDERS)
    assert ServeConfig(artifacts=tmp_path, generator="tiny").generator == "tiny"
    registry.unregister("tiny")
    with pytest.raises(ValueError, match="expected 'auto' or one of"):
        ServeConfig(artifacts=tmp_path, generator="tiny")


def test_the_ensemble_takes_it_and_waits_for_its_stages(tiny):
    assert "tiny" in [spec.name for spec in registry.ensemble_members()]
    assert {"tiny", "tune-tiny"} <= set(train_stages()["ensemble"].after)


def test_the_command_line_trains_and_tunes_it(tiny):
    train = typer.Typer()
    add_model_commands(train)
    result = runner.invoke(train, ["tiny", "--help-fields"])
    assert result.exit_code == 0, result.output
    assert "--lr" in result.output and "--embeddings" in result.output
    result = runner.invoke(app, ["tune", "tiny", "--help-fields"])
    assert result.exit_code == 0 and "--search.budget" in result.output and "--lr" in result.output


def test_tune_has_its_job_and_the_pipeline_its_options_and_stages(tiny):
    job = search_job("tiny")
    assert job.config is TinyConfig and job.run is run and list(job.space()) == ["lr"]
    assert model_options()["tiny"][0] is TinyOptions
    assert PipelineConfig().stages[-1] == "tune-tiny"  # the search trains the winner into its folder
    stage = train_stages()["tiny"]
    assert (stage.needs, stage.outputs, stage.after) == (("embed", "backbone"), ("tiny",), ("tune-tiny",))
    search = tune_stages()["tune-tiny"]
    assert search.outputs == ("tune-tiny", "tiny")


def test_its_stage_trains_it_and_serving_loads_it(tiny, tmp_path):
    out = tmp_path
    data = run_folder(out, seed=1, split_seed=0, n_users=40, n_items=60, per_user=10)
    rng = np.random.default_rng(0)
    save_backbone(out / "backbone", data, rng.normal(size=(data.n_users, 8)).astype(np.float32),
                  rng.normal(size=(data.n_items, 8)).astype(np.float32), {"epoch": 0})
    # The pipeline's options for it, as `coldstart.pipeline` makes them for every model registered at its import.
    config = create_model("WithTiny", __base__=PipelineConfig, tiny=model_options()["tiny"])
    cfg = config(split=out / "split", out=out, scale={"num_workers": 1})
    with in_process(out / "runs"):
        rows = train_stages()["tiny"].run(data, cfg, out)
    assert list(rows) == ["coldstart (tiny)"] and np.isfinite(rows["coldstart (tiny)"].score([0, 1])).all()
    loaded = load_recommender_artifact(out / "tiny", data)
    assert loaded.item_vectors.shape == (data.n_items, 8)
    assert choose_generator(out) == "tiny"  # the only generator the run made
    assert pick_generator(out, "tiny").source == out / "tiny"
    assert isinstance(ServingGenerator(out, "tiny").model, TinyGenerator)  # what a generator replica holds
