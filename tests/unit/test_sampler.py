"""The skeleton's one sampler (`trainers.loop.epoch_shard`): every row once per epoch across the ranks.

Each rank used to reseed with its own rank and slice its own permutation: with 2
workers an epoch left about a quarter of the interactions unseen and showed
another quarter twice. Every rank now draws the same permutation from (seed,
epoch) and takes a disjoint slice, padded by wrapping so that the ranks step
the same number of batches.
"""

from __future__ import annotations

import numpy as np
import pytest

from coldstart.models.mf import TrainPairs
from trainers.loop import epoch_shard


@pytest.mark.parametrize("world", [1, 2, 3])
@pytest.mark.parametrize("n", [1, 10, 1001])
def test_the_ranks_shards_cover_every_row_once_in_equal_counts(n, world):
    shards = [epoch_shard(n, seed=7, epoch=3, rank=rank, world=world) for rank in range(world)]
    assert len({len(s) for s in shards}) == 1 and len(shards[0]) == -(-n // world)
    seen = np.concatenate(shards)
    assert set(seen.tolist()) == set(range(n))  # the union is everything
    assert len(seen) - n == (-n) % world  # only the wrap-around pads twice, and fewer than `world` of them
    again = [epoch_shard(n, seed=7, epoch=3, rank=rank, world=world) for rank in range(world)]
    assert all(np.array_equal(a, b) for a, b in zip(shards, again))  # a resumed run draws the same
    if n > 1:
        assert not np.array_equal(np.concatenate(shards), np.concatenate(
            [epoch_shard(n, seed=7, epoch=4, rank=rank, world=world) for rank in range(world)]))


@pytest.mark.parametrize("world", [2, 3])
def test_the_pairs_of_an_epoch_are_each_trained_once_across_ranks(world):
    """What the backbone, the towers and transfer step through: each rank's positives, together every
    interaction once, in the same number of batches on every rank."""
    n = 997
    users, items = np.arange(n) % 50, np.arange(n) % 80
    seen, batches = [], []
    for rank in range(world):
        pairs = TrainPairs(users, items, np.arange(80), seed=rank)
        order = epoch_shard(len(pairs), seed=0, epoch=0, rank=rank, world=world)
        mine = list(pairs.batches(64, order=order))
        batches.append(len(mine))
        seen += [(int(u), int(i)) for b in mine for u, i in zip(b[0], b[1])]
    assert len(set(batches)) == 1
    assert set(seen) == set(zip(users.tolist(), items.tolist()))
    assert len(seen) - n == (-n) % world


@pytest.mark.timeout(300)
def test_two_gloo_ranks_train_one_model_and_validate_once():
    """Two ranks of a real torch.distributed group (gloo, as a Ray Train run on CPUs), as the GPU check runs them
    (`benchmarks.gpu_check.two_rank_check`): their shards cover every interaction once, rank 0 alone validates
    and both report its figures, and DDP leaves the same weights on both."""
    from trainers.testing import two_rank_check

    rows = two_rank_check("cpu", "gloo", ("backbone", "distill"))
    assert [r["job"] for r in rows] == ["backbone", "distill"] and all(r["device"] == ["cpu"] for r in rows)
