"""What users get, measured through the serving code path, and the served configuration chosen on it.

Every figure here is taken from a `Catalogue`, the object the ranker replicas
hold, answering `recommend_user` for each user of a split's val or test sets
with the protocol's candidates (`coldstart.evaluate`: cold sets among cold
items, warm among warm, all among both), the user's train items left out. With
no slots kept for new items a generator's figures are its offline evaluation's.

The choice (`choose_served`), on validation:
1. For each generator the run made, the slots of a list kept for new items
   (`Catalogue.new_slots`, `Mixed.choose_slots`): by default new items get
   the share of the slots that new items have of what validation's users went
   on to like (about 0.55 on ml-100k item-cold). A pattern learnt on
   validation (`Slots.learnt`: each slot to old or new items by the mean gain
   of each list's entry at that rank) or a fixed share, whichever scores best
   on validation users it was not fitted on, replaces the default only if it
   beats it beyond noise over the held-out items. New items' generated
   vectors score on another scale than old items' trained ones. On six seeds
   validation's best pattern never cleared that noise, and on two of them it
   kept 0 to 4 slots where test wanted 8 to 12: the default's all-items
   NDCG@20 on test was 1.195x the backbone's against 1.154x for validation's
   best (benchmarks/RESULTS.md).
2. A generator whose warm or all-items NDCG is below the backbone's beyond
   noise is not served: the upper end of a bootstrap interval more than 1% of
   the backbone's figure below 0, over users for warm, over the held-out
   items for all items (a few new items decide what their slots are worth).
   The backbone's all-items figure is its list of old items alone.
3. The default is the generator that fits without a training job (knn-warm,
   knn-bag, knn-residual: its `refit`) of the highest pseudo-cold NDCG@20
   (`coldstart.pseudo_cold`: folds of warm items hidden from it and placed
   from their content, thousands of items where cold-val has ~170); `DEFAULT`
   where the run made none of them. On nine ml-100k seeds, three ml-1m seeds and
   a user-cold split the pseudo-cold order (knn-residual, knn-bag, knn-warm) was
   the test order of the means (benchmarks/RESULTS.md).
4. The default is served unless an eligible generator beats it on cold NDCG
   beyond noise on validation's audit half (the cold-val items no training
   selected on, `coldstart.evaluate`): the lower end of a paired bootstrap
   interval over those items (each item's share of the NDCG, resampled) above
   0. Users of one split share its ~170 new items, so which of them are popular
   decides most of a score, and an interval over users is far too narrow; a
   model tuned or early-stopped on cold-val is also biased towards those very
   items. The trained generators (towers, VAE, transfer) cannot be refitted
   per fold here; this is where they win their place.
The evidence (each candidate's figures, intervals and slots, the reference, the
rule) is recorded in serving.json beside the choice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from coldstart import pseudo_cold, registry
from coldstart.evaluate import GROUPS, SplitData
from coldstart.metrics import batch_metrics, metric_names
from coldstart.models.inputs import GeneratorInputs
from coldstart.models.saved import is_artifact
from coldstart.serving import statements
from coldstart.serving.catalogue import Catalogue
from coldstart.serving.slots import Slots, interleave
from coldstart.serving.config import GENERATOR_FOLDERS
from coldstart.serving.served_models import ServingGenerator

log = logging.getLogger(__name__)

K = 20
AUDIT = "val-audit"  # the half of cold-val that training never selected on (`coldstart.evaluate`)
DEFAULT = "knn-residual"  # where the run made no generator that pseudo-cold folds can refit
SHARES = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.7)  # of a list's slots for new items: 0 to 14 of 20
BOOTSTRAP = 1000
TOLERANCE = 0.01  # of the backbone's warm or all-items NDCG: a smaller loss is no reason to refuse a generator


def _truth(data: SplitData, group: str, on: str) -> dict[str, set[str]]:
    pairs = data.eval_set(group, on)
    return {u: set(items) for u, items in pairs.groupby("user_id")["item_id"]}


def _ranked(catalogue: Catalogue, user: str, candidates: list[str], k: int) -> tuple[list[str], np.ndarray]:
    answer = catalogue.recommend_user(user, k, candidates=candidates)["items"]
    return [i["item_id"] for i in answer], np.asarray([i["score"] for i in answer], np.float64)


def _metrics(lists: list[list[str]], truths: list[set[str]], ks: tuple[int, ...]) -> dict[str, np.ndarray]:
    """Per-user metric values of ranked lists, as `coldstart.metrics` defines them."""
    k = max(ks)
    hits = torch.tensor([[i in truth for i in ranked[:k]] + [False] * (k - len(ranked[:k]))
                         for ranked, truth in zip(lists, truths)], dtype=torch.bool).reshape(len(lists), k)
    n_true = torch.tensor([len(t) for t in truths])
    return {name: values.numpy() for name, values in batch_metrics(hits, n_true, ks).items()}


def _contributions(lists: list[list[str]], truths: list[set[str]], k: int = K) -> dict[str, float]:
    """Each held-out item's share of the mean NDCG@k: its hits' gains over each user's IDCG, over the users.
    The shares sum to the mean, so resampling items resamples the figure (`item_interval`)."""
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    ideal = np.cumsum(discounts)
    shares = {i: 0.0 for truth in truths for i in truth}
    for ranked, truth in zip(lists, truths):
        idcg = ideal[min(len(truth), k) - 1] * len(lists)
        for rank, item in enumerate(ranked[:k]):
            if item in truth:
                shares[item] += discounts[rank] / idcg
    return shares


def _summary(per_user: dict[str, np.ndarray], ks: tuple[int, ...]) -> dict:
    n = len(next(iter(per_user.values()))) if per_user else 0
    return {**{name: float(per_user[name].mean()) if n else float("nan") for name in metric_names(ks)}, "users": n}


def served_metrics(catalogue: Catalogue, data: SplitData, on: str = "test", ks: tuple[int, ...] = (10, 20),
                   groups: tuple[str, ...] = GROUPS, item_shares: dict | None = None
                   ) -> tuple[dict, dict[str, np.ndarray]]:
    """(the evaluate JSON of what the catalogue serves, {group: per-user NDCG@20}) on `on`'s sets;
    `item_shares`, when given, gets {group: each held-out item's share of the NDCG@20} (`_contributions`)."""
    known = set(catalogue.item_pos)
    out, per_user = {}, {}
    for group in groups:
        truth = _truth(data, group, on)
        candidates = [i for i in data.item_ids[data.candidates(group)] if i in known]
        users = [u for u in truth if u in catalogue.users]
        lists = [_ranked(catalogue, u, candidates, max(ks))[0] for u in users]
        values = _metrics(lists, [truth[u] for u in users], ks) if users else {}
        out[group] = _summary(values, ks)
        per_user[group] = values.get(f"ndcg@{K}", np.zeros(0))
        if item_shares is not None:
            item_shares[group] = _contributions(lists, [truth[u] for u in users])
    return out, per_user


@dataclass
class Mixed:
    """Per user of a split's `all` set: the catalogue's ranked old items and ranked new items (two searches),
    and the held-out items; merged as the catalogue merges them (`interleave`, its new items the split's cold
    ones here), any slot pattern costs no further search. `new_share`: the share of the held-out interactions
    that are with new items."""

    old: list[list[str]]
    new: list[list[str]]
    old_scores: list[np.ndarray]
    new_scores: list[np.ndarray]
    truths: list[set[str]]
    new_share: float = 0.0

    def lists(self, slots: Slots | None) -> list[list[str]]:
        """Each user's list with `slots` for new items; no pattern (`Slots()`): one ranking by score, as the
        catalogue's single search gives; None: the old items alone."""
        if slots is None:
            return self.old
        if slots:
            return [interleave(o, n, K, slots) for o, n in zip(self.old, self.new)]
        return [[(o + n)[j] for j in np.argsort(-np.concatenate([os_, ns]), kind="stable")[:K]]
                for o, n, os_, ns in zip(self.old, self.new, self.old_scores, self.new_scores)]

    def ndcg(self, slots: Slots | None) -> np.ndarray:
        """Per-user all-items NDCG@20 with `slots` for new items (`lists`)."""
        return _metrics(self.lists(slots), self.truths, (K,))[f"ndcg@{K}"]

    def item_shares(self, slots: Slots | None) -> dict[str, float]:
        """Each held-out item's share of the all-items NDCG@20 with `slots` (`_contributions`), for
        `item_interval`."""
        return _contributions(self.lists(slots), self.truths)

    def gains(self, lists: list[list[str]]) -> np.ndarray:
        """The mean gain of a list's entry at each rank: a hit's weight in its user's NDCG@20 (1 / IDCG)."""
        ideal = np.cumsum(1.0 / np.log2(np.arange(2, K + 2)))
        out = np.zeros(K)
        for ranked, truth in zip(lists, self.truths):
            hits = np.asarray([i in truth for i in ranked[:K]], np.float64)
            out[:len(hits)] += hits / ideal[min(len(truth), K) - 1]
        return out / max(len(lists), 1)

    def learnt(self) -> Slots:
        """The slot pattern of highest NDCG on these users (`Slots.learnt`)."""
        return Slots.learnt(self.gains(self.old), self.gains(self.new))

    def subset(self, users: np.ndarray) -> "Mixed":
        return Mixed(*([column[i] for i in users] for column in (self.old, self.new, self.old_scores,
                                                                 self.new_scores, self.truths)), self.new_share)

    def choose_slots(self, repeats: int = 5, seed: int = 0) -> tuple[Slots, dict]:
        """The slots for new items and their evidence. The default gives new items the share of the slots that
        new items have of what these users went on to like (`new_share`). The challenger is the best of a
        pattern learnt on half of these users (`learnt`) and the fixed shares (`SHARES`), each scored on the
        other half over `repeats` random halvings both ways (a learnt pattern is then taken from all the
        users). The challenger is served only if it beats the default beyond noise over the held-out items
        (`item_interval`: a few new items, and which of them are liked, decide how much their slots are worth;
        an interval over users is far too narrow). On six ml-100k seeds validation's best pattern was never
        beyond that noise, and where it kept few slots (two seeds: validation's new items were placed badly)
        test wanted about the default (benchmarks/RESULTS.md)."""
        rng, n = np.random.default_rng(seed), len(self.truths)
        candidates = {"learnt": None, **{f"share {s:g}": Slots.share(s) for s in SHARES}}
        scores = dict.fromkeys(candidates, 0.0)
        for _ in range(repeats):
            order = rng.permutation(n)
            for fit, held in ((order[:n // 2], order[n // 2:]), (order[n // 2:], order[:n // 2])):
                fitted, scored = self.subset(fit), self.subset(held)
                for name, slots in candidates.items():
                    scores[name] += float(scored.ndcg(fitted.learnt() if slots is None else slots).mean()) / (2 * repeats)
        best = max(scores, key=scores.get)
        default, challenger = Slots.share(self.new_share), self.learnt() if candidates[best] is None else candidates[best]
        versus = item_interval(self.item_shares(challenger), self.item_shares(default)) if n else (float("nan"),) * 2
        evidence = {"crossfit": scores, "default": default.record(), "default_share": self.new_share,
                    "challenger": best, "challenger_vs_default": versus}
        return (challenger if versus[0] > 0 else default), evidence


def mixed(catalogue: Catalogue, data: SplitData, on: str) -> Mixed:
    truth = _truth(data, "all", on)
    warm = [i for i in data.item_ids[data.candidates("all") & data.warm_items] if i in catalogue.item_pos]
    cold = [i for i in data.item_ids[data.candidates("all") & ~data.warm_items] if i in catalogue.item_pos]
    users = [u for u in truth if u in catalogue.users]
    base = catalogue.new_slots
    catalogue.new_slots = Slots()
    try:
        old = [_ranked(catalogue, u, warm, K) for u in users]
        new = [_ranked(catalogue, u, cold, K) for u in users] if cold else [([], np.zeros(0)) for _ in users]
    finally:
        catalogue.new_slots = base
    fresh, held = set(cold), [truth[u] for u in users]
    new_share = sum(len(t & fresh) for t in held) / max(sum(len(t) for t in held), 1)
    return Mixed([o for o, _ in old], [n for n, _ in new], [s for _, s in old], [s for _, s in new], held, new_share)


def paired_interval(a: np.ndarray, b: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """95% bootstrap interval, over users, of mean(a) - mean(b) (the same users, in the same order)."""
    diff = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    if not len(diff):
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), (BOOTSTRAP, len(diff)))].mean(axis=1)
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def item_interval(a: dict[str, float], b: dict[str, float], seed: int = 0) -> tuple[float, float]:
    """95% bootstrap interval, over the held-out items, of NDCG(a) - NDCG(b): each item's shares (the same
    items in both) weighed by how often a resample of the items draws it."""
    items = sorted(set(a) | set(b))
    if not items:
        return float("nan"), float("nan")
    diff = np.asarray([a.get(i, 0.0) - b.get(i, 0.0) for i in items])
    counts = np.random.default_rng(seed).multinomial(len(items), np.full(len(items), 1 / len(items)), BOOTSTRAP)
    sums = counts @ diff
    return float(np.quantile(sums, 0.025)), float(np.quantile(sums, 0.975))


def cold_item_shares(user_vectors: np.ndarray, item_vectors: np.ndarray, data: SplitData, on: str) -> dict[str, float]:
    """Each held-out cold item's share of cold NDCG@20 on `on` (`_contributions`) when each user ranks the cold
    candidates by these vectors (`data`'s order): what `item_interval` compares, without a catalogue."""
    truth = _truth(data, "cold", on)
    users = list(truth)
    candidates = np.flatnonzero(data.candidates("cold"))
    scores = user_vectors[data.user_ids.get_indexer(users)] @ item_vectors[candidates].T
    top = np.argsort(-scores, axis=1, kind="stable")[:, :K]
    return _contributions([list(data.item_ids[candidates[row]]) for row in top], [truth[u] for u in users])


def generators_made(out: Path) -> list[str]:
    return [name for name, folder in GENERATOR_FOLDERS.items() if is_artifact(Path(out) / folder)]


def choose_served(out: Path, data: SplitData) -> dict:
    """The served generator and the slots for new items with their evidence (the module docstring's rule), for
    serving.json; {} when the run made no generator."""
    names = generators_made(out)
    if not names:
        return {}
    evidence, per_user, per_item, all_items, models, reference = {}, {}, {}, {}, {}, None
    for name in names:
        generator = ServingGenerator(out, name)
        models[name] = generator.model
        catalogue = Catalogue.from_artifacts(out, generator, encoder=None, new_slots=Slots())
        item_shares: dict = {}
        _, groups = served_metrics(catalogue, data, on=AUDIT, groups=("cold", "warm"), item_shares=item_shares)
        per_item[name] = item_shares["cold"]
        # all of validation: in the audit half a new item's slot could find only half the new items that
        # have interactions, and the share learnt there ran low (0 to 0.2 where test wanted 0.3 to 0.4)
        lists = mixed(catalogue, data, "val")
        slots, slot_evidence = lists.choose_slots()
        per_user[name] = {**groups, "all": lists.ndcg(slots)}
        all_items[name] = lists.item_shares(slots)
        if reference is None and registry.model(name).keeps_warm_vectors:  # the backbone: warm vectors, old items
            reference = {"warm": groups["warm"], "all": lists.ndcg(None), "all_items": lists.item_shares(None)}
        evidence[name] = {"cold_val_ndcg@20": float(groups["cold"].mean()),
                          "warm_val_ndcg@20": float(groups["warm"].mean()),
                          "all_val_ndcg@20": float(per_user[name]["all"].mean()),
                          "all_val_ndcg@20_by_new_share": {str(s): float(lists.ndcg(Slots.share(s)).mean())
                                                           for s in SHARES},
                          "all_val_ndcg@20_crossfit": slot_evidence.pop("crossfit"), "new_slots": slots.record(),
                          "new_share": slots.fraction, "new_slots_evidence": slot_evidence}
    if reference is None:  # no generator keeps them (transfer alone): the first is its own reference
        reference = {"warm": per_user[names[0]]["warm"], "all": per_user[names[0]]["all"],
                     "all_items": all_items[names[0]]}
    for name, figures in evidence.items():
        # warm: an interval over users (the warm items are many); all items: over the held-out items, since what
        # new items' slots are worth turns on the few new items (as `choose_slots` compares patterns)
        figures["warm_val_vs_backbone"] = paired_interval(per_user[name]["warm"], reference["warm"])
        figures["all_val_vs_backbone"] = item_interval(all_items[name], reference["all_items"])
        # below beyond noise: the whole interval under 1% of the backbone's figure (a share of 0 that lets a
        # new item in now and then is 0.1% under the old items alone, and that is no harm worth refusing)
        figures["eligible"] = all(figures[f"{g}_val_vs_backbone"][1] >= -TOLERANCE * float(reference[g].mean())
                                  for g in ("warm", "all"))
    eligible = [n for n in names if evidence[n]["eligible"]] or names
    pseudo = pseudo_cold_evidence(out, data, {name: models[name] for name in eligible})
    for name, entity_shares in pseudo["shares"].items():
        evidence[name]["pseudo_cold_ndcg@20"] = float(sum(entity_shares.values()))
    if pseudo["shares"]:
        default = max(pseudo["shares"], key=lambda n: evidence[n]["pseudo_cold_ndcg@20"])
        for name, entity_shares in pseudo["shares"].items():
            evidence[name]["pseudo_cold_vs_default"] = item_interval(entity_shares, pseudo["shares"][default])
        if "popularity_shares" in pseudo:  # a new user's reference: what they would see with nothing said
            popular = pseudo["popularity_vs_default"] = item_interval(pseudo.pop("popularity_shares"),
                                                                      pseudo["shares"][default])
            if popular[0] > 0:
                log.warning("new users: popularity places hidden warm users better than %s beyond noise "
                            "(pseudo-cold NDCG@20 %.4f against %.4f)", default, pseudo["popularity_ndcg@20"],
                            evidence[default]["pseudo_cold_ndcg@20"])
    else:
        default = DEFAULT if DEFAULT in eligible else max(eligible, key=lambda n: evidence[n]["cold_val_ndcg@20"])
    for name in eligible:
        evidence[name]["cold_val_vs_default"] = item_interval(per_item[name], per_item[default])
    challenger = max(eligible, key=lambda n: evidence[n]["cold_val_ndcg@20"])
    chosen = challenger if evidence[challenger]["cold_val_vs_default"][0] > 0 else default
    log.info("served: %s with %s for new items (default %s; cold-val NDCG@20 %s)", chosen,
             Slots.from_record(evidence[chosen]["new_slots"]), default, {n: round(e["cold_val_ndcg@20"], 4) for n, e in evidence.items()})
    return {"generator": chosen, "new_slots": {n: e["new_slots"] for n, e in evidence.items()},
            "selected_on": "served evidence on val (coldstart.serving.evidence)", "default": default,
            "pseudo_cold": {k: v for k, v in pseudo.items() if not k.endswith("shares")},
            "reference": {"warm_val_ndcg@20": float(reference["warm"].mean()),
                          "all_val_ndcg@20 (old items alone)": float(reference["all"].mean())},
            "evidence": evidence}


def pseudo_cold_evidence(out: Path, data: SplitData, models: dict) -> dict:
    """{"shares": {generator: each warm entity's share of its pseudo-cold NDCG@20} for those of `models` (name:
    the generator its artifact holds) that fit without a training job, "side", "folds", "entities"; user
    cold-start adds popularity's shares and figure}."""
    side = pseudo_cold.side_of(data.split.cold)
    inputs, found = None, {}
    for name, model in models.items():
        if getattr(model, "refit", None) is None:
            continue
        inputs = inputs or GeneratorInputs.from_folders(data, out)
        entity_shares = pseudo_cold.shares(inputs, model, side)
        if entity_shares is not None:
            found[name] = entity_shares
    record = {"shares": found, "side": side, "folds": pseudo_cold.FOLDS,
              "entities": len(next(iter(found.values()))) if found else 0}
    if found and side == "user":
        record["popularity_shares"] = pseudo_cold.popularity_shares(inputs)
        record["popularity_ndcg@20"] = float(sum(record["popularity_shares"].values()))
    return record


def fit_stated_map(out: Path, data: SplitData) -> dict:
    """Fit a stated interest's map (`coldstart.serving.statements`) for OUT/serving.json's generator on the
    warm users as that generator places them pseudo-cold, and save it beside the artifacts; serving.json's
    record of it: {"generator", "file", the fit's figures}, or {"generator", "none": why}."""
    generator = ServingGenerator(out, "auto")
    statements.save(out, generator.name, {})  # a map of an earlier run never outlives this one's fit
    placed_folds = None if getattr(generator.model, "refit", None) is None else \
        pseudo_cold.placements(GeneratorInputs.from_folders(data, out), generator.model, "user")
    if placed_folds is None:
        return {"generator": generator.name, "none": "the generator does not refit without its training job (or "
                                                     "too few warm users): a stated interest takes the mean"}
    users = [str(data.user_ids[row]) for hidden, _ in placed_folds for row in hidden]
    placed = np.concatenate([vectors for _, vectors in placed_folds])
    maps, record = statements.fit(Catalogue.from_artifacts(out, generator, encoder=None), users, placed)
    if not maps:
        return {"generator": generator.name, "none": "no warm user states an attribute value"}
    statements.save(out, generator.name, maps)
    return {"generator": generator.name, "file": statements.FILE, "columns": record}


def served_row(out: Path, data: SplitData, ks: tuple[int, ...], generator: str = "auto"
               ) -> tuple[str, dict[str, dict]]:
    """(the row's name, {"val": evaluate JSON, "test": evaluate JSON}) of what `coldstart serve` serves from
    `out`: its generator and slots for new items, through the catalogue the ranker replicas build."""
    serving_generator = ServingGenerator(out, generator)
    catalogue = Catalogue.from_artifacts(out, serving_generator, encoder=None)
    figures = {on: served_metrics(catalogue, data, on=on, ks=ks)[0] for on in ("val", "test")}
    return f"served ({serving_generator.name}, new items in {catalogue.new_slots})", figures


def frame(figures: dict[str, dict]) -> pd.DataFrame:
    """NDCG@20 of a served row's val and test, cold / warm / all, side by side."""
    return pd.DataFrame({on: {g: figures[on][g][f"ndcg@{K}"] for g in GROUPS} for on in figures})
