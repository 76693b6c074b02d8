"""Transfer from a source domain to a target domain that share the LLM text space.

Items of both domains are placed by one content tower over their LLM text
vector, plus an id embedding shared by the items the two domains have in
common (matched on a normalised "title (year)"). Users are disjoint: each
domain has its own user table. Training minimises

    L = lam * L_source + (1 - lam) * L_target,

each a BPR loss over that domain's interactions. A target item that is cold
in the target but present in the source learns its shared embedding from the
source's interactions alone; a target item in neither gets its tower vector.
lam = 0 is the target alone, lam = 1 the source alone (the target's users
then never train), and the search looks in between.
"""

from __future__ import annotations

import re
import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from coldstart.data.columns import ColumnRoles, clean_entity_table, is_missing, read_year
from coldstart.models.kinds import COLD_MODELS, cold_model
from coldstart.models.layers import Dropout
from coldstart.models.mf import bpr_loss
from coldstart.models.neighbours import KNNGenerator
from coldstart.training import StepTraining, as_input, unwrap

_ARTICLE = re.compile(r"^(?P<rest>.*), (?P<article>the|a|an|les|la|le|il|el|das|der|die)$")


class TransferOptions(BaseModel):
    """Hyper-parameters of the transfer model, shared by `coldstart train transfer`, Tune and the pipeline."""

    model_config = ConfigDict(extra="forbid")
    lam: float = Field(0.5, ge=0, le=1, description="Weight of the source loss; the target gets 1 - lam.")
    dim: int = Field(64, gt=0, description="Embedding dimension.")
    hidden: int = Field(256, gt=0, description="Hidden width of the item content tower.")
    dropout: float = Field(0.2, ge=0, lt=1, description="Dropout in the item content tower.")
    epochs: int = Field(20, gt=0, description="Most epochs; an epoch is one pass over the target's train set.")
    patience: int = Field(5, gt=0, description="Stop after this many epochs without a better cold-val NDCG@20.")
    batch_size: int = Field(1024, gt=0, description="Interactions per step and domain, over all workers.")
    lr: float = Field(2e-3, gt=0, description="Adam learning rate.")
    weight_decay: float = Field(1e-4, ge=0, description="L2 on the embeddings of each batch.")
    seed: int = Field(42, description="Seed of initialisation and sampling.")


def match_key(title, year) -> str | None:
    """'Usual Suspects, The' (1995) and 'The Usual Suspects' (1995) give the same key. A missing or empty title
    gives None, which matches nothing; a year that is missing or not a number leaves "title ()"."""
    if is_missing(title):
        return None
    text = str(title).strip().lower()
    text = re.sub(r"\s*\(.*?\)\s*", " ", text).strip()  # alternative titles in brackets
    found = _ARTICLE.match(text)
    if found:
        text = f"{found['article']} {found['rest']}"
    text = re.sub(r"[^0-9a-z]+", " ", text).strip()
    if not text:  # "???" and "(1995)" say nothing that could tell two items apart
        return None
    year = read_year(year)
    return f"{text} ({'' if year is None else year})"


def title_keys(items: pd.DataFrame, title: str | None) -> list[str | None]:
    """Each item's `match_key`, its title and year read as the loaders read them (for tables that did not come
    through a loader: a registration's fields); all None without a title column."""
    if title is None or title not in items.columns:
        return [None] * len(items)
    read = clean_entity_table(items[[c for c in (title, "year") if c in items.columns]], "item_id",
                              roles=ColumnRoles(title))
    years = read["year"] if "year" in read.columns else [None] * len(read)
    return [match_key(t, y) for t, y in zip(read[title], years)]


def match_items(source: pd.DataFrame, target: pd.DataFrame, *, source_title: str | None = "title",
                target_title: str | None = "title") -> pd.Series:
    """For each target item id, the matching source item id, or NaN; a key shared by several source items is
    ambiguous and left unmatched. `*_title`: each table's title column (the run's record for the target).
    Without a title column nothing matches; without a year, titles alone do."""
    source_keys = title_keys(source, source_title)
    shared = pd.Series(source_keys).value_counts()
    lookup = {k: item for k, item in zip(source_keys, source["item_id"]) if k is not None and shared[k] == 1}
    return pd.Series([lookup.get(k, np.nan) for k in title_keys(target, target_title)],
                     index=target["item_id"].to_numpy(), dtype=object, name="source_item_id")


def known_rows(row_keys: list[str | None], residuals: np.ndarray) -> tuple[list[str], np.ndarray]:
    """(keys, residuals) of the joint rows the source taught: a row with a key no other row shares and an id
    embedding that trained (a row never trained is zero). What a new item with one of these titles is given
    beside its tower vector, as training gave the item."""
    residuals = np.asarray(residuals, np.float32)
    counts = pd.Series([k for k in row_keys if k is not None], dtype=object).value_counts()
    rows = [i for i, k in enumerate(row_keys)
            if k is not None and counts[k] == 1 and np.any(residuals[i] != 0)]
    return [row_keys[i] for i in rows], residuals[rows].reshape(len(rows), residuals.shape[1])


def fit_projection(source: np.ndarray, target: np.ndarray, ridge: float = 1e-2) -> np.ndarray:
    """The linear map W (source dim x target dim) with `source @ W` closest to `target` (ridge-regularised,
    relative to the source's scale): from transfer's item space to the backbone's, on the items both know."""
    source, target = np.asarray(source, np.float64), np.asarray(target, np.float64)
    gram = source.T @ source
    penalty = ridge * np.trace(gram) / max(len(gram), 1)
    return np.linalg.solve(gram + penalty * np.eye(len(gram)), source.T @ target).astype(np.float32)


def text_tower(text_dim: int, hidden: int, dim: int, dropout: float) -> nn.Sequential:
    """The item content tower shared by both domains: LLM text vector -> item vector."""
    return nn.Sequential(nn.Linear(text_dim, hidden), nn.GELU(), Dropout(dropout), nn.Linear(hidden, dim))


class TransferModel(nn.Module):
    KIND = "coldstart-transfer"

    def __init__(self, text_dim: int, n_items: int, n_source_users: int, n_target_users: int, dim: int = 64,
                 hidden: int = 256, dropout: float = 0.2):
        super().__init__()
        self.config = {"text_dim": text_dim, "n_items": n_items, "n_source_users": n_source_users,
                       "n_target_users": n_target_users, "dim": dim, "hidden": hidden, "dropout": dropout}
        self.tower = text_tower(text_dim, hidden, dim, dropout)
        self.item = nn.Embedding(n_items, dim)  # joint item table: a matched item has one row for both
        nn.init.zeros_(self.item.weight)  # an item never trained is its tower vector, nothing else
        self.source_user = nn.Embedding(n_source_users, dim)
        self.target_user = nn.Embedding(n_target_users, dim)
        nn.init.normal_(self.source_user.weight, std=0.1)
        nn.init.normal_(self.target_user.weight, std=0.1)

    def item_vectors(self, text: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return self.tower(text) + self.item(rows)

    def forward(self, text: torch.Tensor, source: tuple, target: tuple):
        """BPR loss and the squared norms of the rows used, for a source and a target batch at once,
        so that DDP sees one forward per step."""
        # The tower runs once per distinct item of the step (both domains index one joint item table), not once
        # per pos and neg row of each domain's batch: the same sums, fewer rows.
        rows = torch.unique(torch.cat([source[1], source[2], target[1], target[2]]))
        vectors = self.item_vectors(text[rows], rows)
        out = []
        for users_table, (users, pos, neg) in ((self.source_user, source), (self.target_user, target)):
            u = users_table(users)
            where = torch.searchsorted(rows, torch.stack([pos, neg]))
            p, n = vectors[where[0]], vectors[where[1]]
            sq = (u.pow(2).sum() + self.item(pos).pow(2).sum() + self.item(neg).pow(2).sum()) / max(len(users), 1)
            out.append((bpr_loss((u * p).sum(-1), (u * n).sum(-1)), sq))
        return out


class TransferTraining(StepTraining):
    """Batches are (target, source) pairs of (user, pos, neg) batches: an epoch is one pass over the
    target's train pairs, each step with a source batch of the same size."""

    def __init__(self, model: nn.Module, text: np.ndarray, *, lam: float, lr: float = 2e-3,
                 weight_decay: float = 1e-4, device=None, precision: str = "fp32"):
        super().__init__(model, torch.optim.Adam(model.parameters(), lr=lr), device=device, precision=precision)
        self.text = self.place(text)
        self.lam, self.weight_decay = lam, weight_decay

    def loss(self, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        target, source = batch
        (source_bpr, source_sq), (target_bpr, target_sq) = self.model(self.text, source, target)
        loss = self.lam * (source_bpr + self.weight_decay * source_sq) \
            + (1 - self.lam) * (target_bpr + self.weight_decay * target_sq)
        return loss, {"source_bpr": source_bpr, "target_bpr": target_bpr}


@torch.no_grad()
def target_vectors(model: nn.Module, text: np.ndarray, target_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(target user vectors, target item vectors in the target's item order)."""
    model = unwrap(model)
    was_training = model.training
    model.eval()
    rows = as_input(target_rows, model, dtype=torch.long)
    items = model.item_vectors(as_input(text, model)[rows], rows)
    model.train(was_training)
    return model.target_user.weight.detach().float().cpu().numpy().copy(), items.float().cpu().numpy()


@cold_model
class TransferGenerator(nn.Module):
    """A trained transfer model as a servable generator.

    A new item gets the content tower's vector of its LLM text: what the transfer model gives every item
    it never trained a row for. The model has no user tower, so a new user gets the mean vector of the
    `user_k` target users whose profiles (features) are nearest, as knn-warm places users.

    In the transfer model's own space (no `projection`) the catalogue's items and users keep the vectors the
    model learnt (the artifact marks them placed), source-matched cold items included; then every warm user
    is ranked in transfer's space, which cost warm users a quarter of their NDCG on ml-100k. With a
    `projection` (`fit_projection`: transfer's item vectors to the backbone's, fitted on the items both
    know) the vectors it generates, and the cold items' learnt ones, are carried into the backbone's space:
    warm users and items keep their backbone vectors and new items get transfer's knowledge.

    A new item whose title the source knew (`known_keys`: the item's `match_key`, given to `generate_items` as
    `keys`) gets the id embedding the source's interactions taught, beside its tower vector, as training gave
    the split's items the source knew: a registration of one of them gets the vector the report measured.
    A title the source never saw gets the tower's vector, or, with `unknown` (a generator in the backbone's
    space, e.g. knn-bag, chosen where it places the split's cold items better from content alone), that one's.
    """

    KIND = "coldstart-transfer-generator"

    def __init__(self, text_dim: int, hidden: int, dim: int, dropout: float, user_in: int, n_users: int,
                 user_k: int = 50, project_dim: int | None = None, known_keys: list[str] | None = None,
                 unknown: dict | None = None):
        """`unknown`: {"kind": KIND, "config": {...}} of the generator for titles the source never saw."""
        super().__init__()
        known_keys = list(known_keys or [])
        self.config = {"text_dim": text_dim, "hidden": hidden, "dim": dim, "dropout": dropout, "user_in": user_in,
                       "n_users": n_users, "user_k": user_k, "project_dim": project_dim, "known_keys": known_keys,
                       "unknown": unknown}
        self.unknown = COLD_MODELS[unknown["kind"]](**unknown["config"]) if unknown else None
        self.text_dim = text_dim
        self.tower = text_tower(text_dim, hidden, dim, dropout)
        out_dim = project_dim or dim
        self.users = KNNGenerator(text_dim, user_in, out_dim, 0, n_users, text_dim, k=user_k, user_k=user_k)
        self.projection = nn.Parameter(torch.zeros(dim, project_dim), requires_grad=False) if project_dim else None
        self.known_keys = {k: i for i, k in enumerate(known_keys)}
        self.register_buffer("known", torch.zeros(len(known_keys), dim))

    @classmethod
    def of(cls, model: "TransferModel", *, user_features: np.ndarray, user_vectors: np.ndarray,
           warm_users: np.ndarray, user_k: int = 50, projection: np.ndarray | None = None,
           row_keys: list[str | None] | None = None, unknown: nn.Module | None = None) -> "TransferGenerator":
        """From a trained `TransferModel` and the target users' features and vectors (in the space the
        generator answers in: transfer's own, or the backbone's with `projection`). `row_keys`: the title key
        of each row of the model's item table that the source knew (None elsewhere; `build_inputs`).
        `unknown`: the generator for titles the source never saw (in the space the generator answers in)."""
        model = unwrap(model)
        c = model.config
        out_dim = None if projection is None else int(projection.shape[1])
        row_keys = list(row_keys or [])
        keys, residuals = known_rows(row_keys, model.item.weight.detach().float().cpu().numpy()[:len(row_keys)])
        generator = cls(c["text_dim"], c["hidden"], c["dim"], c["dropout"], user_features.shape[1],
                        int(warm_users.sum()), user_k, out_dim, keys,
                        None if unknown is None else {"kind": unknown.KIND, "config": unknown.config})
        generator.known.copy_(torch.as_tensor(residuals))
        if unknown is not None:
            generator.unknown.load_state_dict(unknown.state_dict())
        generator.tower.load_state_dict(model.tower.state_dict())
        if projection is not None:
            generator.projection.data.copy_(torch.as_tensor(projection, dtype=torch.float32))
        generator.users = KNNGenerator.fit(
            item_features=np.zeros((0, c["text_dim"]), np.float32), user_features=user_features,
            item_vectors=np.zeros((0, out_dim or c["dim"]), np.float32), user_vectors=user_vectors,
            warm_items=np.zeros(0, bool), warm_users=warm_users, item_dims=c["text_dim"], k=user_k, user_k=user_k)
        return generator.eval()

    def generate_items(self, x: torch.Tensor, keys: list[str | None] | None = None) -> torch.Tensor:
        """`keys`: each item's title key (`title_keys`; none given: no title known). An item the source knew
        gets what it taught beside its tower vector; the others the tower's, or `unknown`'s where it is set."""
        vectors = self.tower(x[:, :self.text_dim].float())
        at = [(i, self.known_keys[k]) for i, k in enumerate(keys or []) if k in self.known_keys]
        if at:
            rows, known = zip(*at)
            vectors = vectors.index_add(0, torch.as_tensor(rows), self.known[list(known)].to(vectors.dtype))
        vectors = vectors if self.projection is None else vectors @ self.projection
        if self.unknown is not None:
            new = np.setdiff1d(np.arange(len(x)), [i for i, _ in at])
            if len(new):
                new = torch.as_tensor(new)
                vectors = vectors.index_copy(0, new, self.unknown.generate_items(x[new]).to(vectors.dtype))
        return vectors

    def generate_users(self, x: torch.Tensor) -> torch.Tensor:
        return self.users.generate_users(x)
