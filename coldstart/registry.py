"""Every model, described once: the one table the project's lists of models are derived from.

One entry per model (`ModelSpec`): its name, the class its artifacts rebuild, its folder under a pipeline's
output and the stage that writes it, its report row, the trainer that fits it (`coldstart train NAME`),
its search space (`coldstart tune NAME`), and what serving and the ensemble may do with it. Derived from
it, and nowhere else written down: serving's generator folders and choices (`GENERATOR_FOLDERS`), the
ensemble's members and the stages it waits for, the CLI's train commands, Tune's jobs, the pipeline's
option fields and default stages, and the train and search stages of the trained generators.

Classes and trainers are named by import path ("module:Name", as Hugging Face's auto classes name theirs)
and imported only when used: the command line reads this table for its help without importing torch, and
the core names a trainer (a layer above it) without importing it.

A new trained generator is its model module (`coldstart/models/`, the class with `KIND` and
`@kinds.cold_model`), its trainer module (`trainers/`, a `run(cfg, callbacks=None, context=None)` driver
and its config class) and one `register(ModelSpec(...))` below.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass(frozen=True)
class Domain:
    """The range Tune samples one field from, as plain data (`tuning.jobs` makes Ray Tune's domain of it)."""

    sample: Literal["choice", "uniform", "loguniform"]
    values: tuple  # choice: the values; uniform and loguniform: (low, high)


def choice(*values) -> Domain:
    return Domain("choice", tuple(values))


def uniform(low: float, high: float) -> Domain:
    return Domain("uniform", (low, high))


def loguniform(low: float, high: float) -> Domain:
    return Domain("loguniform", (low, high))


@dataclass(frozen=True)
class Search:
    """How Tune searches a model's trainer (`coldstart tune NAME`, and the pipeline's search stage)."""

    space: Mapping[str, Domain]  # field -> range, in the order Optuna samples them
    stage: str | None = None  # the pipeline stage that searches; default tune-NAME, beside the model's own stage
    # Fixed settings trained beside the winner to compare it with: label -> fields (folder: the label with
    # '-' for '='); the tuned row names its values of these fields, and with one field a chart plots against it.
    compare: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    prepare: str | None = None  # "module:function(cfg)" run once before the trials (fill a shared cache)
    notes: str | None = None  # "module:function(cfg, model_dir) -> lines" heading the search's comparison.md


@dataclass(frozen=True)
class ModelSpec:
    """One model: what every table of models in the project needs to know about it."""

    name: str  # its name everywhere: serving's --generator, `coldstart train|tune NAME`, the pipeline's field
    model: str  # "module:Class" its artifacts rebuild (a generator's class has KIND and @kinds.cold_model)
    folder: str  # its artifact folder under a pipeline's OUT
    stage: str  # the pipeline stage that writes the folder
    row: str  # its row in the pipeline's report (a search's winner: the row with ", tuned")
    about: str  # what it is, one line: the pipeline field's description, `coldstart train NAME --help`
    trainer: str | None = None  # "module:ConfigClass": `module.run(cfg)` fits it on Ray Train
    usage: str = ""  # what `coldstart train NAME` needs, after `about` in its help
    options: str | None = None  # "module:Class" of its hyper-parameters: the pipeline's field NAME
    search: Search | None = None
    generator: bool = True  # maps content to the backbone's space: serving can place new items and users with it
    ensemble_member: bool = False  # the ensemble stage averages it when the run made it
    # Its artifact keeps the backbone's vectors for warm users and items and places only the rest, so what
    # it scores for warm users is the backbone's (serving's evidence takes the backbone's figures from it).
    keeps_warm_vectors: bool = True

    @property
    def search_stage(self) -> str | None:
        """The pipeline stage that searches its settings: its own stage, or one beside it that trains the winner."""
        if self.search is None:
            return None
        return self.search.stage or f"tune-{self.name}"

    @property
    def tuned_row(self) -> str:
        """The report row of a search's winner: "coldstart (VAE generator)" -> "coldstart (VAE generator, tuned)"."""
        return f"{self.row[:-1]}, tuned)" if self.row.endswith(")") else f"{self.row} (tuned)"

    def config_class(self) -> type:
        """The trainer's config class (imports the trainer)."""
        return resolve(self.trainer)

    def trainer_module(self):
        """The trainer's module, whose `run(cfg)` fits the model (imports it)."""
        return importlib.import_module(self.trainer.partition(":")[0])

    def options_class(self) -> type:
        return resolve(self.options)


MODELS: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    """Enter a model; its name, folder and stage must not clash with another's."""
    if spec.name in MODELS:
        raise ValueError(f"model {spec.name!r} is already registered")
    clash = [other.name for other in MODELS.values() if other.folder == spec.folder]
    if clash:
        raise ValueError(f"model {spec.name!r}: folder {spec.folder!r} is {clash[0]!r}'s")
    for path in (spec.model, spec.trainer, spec.options):
        if path is not None and ":" not in path:
            raise ValueError(f"model {spec.name!r}: {path!r} is not a 'module:Name' path")
    MODELS[spec.name] = spec
    return spec


def unregister(name: str) -> None:
    """Take a model out (a test's own model, once the test is over)."""
    MODELS.pop(name, None)


def model(name: str) -> ModelSpec:
    if name not in MODELS:
        raise KeyError(f"no model named {name!r}; registered: {', '.join(MODELS)}")
    return MODELS[name]


def resolve(path: str):
    """The object a "module:Name" path names, its module imported now."""
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


# ---- derived tables (each read when asked, so a model registered later is in them) -------------------------

def generators() -> list[ModelSpec]:
    return [spec for spec in MODELS.values() if spec.generator]


def trained() -> list[ModelSpec]:
    """Models with a trainer of their own: `coldstart train NAME`."""
    return [spec for spec in MODELS.values() if spec.trainer]


def searchable() -> list[ModelSpec]:
    """Models Tune can search: `coldstart tune NAME`."""
    return [spec for spec in MODELS.values() if spec.trainer and spec.search]


def ensemble_members() -> list[ModelSpec]:
    return [spec for spec in MODELS.values() if spec.ensemble_member]


def member_stages() -> tuple[str, ...]:
    """The stages that write an ensemble member's folder (its own and its search's)."""
    stages = []
    for spec in ensemble_members():
        for stage in (spec.stage, spec.search_stage):
            if stage and stage not in stages:
                stages.append(stage)
    return tuple(stages)


def pipeline_stages() -> list[str]:
    """The stages a pipeline runs for the models by default, in order: each model's search stage where it has
    one (it trains the winner), else its own stage."""
    stages = []
    for spec in MODELS.values():
        stage = spec.search_stage or spec.stage
        if stage not in stages:
            stages.append(stage)
    return stages


class _Live(Mapping):
    """A read-only mapping computed from the registry on every read."""

    def __init__(self, build):
        self._build = build

    def __getitem__(self, key):
        return self._build()[key]

    def __iter__(self) -> Iterator:
        return iter(self._build())

    def __len__(self) -> int:
        return len(self._build())

    def __repr__(self) -> str:
        return repr(self._build())


# The generators a pipeline can leave in an artifacts folder, by name, and their folders there.
GENERATOR_FOLDERS: Mapping[str, str] = _Live(lambda: {spec.name: spec.folder for spec in generators()})


# ---- the models ---------------------------------------------------------------------------------------------
# In the order the pipeline makes them: that order is the default stages', the ensemble's members' and the
# order serving lists (and, on a tie, prefers) generators in.

register(ModelSpec(
    "backbone", model="coldstart.models.mf:MatrixFactorization", folder="backbone", stage="backbone",
    row="backbone (MF-BPR)", about="Warm backbone: matrix factorisation with BPR",
    trainer="trainers.backbone:BackboneConfig", usage="Needs --split and --out.",
    options="coldstart.models.mf:BackboneOptions", generator=False))
register(ModelSpec(
    "knn-warm", model="coldstart.models.neighbours:KNNGenerator", folder="knn-warm", stage="baselines",
    row="knn-warm", about="A new item or user at the mean backbone vector of its k content-nearest warm ones",
    ensemble_member=True))
register(ModelSpec(
    "regression", model="coldstart.models.towers:ColdStartTowers", folder="regression", stage="baselines",
    row="regression (MLP, MSE)", about="The towers trained with alignment alone: content regressed on the "
                                       "backbone's vectors"))
register(ModelSpec(
    "distill", model="coldstart.models.towers:ColdStartTowers", folder="distill", stage="distill",
    row="coldstart (distilled towers)", about="Student towers for cold items and users",
    trainer="trainers.distill:DistillConfig", usage="Needs --split, --embeddings, --backbone, --out.",
    options="coldstart.models.towers:TowerOptions", ensemble_member=True))
register(ModelSpec(
    "vae", model="coldstart.models.vae:ConditionalVAE", folder="vae", stage="vae",
    row="coldstart (VAE generator)", about="Conditional-VAE generator for cold items and users",
    trainer="trainers.generator:GeneratorConfig", usage="Needs --split, --embeddings, --backbone, --out.",
    options="coldstart.models.vae:VAEOptions", ensemble_member=True,
    search=Search({"latent": choice(8, 16, 32, 64), "hidden": choice(128, 256, 512),
                   "beta": loguniform(1e-3, 1.0), "lr": loguniform(3e-4, 3e-3), "dropout": uniform(0.0, 0.5)})))
register(ModelSpec(
    "knn-bag", model="coldstart.models.neighbours:EnsembleGenerator", folder="knn-bag", stage="ensemble",
    row="coldstart (knn-bag)", about="knn-warm averaged over neighbour counts and similarity spaces"))
register(ModelSpec(
    "knn-residual", model="coldstart.models.residual:ResidualGenerator", folder="knn-residual", stage="ensemble",
    row="coldstart (knn-bag + residual)",
    about="knn-bag plus a correction learnt on warm items (ridge on content, strength by cross-validation)"))
register(ModelSpec(
    "ensemble", model="coldstart.models.neighbours:EnsembleGenerator", folder="ensemble", stage="ensemble",
    row="coldstart (ensemble)", about="The mean of the ensemble members the run made"))
register(ModelSpec(
    # Its row is the search's: "transfer tuned (lam=...)", beside "transfer lam=0" and "transfer lam=1".
    "transfer", model="coldstart.models.transfer:TransferGenerator", folder="transfer/generator",
    stage="transfer", row="transfer",
    about="Transfer from a source dataset, L = lam*L_source + (1-lam)*L_target",
    trainer="trainers.transfer:TransferConfig",
    usage="Needs --target SPLIT, --embeddings, --out; --source ml-1m and --lam 0.5 by default.",
    options="coldstart.models.transfer:TransferOptions",
    # Every item's vector is the one its artifact saved (`placed_items`), cold items' learnt ones included.
    keeps_warm_vectors=False,
    search=Search({"lam": uniform(0.0, 1.0), "lr": loguniform(5e-4, 5e-3)}, stage="transfer",
                  compare={"lam=0": {"lam": 0.0}, "lam=1": {"lam": 1.0}},
                  prepare="trainers.transfer:prepare_search", notes="trainers.transfer:search_notes")))
