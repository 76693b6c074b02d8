"""The models `benchmarks/quality.py` compares: name -> build(inputs) -> a recommender over the split.

Trained models run their real jobs (`trainers/*`) through the training skeleton
in-process; their best epoch (on cold-val NDCG@20) is what is scored.
"""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from coldstart.data.split import load_split
from coldstart.evaluate import SplitData
from coldstart.models.baselines import KNNWarmRecommender, PopularityRecommender
from coldstart.models.inputs import GeneratorInputs
from coldstart.models.mf import EmbeddingRecommender


@functools.lru_cache(maxsize=2)
def _encoder(model: str):
    from coldstart.text.encoder import EncoderConfig, TextEncoder

    return TextEncoder(EncoderConfig(model=model))


def spec_model(embeddings: Path) -> str:
    from coldstart import artifacts

    return artifacts.read_json(embeddings / "embed.json")["encoder"]["model"]


@dataclass
class Inputs(GeneratorInputs):
    """A prepared seed's folder as the models read it: the pipeline's generator inputs (`GeneratorInputs`: the
    backbone's vectors, the content features), with the features limited to one part when asked."""

    folder: Path
    seed: int
    features: str = "both"
    embeddings: str = "embeddings"

    @classmethod
    def load(cls, folder: Path, seed: int, features: str = "both", embeddings: str = "embeddings") -> "Inputs":
        data = SplitData.from_split(load_split(folder / "split"))
        encoder = _encoder(spec_model(folder / embeddings))
        read = GeneratorInputs.from_folders(data, folder, folder / embeddings, encoder)
        text_dim = read.item_text.shape[1]
        parts = {"both": slice(None), "text": slice(None, text_dim), "attributes": slice(text_dim, None)}[features]
        return cls(**{**vars(read), "item_features": read.item_features[:, parts],
                      "user_features": read.user_features[:, parts]},
                   folder=folder, seed=seed, features=features, embeddings=embeddings)


def train(job_class, config_class, inputs: Inputs, **overrides):
    """Fit a cold-model job in-process; the model of its best cold-val epoch."""
    from trainers.loop import LocalContext, fit

    cfg = config_class(split=inputs.folder / "split", embeddings=inputs.folder / "embeddings",
                       backbone=inputs.folder / "backbone", out=inputs.folder / "unused", seed=inputs.seed,
                       **overrides)
    job = job_class(cfg, inputs.arrays, inputs.content, data=inputs.data)
    with tempfile.TemporaryDirectory() as tmp:
        fit(job, LocalContext(folder=Path(tmp)))
        model = job.build_model()
        model.load_state_dict(job.load(Path(tmp) / "best"))
    return job, model.eval()


def towers(inputs: Inputs, **overrides):
    from trainers.distill import DistillConfig, DistillJob

    job, model = train(DistillJob, DistillConfig, inputs, **overrides)
    return EmbeddingRecommender(*job.vectors(model))


def vae(inputs: Inputs, **overrides):
    from trainers.generator import GeneratorConfig, VAEJob

    job, model = train(VAEJob, GeneratorConfig, inputs, **overrides)
    return EmbeddingRecommender(*job.vectors(model))


def knn_user_content(inputs: Inputs) -> np.ndarray | None:
    return inputs.arrays["user_features"] if inputs.data.split.cold == "users" else None


def knn_warm(inputs: Inputs, k: int = 5, user_k: int = 50):
    """knn-warm over the features the run uses (the LLM text part for items when it has one)."""
    text_dim = inputs.content["text_dim"]
    features = inputs.arrays["item_features"]
    item_content = features[:, :text_dim] if inputs.features in ("both", "text") else features
    return KNNWarmRecommender(inputs.data, inputs.user_vectors, inputs.item_vectors, item_content,
                              knn_user_content(inputs), k=k, user_k=user_k)


def knn_bag(inputs: Inputs):
    """The pipeline's knn-bag generator (`KNNGenerator.bag`): knn-warm averaged over neighbour counts 5, 10, 20
    (users' 25, 50, 100) and two similarity spaces (text; text and attributes), neighbours among warm items
    with at least 2 training interactions. Its vectors, as serving makes them."""
    from coldstart.models.neighbours import KNNGenerator
    from coldstart.models.towers import cold_start_vectors

    arrays, data = inputs.arrays, inputs.data
    fit = {"item_features": arrays["item_features"], "user_features": arrays["user_features"],
           "item_vectors": inputs.item_vectors, "user_vectors": inputs.user_vectors, "warm_items": data.warm_items,
           "warm_users": inputs.warm_users}
    # With `--features attributes` the one-hots are all an item has: they are then its similarity space.
    item_dims = arrays["item_features"].shape[1] if inputs.features == "attributes" else inputs.content["text_dim"]
    model = KNNGenerator.bag(**fit, item_dims=item_dims, item_counts=data.item_popularity())
    users, items = cold_start_vectors(model, user_vectors=inputs.user_vectors, item_vectors=inputs.item_vectors,
                                      warm_users=inputs.warm_users, warm_items=data.warm_items,
                                      user_features=arrays["user_features"], item_features=arrays["item_features"])
    return EmbeddingRecommender(users, items)


def knn_residual(inputs: Inputs):
    """The pipeline's knn-residual generator (`coldstart.models.residual`): knn-bag plus a ridge correction
    learnt on the warm items, its strength by cross-validation over them. Its vectors, as serving makes them."""
    return EmbeddingRecommender(*inputs.vectors(inputs.knn_residual()))


def knn_bag_all(inputs: Inputs, ks: tuple[int, ...] = (5, 10, 20), user_ks: tuple[int, ...] = (25, 50, 100)):
    """knn-warm averaged over several neighbour counts (items' and users'), text space, every warm item a
    neighbour: the first knn-bag (RESULTS, 2026-11-30)."""
    members = [knn_warm(inputs, k=k, user_k=user_k) for k, user_k in zip(ks, user_ks)]
    return EmbeddingRecommender(np.mean([m.user_vectors for m in members], axis=0),
                                np.mean([m.item_vectors for m in members], axis=0))


def ridge(inputs: Inputs, alpha: float = 10.0):
    """Closed-form ridge regression from an item's content (unit text vector, attributes, bias) to its backbone
    vector, fitted on the warm items: the linear content-to-backbone mapping. Item cold-start only."""
    if inputs.data.split.cold != "items":
        raise ValueError("ridge places cold items; this split's cold side is users")
    text_dim = inputs.content["text_dim"]
    x = inputs.arrays["item_features"].astype(np.float64)
    text = x[:, :text_dim] / np.maximum(np.linalg.norm(x[:, :text_dim], axis=1, keepdims=True), 1e-9)
    features = np.hstack([text, x[:, text_dim:], np.ones((len(x), 1))])
    warm, cold = inputs.data.warm_items, inputs.data.cold_items
    fw = features[warm]
    weights = np.linalg.solve(fw.T @ fw + alpha * np.eye(fw.shape[1]), fw.T @ inputs.item_vectors[warm])
    items = inputs.item_vectors.copy()
    items[cold] = (features[cold] @ weights).astype(items.dtype)
    return EmbeddingRecommender(inputs.user_vectors, items)


def neighbour_counts(inputs: Inputs, k: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """(cold users, their k attribute-nearest warm users' log interaction counts per item): a new user's
    demographic popularity. User cold-start only."""
    data = inputs.data
    if data.split.cold != "users":
        raise ValueError("neighbour popularity places cold users; this split's cold side is items")
    features = inputs.arrays["user_features"].astype(np.float64)
    features /= np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-9)
    warm, cold = np.flatnonzero(inputs.warm_users), np.flatnonzero(~inputs.warm_users)
    nearest = np.argsort(-(features[cold] @ features[warm].T), axis=1)[:, :k]
    weights = np.zeros((len(cold), len(warm)))
    np.put_along_axis(weights, nearest, 1.0 / k, axis=1)
    return cold, np.log1p(100 * np.asarray((data.train[warm].T @ weights.T).T))


def _spread(scores: np.ndarray) -> np.ndarray:
    return scores.std(axis=1, keepdims=True) + 1e-9


def knn_bag_popular(inputs: Inputs, share: float = 0.3):
    """A vector model: knn-bag's cold user vector plus the vector whose scores come closest (ridge least squares
    over every item) to the user's demographic popularity (`neighbour_counts`), `share` of the two in units of
    their score spreads. Tried for user cold-start (RESULTS): the 64-d item space cannot carry that popularity."""
    bag = knn_bag(inputs)
    cold, counts = neighbour_counts(inputs)
    items = inputs.item_vectors.astype(np.float64)
    target = counts - counts.mean(axis=1, keepdims=True)
    popular = np.linalg.solve(items.T @ items + np.eye(items.shape[1]), items.T @ target.T).T
    own = bag.user_vectors[cold].astype(np.float64)
    users = bag.user_vectors.copy()
    users[cold] = ((1 - share) * own / _spread(own @ items.T) + share * popular / _spread(popular @ items.T))
    return EmbeddingRecommender(users, inputs.item_vectors)


def demographic_logits(inputs: Inputs, l2: float = 1e-4, epochs: int = 300, lr: float = 0.05,
                       ) -> tuple[np.ndarray, np.ndarray]:
    """(cold users, their per-item logits b_i + W_i . x_u): multinomial logistic regression from a user's attribute
    one-hots x_u to the items they interact with, one softmax over the warm items, fitted full-batch on the warm
    users' training interactions (Adam; `l2` on W). Its item side is 1 + len(x_u) columns per item, so it could be
    served as an extra block of the index's rows (as the text match is); tried for user cold-start (RESULTS)."""
    import torch

    data = inputs.data
    if data.split.cold != "users":
        raise ValueError("demographic logits place cold users; this split's cold side is items")
    attributes = torch.tensor(inputs.arrays["user_features"][:, inputs.content["text_dim"]:], dtype=torch.float32)
    warm, cold = np.flatnonzero(inputs.warm_users), np.flatnonzero(~inputs.warm_users)
    counts = torch.tensor(data.train[warm].toarray(), dtype=torch.float32)
    unseen = torch.ones(data.n_items, dtype=torch.bool)
    unseen[torch.as_tensor(np.flatnonzero(data.warm_items))] = False
    bias = torch.zeros(data.n_items, requires_grad=True)
    weights = torch.zeros(attributes.shape[1], data.n_items, requires_grad=True)
    optimizer = torch.optim.Adam([bias, weights], lr=lr)

    def logits(x: torch.Tensor) -> torch.Tensor:
        return (bias + x @ weights).masked_fill(unseen, float("-inf"))

    torch.manual_seed(inputs.seed)
    for _ in range(epochs):
        optimizer.zero_grad()
        nll = -(counts * torch.log_softmax(logits(attributes[warm]), dim=1).nan_to_num(neginf=0.0)).sum()
        (nll / counts.sum() + l2 * (weights ** 2).sum()).backward()
        optimizer.step()
    with torch.no_grad():
        out = logits(attributes[cold]).numpy()
    return cold, np.where(np.isfinite(out), out, out[np.isfinite(out)].min()).astype(np.float64)


class ScoreBlend:
    """Not a vector model: knn-bag's scores and the user's demographic `prior` (`neighbour_counts`: the log
    counts of the 100 attribute-nearest warm users; `demographic_logits`: a multinomial logistic regression),
    each standardised per user, blended with `share` of the prior; warm users keep the backbone's scores.
    `share=1` is the prior alone."""

    def __init__(self, inputs: Inputs, share: float = 0.5, prior: Callable = neighbour_counts):
        bag = knn_bag(inputs)
        self.users, self.items = inputs.user_vectors, inputs.item_vectors
        cold, counts = prior(inputs)
        vector = bag.user_vectors[cold] @ self.items.T
        z = lambda m: (m - m.mean(axis=1, keepdims=True)) / _spread(m)  # noqa: E731
        self.blended = ((1 - share) * z(vector) + share * z(counts)).astype(np.float32)
        self.row = {int(u): i for i, u in enumerate(cold)}

    def score(self, users) -> np.ndarray:
        out = (self.users[users] @ self.items.T).astype(np.float32)
        for r, u in enumerate(users):
            if int(u) in self.row:
                out[r] = self.blended[self.row[int(u)]]
        return out


def cached(name: str, build: Callable[[Inputs], object]) -> Callable[[Inputs], object]:
    """`build`, its vectors kept under the seed's folder per feature set: members of ensembles train once."""
    def run(inputs: Inputs):
        path = inputs.folder / "vectors" / inputs.embeddings / inputs.features / f"{name}.npz"
        if path.is_file():
            kept = np.load(path)
            return EmbeddingRecommender(kept["users"], kept["items"])
        model = build(inputs)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, users=model.user_vectors, items=model.item_vectors)
        return model
    return run


def ensemble_of(names: tuple[str, ...]):
    """The mean item and user vectors of several models, new users shrunk towards the average one by the
    factor that does best on cold-val (as the pipeline's ensemble stage builds it)."""
    from coldstart.evaluate import evaluate

    def build(inputs: Inputs):
        members = [MODELS[n](inputs) for n in names]
        users = np.mean([m.user_vectors for m in members], axis=0)
        items = np.mean([m.item_vectors for m in members], axis=0)
        cold, center = ~inputs.warm_users, inputs.user_vectors[inputs.warm_users].mean(axis=0)
        best, best_score = None, -1.0
        for shrink in ((0.25, 0.5, 0.75, 1.0) if inputs.data.split.cold == "users" else (1.0,)):
            shrunk = users.copy()
            shrunk[cold] = center + shrink * (users[cold] - center)
            model = EmbeddingRecommender(shrunk, items)
            score = evaluate(model, inputs.data, on="val", ks=(20,))["cold"]["ndcg@20"]
            if score > best_score:
                best, best_score = model, score
        return best
    return build


MODELS: dict[str, Callable[[Inputs], object]] = {
    "popularity": lambda inputs: PopularityRecommender(inputs.data),
    "backbone": lambda inputs: EmbeddingRecommender(inputs.user_vectors, inputs.item_vectors),
    "knn-warm": knn_warm,
    "knn-bag": knn_bag,
    "knn-bag-all": knn_bag_all,
    "knn-residual": knn_residual,
    "ridge": ridge,
    "knn-bag-popular": knn_bag_popular,
    "score-blend": ScoreBlend,
    "demographic-logit": functools.partial(ScoreBlend, share=1.0, prior=demographic_logits),
    "logit-blend": functools.partial(ScoreBlend, prior=demographic_logits),
    "regression": cached("regression", functools.partial(towers, bpr=0.0, distill=0.0, align=1.0)),
    "towers": cached("towers", towers),
    "vae": cached("vae", vae),
}
MODELS["ensemble"] = ensemble_of(("knn-warm", "towers", "vae"))
MODELS["ensemble-bag"] = ensemble_of(("knn-bag", "towers", "vae"))
