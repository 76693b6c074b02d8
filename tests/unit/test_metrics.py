import numpy as np
import pytest
import torch

from coldstart.metrics import batch_metrics, reference_metrics, topk_hit_matrix


def test_hand_computed_values():
    # Ranked list: a b c d e; relevant {a, c, z}; K = 2 and 4.
    hits = torch.tensor([[True, False, True, False, False]])
    values = batch_metrics(hits, torch.tensor([3]), ks=(2, 4))
    assert values["recall@2"].item() == pytest.approx(1 / 3)
    assert values["precision@2"].item() == pytest.approx(1 / 2)
    assert values["hit@2"].item() == 1.0
    assert values["ndcg@2"].item() == pytest.approx(1.0 / (1.0 + 1 / np.log2(3)))
    idcg4 = 1 + 1 / np.log2(3) + 1 / np.log2(4)
    assert values["ndcg@4"].item() == pytest.approx((1 + 1 / np.log2(4)) / idcg4)
    assert values["recall@4"].item() == pytest.approx(2 / 3)


def test_idcg_uses_min_of_test_size_and_k():
    hits = torch.tensor([[True, False, False]])
    values = batch_metrics(hits, torch.tensor([1]), ks=(3,))
    assert values["ndcg@3"].item() == pytest.approx(1.0)


def test_no_hit_is_zero():
    values = batch_metrics(torch.zeros((1, 5), dtype=torch.bool), torch.tensor([2]), ks=(5,))
    assert all(v.item() == 0.0 for v in values.values())


def test_vectorised_equals_reference_on_random_rankings():
    rng = np.random.default_rng(0)
    n_items, k = 30, 10
    scores = torch.from_numpy(rng.random((8, n_items)).astype(np.float32))
    truth = torch.from_numpy(rng.random((8, n_items)) < 0.2)
    truth[:, 0] = True
    hits = topk_hit_matrix(scores, truth, k)
    values = batch_metrics(hits, truth.sum(1), (k,))
    for row in range(8):
        ranked = [str(i) for i in np.argsort(-scores[row].numpy(), kind="stable")]
        relevant = {str(i) for i in np.flatnonzero(truth[row].numpy())}
        ref = reference_metrics(ranked, relevant, k)
        for name, value in ref.items():
            assert values[name][row].item() == pytest.approx(value)


def test_ties_follow_the_given_order():
    scores = torch.zeros((1, 4))
    truth = torch.tensor([[False, False, False, True]])
    assert not topk_hit_matrix(scores, truth, 1)[0, 0]
    assert topk_hit_matrix(scores, truth, 1, tie_order=torch.tensor([3, 0, 1, 2]))[0, 0]
