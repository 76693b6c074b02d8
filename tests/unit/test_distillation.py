"""The towers' ranking-distillation term and its teacher mix do what they claim, each on its own.

Training on the distillation term alone (BPR and alignment switched off) must move
the student's ranking toward the teacher's: the KL from the teacher's distribution
over items falls and the top-k lists overlap more. With the LLM as the only
teacher, the student must move toward the LLM's ranking rather than the backbone's.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from coldstart.models.mf import TrainPairs
from coldstart.models.towers import ColdStartTowers, DistillWeights, TowerTraining

N_USERS, N_ITEMS, DIM, K = 60, 80, 8, 10


@pytest.fixture(scope="module")
def world():
    rng = np.random.default_rng(0)
    unit = lambda m: (m / np.linalg.norm(m, axis=1, keepdims=True)).astype(np.float32)  # noqa: E731
    return {
        "U": rng.normal(size=(N_USERS, DIM)).astype(np.float32),
        "V": rng.normal(size=(N_ITEMS, DIM)).astype(np.float32),
        "item_x": rng.normal(size=(N_ITEMS, 12)).astype(np.float32),
        "user_x": rng.normal(size=(N_USERS, 12)).astype(np.float32),
        "user_text": unit(rng.normal(size=(N_USERS, 6))), "item_text": unit(rng.normal(size=(N_ITEMS, 6))),
        "pairs": TrainPairs(rng.integers(0, N_USERS, 2000), rng.integers(0, N_ITEMS, 2000), np.arange(N_ITEMS), 0),
    }


def _towers(world, weights: DistillWeights):
    torch.manual_seed(0)
    towers = ColdStartTowers(12, 12, DIM, hidden=64, dropout=0.0)
    training = TowerTraining(towers, user_vectors=world["U"], item_vectors=world["V"], item_features=world["item_x"],
                             user_features=world["user_x"], user_text=world["user_text"],
                             item_text=world["item_text"], weights=weights, lr=3e-3)
    return towers, training


def _student_scores(towers, world) -> np.ndarray:
    with torch.no_grad():
        items = towers.eval().generate_items(torch.as_tensor(world["item_x"])).numpy()
    towers.train()
    return world["U"] @ items.T


def _kl(teacher: np.ndarray, student: np.ndarray) -> float:
    p = torch.softmax(torch.as_tensor(teacher), 1)
    return float((p * (torch.log_softmax(torch.as_tensor(teacher), 1)
                       - torch.log_softmax(torch.as_tensor(student), 1))).sum(1).mean())


def _overlap(a: np.ndarray, b: np.ndarray, k: int = K) -> float:
    top_a, top_b = np.argsort(-a, 1)[:, :k], np.argsort(-b, 1)[:, :k]
    return float(np.mean([len(set(x) & set(y)) / k for x, y in zip(top_a, top_b)]))


def test_ranking_distillation_alone_moves_the_student_toward_the_teacher(world):
    towers, training = _towers(world, DistillWeights(bpr=0.0, align=0.0, distill=1.0))
    teacher = world["U"] @ world["V"].T
    before = _student_scores(towers, world)
    for _ in range(30):
        metrics = training.train_epoch(world["pairs"].batches(128))
    after = _student_scores(towers, world)
    assert metrics["train_item_bpr"] > 0 and metrics["train_distill"] > 0  # measured, though not trained on
    assert _kl(teacher, after) < 0.5 * _kl(teacher, before)
    assert _overlap(teacher, after) > _overlap(teacher, before) + 0.3
    print(f"KL {_kl(teacher, before):.3f} -> {_kl(teacher, after):.3f}, top-{K} overlap "
          f"{_overlap(teacher, before):.2f} -> {_overlap(teacher, after):.2f}")


def test_with_the_llm_as_the_only_teacher_the_student_follows_the_llm_ranking(world):
    llm = world["user_text"] @ world["item_text"].T
    backbone = world["U"] @ world["V"].T
    finals = {}
    for name, weights in (("llm", DistillWeights(bpr=0.0, align=0.0, distill=1.0, teacher_backbone=0.0,
                                                 teacher_llm=1.0)),
                          ("backbone", DistillWeights(bpr=0.0, align=0.0, distill=1.0))):
        towers, training = _towers(world, weights)
        for _ in range(30):
            training.train_epoch(world["pairs"].batches(128))
        finals[name] = _student_scores(towers, world)
    # Each teacher pulls the student its own way.
    assert _overlap(llm, finals["llm"]) > _overlap(llm, finals["backbone"]) + 0.15
    assert _overlap(backbone, finals["backbone"]) > _overlap(backbone, finals["llm"]) + 0.15


def test_the_teacher_mix_is_the_weighted_sum_of_its_teachers(world):
    users, items = torch.arange(5), torch.arange(7)
    parts = {}
    for name, (b, l) in {"backbone": (1.0, 0.0), "llm": (0.0, 1.0), "mix": (0.7, 0.3)}.items():
        _, training = _towers(world, DistillWeights(teacher_backbone=b, teacher_llm=l, temperature=2.0))
        parts[name] = training.teacher_logits(users, items)
    torch.testing.assert_close(parts["mix"], 0.7 * parts["backbone"] + 0.3 * parts["llm"])
    # The LLM's cosines are put on the backbone's scale, so a small weight is not drowned out.
    assert parts["llm"].abs().mean() == pytest.approx(parts["backbone"].abs().mean(), rel=1.0)


def test_a_term_of_weight_zero_is_reported_outside_the_gradient(world):
    batch = next(iter(world["pairs"].batches(128)))
    batch = tuple(torch.as_tensor(b) for b in batch)
    grads = {}
    for name, weights in {"align": DistillWeights(bpr=0.0, align=1.0, distill=0.0),
                          "align+distill": DistillWeights(bpr=0.0, align=1.0, distill=1.0)}.items():
        towers, training = _towers(world, weights)
        loss, parts = training.loss(batch)
        assert set(parts) == {"item_bpr", "user_bpr", "align", "distill"} and all(v > 0 for v in parts.values())
        assert loss.item() == pytest.approx(parts["align"].item() + weights.distill * parts["distill"].item(), rel=1e-5)
        # Measured outside the autograd graph when its weight is 0: no backward pass through it.
        assert parts["distill"].requires_grad == (weights.distill > 0) and not parts["item_bpr"].requires_grad
        loss.backward()
        grads[name] = towers.item_tower.net[0].weight.grad.clone()
    assert not torch.allclose(grads["align"], grads["align+distill"])  # the distillation term, when weighted, counts
