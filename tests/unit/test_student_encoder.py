"""The student encoder starts where least squares puts its projection, not where truncation leaves it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from coldstart.models.student_encoder import build_student, fit_projection

pytestmark = pytest.mark.timeout(180)

GENRES = ["Comedy", "Drama", "Horror", "Western", "Sci-Fi", "Romance", "Thriller", "Animation"]


def _texts(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [f"Film {rng.integers(1000)} ({rng.integers(1930, 2000)}). Genres: "
            f"{', '.join(rng.choice(GENRES, rng.integers(1, 4), replace=False))}." for _ in range(n)]


def _cosine(student, tokenizer, texts, targets) -> float:
    student.eval()
    with torch.no_grad():
        enc = tokenizer(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")
        return float((student(enc["input_ids"], enc["attention_mask"]).numpy() * targets).sum(1).mean())


def test_a_fitted_projection_starts_the_student_near_the_teacher(minilm):
    train, held = _texts(240, 0), _texts(60, 1)
    train_vectors, held_vectors = minilm.encode(train), minilm.encode(held)
    torch.manual_seed(0)
    student, tokenizer = build_student("default", layers=1, project=True)
    before = _cosine(student, tokenizer, held, held_vectors)  # a random projection
    read = fit_projection(student, tokenizer, ((train[i:i + 64], train_vectors[i:i + 64])
                                               for i in range(0, len(train), 64)), max_length=64)
    after = _cosine(student, tokenizer, held, held_vectors)
    truncated, _ = build_student("default", layers=1)  # no projection: the first layer's pooled states
    assert read == len(train)
    assert after > 0.85 and after > _cosine(truncated, tokenizer, held, held_vectors) + 0.1 and after > before + 0.5
