"""Transfer learning from a source dataset to a target split, as a Ray Train job.

`L = lam * L_source + (1 - lam) * L_target` (see `coldstart/models/transfer.py`).
The target is an item-cold split with its LLM embeddings (`coldstart embed`);
the source is a dataset (ml-1m by default) whose item texts are embedded here
with the target's encoder and templates, so both live in one text space (the
vectors are kept and reused by text hash). Model selection and early stopping
are on the target's cold-val NDCG@20, like every cold-start model here.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from pydantic import Field

from coldstart import artifacts
from coldstart.config import ConfigError, JobConfig, NotApplicable, RayOptions, ScaleOptions
from coldstart.data import movielens
from coldstart.data.columns import find_title_column
from coldstart.data.schema import load_dataset
from coldstart.data.split import load_split
from coldstart.evaluate import SplitData, evaluate
from coldstart.models.saved import load_artifact, save_artifact
from coldstart.models.mf import EmbeddingRecommender, TrainPairs
from coldstart.models.transfer import (TransferModel, TransferOptions, TransferTraining, match_items, target_vectors,
                                       title_keys)
from coldstart.models.vectors import read_vectors
from coldstart.content import aligned
from coldstart.text.templates import item_texts, text_hash
from trainers.common import TrainResult
from trainers.embed import EmbedConfig, embed_texts
from trainers.loop import TrainJob, per_worker, run_job

log = logging.getLogger(__name__)


class TransferConfig(JobConfig, TransferOptions):
    source: str = Field("ml-1m", description="Source dataset: a MovieLens name (ml-1m, ml-100k) or a dataset folder.")
    target: Path = Field(..., description="Target split folder (item cold-start).")
    embeddings: Path = Field(..., description="LLM embeddings of the target split (coldstart embed).")
    out: Path = Field(..., description="Where the transfer model artifact is written.")
    source_embeddings: Path | None = Field(None, description="Where the source items' LLM vectors are kept "
                                                             "(default: next to --embeddings, named after both).")
    cache_dir: Path | None = Field(None, description="Dataset cache (default $COLDSTART_CACHE or ~/.cache/coldstart).")
    scale: ScaleOptions = Field(default_factory=ScaleOptions, description="Workers, devices, failures.")
    ray: RayOptions = Field(default_factory=RayOptions, description="Cluster connection.")

    @property
    def split(self) -> Path:
        """The split the model is trained and evaluated on: the target's (every other job calls it `split`)."""
        return self.target


def load_source(cfg: TransferConfig):
    if cfg.source in movielens.SOURCES:
        return load_dataset(movielens.fetch(cfg.source, cfg.cache_dir), name=cfg.source)
    if not Path(cfg.source).is_dir():
        raise ConfigError(f"source: {cfg.source!r} is neither a MovieLens name ({', '.join(movielens.SOURCES)}) "
                          "nor a dataset folder")
    return load_dataset(cfg.source)


def source_embeddings_dir(cfg: TransferConfig) -> Path:
    """Beside the target's embeddings, so every run on them (Tune trials, lam = 0 and 1) shares one copy."""
    if cfg.source_embeddings:
        return cfg.source_embeddings
    name = Path(cfg.source).name if Path(cfg.source).is_dir() else cfg.source
    return cfg.embeddings.parent / f"{cfg.embeddings.name}-source-{name}"


def source_text_vectors(cfg: TransferConfig, source_items: pd.DataFrame) -> tuple[pd.Index, np.ndarray]:
    """The source items' LLM vectors from the target's encoder and templates (one text space)."""
    meta = artifacts.read_json(cfg.embeddings / "embed.json")
    embed_cfg = EmbedConfig(encoder=meta["encoder"], templates=meta["templates"], split=cfg.target,
                            out=source_embeddings_dir(cfg), ray=cfg.ray)
    texts = item_texts(source_items, embed_cfg.templates).rename(columns={"item_id": "id"})
    texts["text_hash"] = texts["text"].map(text_hash)
    result = embed_texts({"items": texts}, embed_cfg)
    log.info("source item vectors: embedded %s, reused %s (from the vector cache %s)", result.embedded,
             result.reused, result.cached)
    return read_vectors(result.out / "items.parquet", "item_id")


def build_inputs(cfg: TransferConfig, data: SplitData) -> dict:
    """Joint item rows (target items first, then source-only items), their text, and both domains' pairs."""
    source = load_source(cfg)
    target_title = artifacts.read_json(cfg.embeddings / "embed.json")["templates"]["title_column"]
    source_title = find_title_column(source.items.columns)
    target_items = data.split.items.set_index("item_id").reindex(data.item_ids).reset_index(names="item_id")
    matched = match_items(source.items, target_items, source_title=source_title, target_title=target_title)
    target_ids, target_matrix = read_vectors(cfg.embeddings / "items.parquet", "item_id")
    source_ids, source_matrix = source_text_vectors(cfg, source.items)
    source_only = pd.Index(source.items["item_id"]).difference(pd.Index(matched.dropna().to_numpy()))
    # source item id -> joint row; a source item two target items match (duplicate titles) joins the first
    shared = pd.Series(np.arange(data.n_items), index=matched.to_numpy())[matched.notna().to_numpy()]
    rows = pd.concat([shared[~shared.index.duplicated()],
                      pd.Series(np.arange(data.n_items, data.n_items + len(source_only)), index=source_only)])
    text = np.concatenate([aligned(target_ids, target_matrix, data.item_ids),
                           aligned(source_ids, source_matrix, source_only)]).astype(np.float32)
    # each joint row's title key where the source's interactions train it: what a new item of that title is given
    # (of two target items with one title, the first, which the source's interactions join)
    taught = set(rows.iloc[:len(rows) - len(source_only)].to_numpy().tolist())
    source_keys = title_keys(source.items.set_index("item_id").loc[source_only].reset_index(), source_title)
    row_keys = [key if row in taught else None
                for row, key in enumerate(title_keys(target_items, target_title))] + source_keys

    inter = source.interactions.drop_duplicates(["user_id", "item_id"])
    source_users = pd.Index(sorted(inter["user_id"].unique()))
    train = data.split.train
    cold = np.flatnonzero(~data.warm_items)
    coverage = {"target_items": int(data.n_items), "covered": int(matched.notna().sum()),
                "cold_items": int(len(cold)), "cold_covered": int(matched.iloc[cold].notna().sum()),
                "source": cfg.source, "source_items": int(len(source.items)),
                "source_interactions": int(len(inter))}
    log.info("the source covers %d of %d target items (%d of %d cold)", coverage["covered"],
             coverage["target_items"], coverage["cold_covered"], coverage["cold_items"])
    if coverage["covered"] == 0:
        raise NotApplicable(f"source: {cfg.source} shares no item (by title and year) with the target {cfg.target}")
    twins = target_twins(inter, matched, data)
    coverage["target_twins"] = twins
    if twins["share"] >= LEAK_SHARE:
        raise ConfigError(
            f"source: {cfg.source} holds the target's own interactions: {twins['share']:.0%} of {twins['users']} "
            f"target users with cold-item interactions have a source user whose history holds at least "
            f"{TWIN_CONTAINMENT:.0%} of theirs, cold items included (a split made from the source itself?); "
            "the model would learn the held-out test interactions. Use another dataset as the source.")
    return {
        "text": text,
        "target_users": data.user_ids.get_indexer(train["user_id"]),
        "target_items": data.item_ids.get_indexer(train["item_id"]),
        "target_negatives": np.flatnonzero(data.warm_items),
        "source_users": source_users.get_indexer(inter["user_id"]),
        "source_items": rows.reindex(inter["item_id"]).to_numpy().astype(np.int64),
        "source_negatives": np.unique(rows.to_numpy()),
        "n_source_users": len(source_users),
        "coverage": coverage,
        "row_keys": row_keys,
    }


LEAK_SHARE = 0.5  # share of target users with a source twin above which the source is refused
TWIN_CONTAINMENT = 0.9  # a twin holds this much of a target user's matched history, and of their cold items
TWIN_SIZE = 0.5  # ... and the target user's history is at least this much of the twin's, among matched items
TWIN_SAMPLE = 300


def target_twins(source_interactions: pd.DataFrame, matched: pd.Series, data: SplitData, seed: int = 0) -> dict:
    """How many target users have a "twin" in the source: one source user whose history holds at least
    TWIN_CONTAINMENT of the target user's matched items, and as much of their cold (held-out) ones, and
    whose history among the matched items is not much larger than the target user's (theirs at least
    TWIN_SIZE of it): the same person, not a heavy user whose thousands of films contain anyone's.

    A source that contains the target's own interactions gives a twin for nearly every user, whatever
    its ids are called. Without the size condition, ml-1m's heaviest users "contained" 43-53% of ml-100k's
    users (seeds 42-44), and a seed past 50% refused a legitimate source. Checked from the data, since a
    split brought by a user carries no dataset name.
    """
    sets = data.split.sets
    key = {"items": "item_id", "users": "user_id"}[data.split.cold]
    cold_rows = pd.concat([sets["cold_val"], sets["cold_test"]])
    if key != "item_id" or cold_rows.empty:
        return {"users": 0, "twins": 0, "share": 0.0}
    source_item = pd.Series(matched.to_numpy(), index=matched.index)
    everything = pd.concat([sets[name] for name in ("train", "warm_val", "warm_test", "cold_val", "cold_test")
                            if name in sets])  # all the target holds of each user
    history = everything.assign(source=lambda f: f["item_id"].map(source_item)).dropna()
    cold_rows = cold_rows.assign(source=cold_rows["item_id"].map(source_item)).dropna()
    users = pd.Index(sorted(cold_rows["user_id"].unique()))
    if len(users) > TWIN_SAMPLE:
        users = pd.Index(np.random.default_rng(seed).choice(users, TWIN_SAMPLE, replace=False))
    items = pd.Index(sorted(source_interactions["item_id"].unique()))
    source_users = pd.Index(sorted(source_interactions["user_id"].unique()))

    def matrix(frame: pd.DataFrame, rows: pd.Index, row_column: str, item_column: str) -> sp.csr_matrix:
        frame = frame.loc[frame[row_column].isin(rows) & frame[item_column].isin(items)]
        m = sp.csr_matrix((np.ones(len(frame), np.float32), (rows.get_indexer(frame[row_column]),
                                                             items.get_indexer(frame[item_column]))),
                          shape=(len(rows), len(items)))
        m.data[:] = 1.0
        return m

    S = matrix(source_interactions, source_users, "user_id", "item_id")
    H = matrix(history, users, "user_id", "source")
    C = matrix(cold_rows, users, "user_id", "source")
    sizes_h = np.asarray(H.sum(axis=1)).ravel()
    sizes_c = np.asarray(C.sum(axis=1)).ravel()
    overlap_h = (H @ S.T).toarray() / np.maximum(sizes_h, 1)[:, None]
    overlap_c = (C @ S.T).toarray() / np.maximum(sizes_c, 1)[:, None]
    matched_items = items.isin(pd.Index(matched.dropna().to_numpy()))
    sizes_s = np.asarray(S[:, np.flatnonzero(matched_items)].sum(axis=1)).ravel()  # source users, matched items
    alike = sizes_h[:, None] >= TWIN_SIZE * sizes_s[None, :]
    has_twin = ((overlap_h >= TWIN_CONTAINMENT) & (overlap_c >= TWIN_CONTAINMENT) & alike).any(axis=1) \
        & (sizes_c > 0)
    counted = int((sizes_c > 0).sum())
    twins = int(has_twin.sum())
    return {"users": counted, "twins": twins, "share": twins / counted if counted else 0.0}


def save_transfer(folder: Path, data: SplitData, model: TransferModel, text: np.ndarray, meta: dict) -> Path:
    users, items = target_vectors(model, text, np.arange(data.n_items))
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    tensors.update(user_vectors=users, item_vectors=items)
    return save_artifact(folder, TransferModel.KIND, {"config": model.config, "user_ids": list(data.user_ids),
                                                      "item_ids": list(data.item_ids), **meta}, tensors)


def load_transfer_state(folder: Path) -> dict:
    _, tensors = load_artifact(folder)
    return {k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith("model.")}


class TransferJob(TrainJob):
    name = "transfer"
    key = "cold_val_ndcg@20"
    config_class = TransferConfig

    def __init__(self, cfg: TransferConfig, inputs: dict, data: SplitData | None = None):
        super().__init__(cfg)
        self.inputs = inputs
        self.data = data or SplitData.from_split(load_split(cfg.target))
        self.text = np.asarray(inputs["text"])
        self.target = TrainPairs(inputs["target_users"], inputs["target_items"], inputs["target_negatives"])
        self.source = TrainPairs(inputs["source_users"], inputs["source_items"], inputs["source_negatives"])
        self.meta = {"lam": cfg.lam, "source": cfg.source, "coverage": inputs["coverage"],
                     "row_keys": inputs.get("row_keys", [])}

    def build_model(self) -> TransferModel:
        cfg = self.cfg
        return TransferModel(self.text.shape[1], len(self.text), self.inputs["n_source_users"], self.data.n_users,
                             cfg.dim, cfg.hidden, cfg.dropout)

    def build_training(self, model, device, precision) -> TransferTraining:
        return TransferTraining(model, self.text, lam=self.cfg.lam, lr=self.cfg.lr,
                                weight_decay=self.cfg.weight_decay, device=device, precision=precision)

    def batches(self, epoch, rank, world):
        seed = self.cfg.seed + 1000 * epoch + rank
        self.target.reseed(seed)
        self.source.reseed(seed + 500)
        size = per_worker(self.cfg.batch_size, world)
        return zip(self.target.batches(size, order=self.shard(len(self.target), epoch, rank, world)),
                   self.source.batches(size, order=self.shard(len(self.source), epoch, rank, world, stream=500)))

    def validate(self, model):
        users, items = target_vectors(model, self.text, np.arange(self.data.n_items))
        val = evaluate(EmbeddingRecommender(users, items), self.data, on="val-select", ks=(20,))
        return {"lam": self.cfg.lam, **{f"{g}_val_ndcg@20": val[g]["ndcg@20"] for g in ("cold", "warm", "all")}}, 1.0

    def save(self, folder, model, meta):
        save_transfer(folder, self.data, model, self.text, {**self.meta, **meta})

    def load(self, folder):
        return load_transfer_state(folder)


def prepare_search(cfg: TransferConfig) -> None:
    """Before a search's trials: embed the source's item texts once, into the folder every trial reads."""
    build_inputs(cfg, SplitData.from_split(load_split(cfg.target)))


def search_notes(cfg: TransferConfig, model_dir: Path) -> list[str]:
    """The lines heading a search's comparison: how much of the target the source covers."""
    coverage = artifacts.read_json(Path(model_dir) / "model.json")["coverage"]
    return [f"Source {cfg.source} covers {coverage['covered']} of {coverage['target_items']} target items "
            f"({coverage['cold_covered']} of {coverage['cold_items']} cold ones).", ""]


def run(cfg: TransferConfig, callbacks: list | None = None, context=None) -> TrainResult:
    data = SplitData.from_split(load_split(cfg.target))
    if data.split.cold != "items":
        raise ConfigError(f"target: transfer needs an item cold-start split (the domains share items, not users); "
                          f"{cfg.target} is {data.split.cold}-cold")
    inputs = build_inputs(cfg, data)
    result = run_job(TransferJob, cfg, inputs={"inputs": inputs}, callbacks=callbacks, context=context)
    result.best["coverage"] = inputs["coverage"]
    return result
