"""Where a new user who states an interest belongs: a map, learnt on warm users, from what serving knows of them
(the generator's vector from their attributes, the taste of users who favour what they named) to the
collaborative space.

Serving used to take the plain mean of the two vectors. The map is a ridge regression from [unit generated
vector | unit taste | 1] to a user's vector (on a warm user's typical norm), fitted on the warm users as a new
user would reach it:

- each warm user is placed by the generator refitted without their fold (`coldstart.pseudo_cold.placements`),
  so the regression sees the generator's error on people it never saw, not its fit to people it trained on;
- each states what a random half of their training items (`told`) says of them: per attribute column (genres,
  decades), the value most of those items carry and the value most out of proportion to its share of all
  training interactions (its lift), each carried by two told items or more. People say either.

The strength is chosen by cross-validation over the warm users (their statements kept in one fold), on the
NDCG@20 of the half of their items they did not tell. One map per attribute column: naming a genre and naming a
decade say different things. The pipeline fits it for the served generator when that generator refits without
a training job (`coldstart.serving.evidence.fit_stated_map`); serving loads it (`load`) and places a stated
interest with it (`coldstart.serving.profiles.profile_query`); without one it keeps the mean. On six user-cold
splits a stated genre's held-out NDCG rose on every one (benchmarks/RESULTS.md, stated interest).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from coldstart.pseudo_cold import ndcg_gains
from coldstart.serving.profiles import carriers, column_of, design, users_taste, warm_interactions

FILE = "stated_map.npz"  # in the artifacts folder: one map per generator it was fitted for
ALPHAS = (0.01, 0.1, 1.0, 10.0, 100.0)  # ridge strengths cross-validated
LEAST = 2  # told items that must carry a value for it to be stated
FOLDS = 5
SEED = 0
SEP = "::"  # FILE's keys: generator::column


def stated_values(state, told: np.ndarray, shares: dict[str, float]) -> list[str]:
    """What a user says of the items `told` (positions): per attribute column, the value most of them carry
    (ties: the higher lift) and the value of highest lift, each carried by `LEAST` of them or more."""
    counts: dict[str, int] = {}
    for position in told:
        for label in state.item_labels[int(position)]:
            counts[label] = counts.get(label, 0) + 1
    columns: dict[str, list[str]] = {}
    for label, count in sorted(counts.items()):
        if count >= LEAST and shares.get(label, 0) > 0:
            columns.setdefault(column_of(label), []).append(label)
    said = []
    for labels in columns.values():
        lift = {label: counts[label] / len(told) / shares[label] for label in labels}
        for key in (lambda label: (counts[label], lift[label]), lift.get):
            if (best := max(labels, key=key)) not in said:
                said.append(best)
    return said


def fit(state, users: list[str], placed: np.ndarray, seed: int = SEED) -> tuple[dict[str, np.ndarray], dict]:
    """({attribute column: its map's weights}, for the columns some warm user states a value of; a record of
    each fit) from warm `users` (ids of `state`) and `placed`, their vectors as the generator places them as if
    new (same order). What naming a genre says of a user differs from what naming a decade says: one map per
    column (on seed 42's val, a map shared with decades lost a third of what a genre's own map gained).

    The strength is the one whose held-out folds' users find most of their untold items: NDCG@20 over the
    warm items, their told items left out, each statement's placement ranking them (squared error in the
    vector space preferred ten times the strength, which ranked worse)."""
    _, seen_all, _ = warm_interactions(state)
    shares = {label: float(carriers(state, (label,))[seen_all].mean()) if len(seen_all) else 0.0
              for label in state.labelled}
    rng = np.random.default_rng(seed)
    rows: dict[str, list] = {}  # column -> [(x, y, user, told, held)]
    for i, (user, generated) in enumerate(zip(users, placed)):
        entry = state.users.get(str(user))
        if entry is None or not entry.warm or len(entry.seen) < 2 * LEAST:
            continue
        order = rng.permutation(np.asarray(entry.seen, np.int64))
        told, held = order[:len(order) // 2], order[len(order) // 2:]
        for label in stated_values(state, told, shares):
            if (taste := users_taste(state, (label,))) is not None:
                rows.setdefault(column_of(label), []).append(
                    (design(generated, taste), np.asarray(entry.vector, np.float64) / state.user_norm, i, told, held))
    fold_of_user = rng.integers(0, FOLDS, len(users))
    items = np.asarray(state.warm_items, bool)
    maps, record = {}, {}
    for column, found in sorted(rows.items()):
        x, y = np.stack([r[0] for r in found]), np.stack([r[1] for r in found])
        fold = fold_of_user[[r[2] for r in found]]
        told_of, held_of = [r[3] for r in found], [r[4] for r in found]
        ndcg = {alpha: _held_out_ndcg(x, y, fold, alpha, state.item_vectors, items, told_of, held_of)
                for alpha in ALPHAS}
        alpha = max(ndcg, key=ndcg.get)
        maps[column] = _solve(x, y, alpha).astype(np.float32)
        record[column] = {"statements": len(x), "users": len({r[2] for r in found}), "alpha": alpha,
                          "held_out_ndcg@20_by_alpha": {str(a): round(v, 4) for a, v in ndcg.items()}}
    return maps, record


def _solve(x: np.ndarray, y: np.ndarray, alpha: float) -> np.ndarray:
    return np.linalg.solve(x.T @ x + alpha * np.eye(x.shape[1]), x.T @ y)


def _held_out_ndcg(x, y, fold, alpha, item_vectors, items, told_of, held_of, chunk: int = 1024) -> float:
    """Mean NDCG@20 over the statements of each fold, placed by the map fitted on the other folds."""
    columns = np.flatnonzero(items)
    vectors = np.asarray(item_vectors, np.float64)[columns]
    where = np.full(len(items), -1)
    where[columns] = np.arange(len(columns))
    total, count = 0.0, 0
    for f in np.unique(fold):
        rows = np.flatnonzero(fold == f)
        if len(rows) == len(fold):
            continue
        weights = _solve(x[fold != f], y[fold != f], alpha)
        for start in range(0, len(rows), chunk):
            block = rows[start:start + chunk]
            scores = x[block] @ weights @ vectors.T
            truth = np.zeros_like(scores, bool)
            for r, row in enumerate(block):
                scores[r, where[told_of[row]][where[told_of[row]] >= 0]] = -np.inf
                truth[r, where[held_of[row]][where[held_of[row]] >= 0]] = True
            scored = truth.any(axis=1)
            if scored.any():
                total += float(ndcg_gains(scores[scored], truth[scored])[1].sum())
                count += int(scored.sum())
    return total / max(count, 1)


def save(out: Path, generator: str, maps: dict[str, np.ndarray]) -> None:
    """Keep `maps` (column -> weights) as `generator`'s in OUT/`FILE`, in place of any it had, beside the other
    generators' (written whole, then moved into place); no maps: `generator` has none from now on."""
    path = Path(out) / FILE
    kept = {}
    if path.exists():
        with np.load(path) as saved:
            kept = {name: saved[name] for name in saved.files if not name.startswith(generator + SEP)}
    kept.update({f"{generator}{SEP}{column}": np.asarray(w, np.float32) for column, w in maps.items()})
    if not kept:
        path.unlink(missing_ok=True)
        return
    temporary = path.with_name(f".{FILE}.tmp.npz")
    np.savez(temporary, **kept)
    temporary.replace(path)


def load(artifacts: Path, generator: str) -> dict[str, np.ndarray] | None:
    """{column: map} fitted for `generator` in `artifacts`, or None (older folders, generators trained by a
    job)."""
    path = Path(artifacts) / FILE
    if not path.exists():
        return None
    with np.load(path) as saved:
        maps = {name.split(SEP, 1)[1]: np.asarray(saved[name], np.float32) for name in saved.files
                if name.startswith(generator + SEP)}
    return maps or None
