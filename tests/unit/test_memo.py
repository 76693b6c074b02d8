"""What a new entity's content costs once is remembered: the same answers, computed once, within a bound."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from coldstart.serving.memo import Memo, key_of
from coldstart.serving.served_models import ServingEncoder, ServingGenerator

pytestmark = pytest.mark.timeout(120)


def test_memo_computes_each_key_once_in_one_batch_and_forgets_the_least_recent():
    calls = []

    def compute(keys):
        return lambda at: calls.append([keys[i] for i in at]) or [keys[i] * 10 for i in at]

    memo = Memo(capacity=2)
    keys = ["a", "b", "a"]
    assert memo.many(keys, compute(keys)) == ["a" * 10, "b" * 10, "a" * 10]
    assert calls == [["a", "b"]]  # a repeated key within one call is computed once, in the same batch
    keys = ["b", "c"]
    assert memo.many(keys, compute(keys)) == ["b" * 10, "c" * 10]
    assert calls[-1] == ["c"] and (memo.hits, memo.misses) == (1, 3)
    keys = ["a"]
    memo.many(keys, compute(keys))  # "a" was the least recently used of three: forgotten
    assert calls[-1] == ["a"]


def test_a_key_ignores_the_order_of_a_mapping():
    assert key_of({"age": 30, "gender": "F"}) == key_of({"gender": "F", "age": 30})
    assert key_of({"age": 30}) != key_of({"age": "31"})


@pytest.fixture(scope="module")
def models(serving_artifacts):
    generator = ServingGenerator(serving_artifacts)
    return generator, ServingEncoder(serving_artifacts, generator.meta["content"])


def test_a_remembered_profile_gets_what_a_fresh_one_gets(serving_artifacts, models):
    generator, encoder = models
    users = pd.read_parquet(serving_artifacts / "split" / "users.parquet").head(3)
    profiles = [{k: (v.item() if hasattr(v, "item") else v) for k, v in row.items() if k != "user_id"}
                for row in users.to_dict("records")]
    first_texts = generator.content.texts("user", [(p, "I like westerns.", None) for p in profiles])
    first_vectors = encoder.encode(first_texts)
    first_features = generator.content.features("user", first_vectors, profiles)
    hits = (generator.content.rendered.hits, generator.content.one_hots.hits, encoder.memo.hits)
    again = [(p, "I like westerns.", None) for p in reversed(profiles)]
    texts = generator.content.texts("user", again)
    vectors = encoder.encode(texts)
    features = generator.content.features("user", vectors, list(reversed(profiles)))
    assert texts == first_texts[::-1]
    np.testing.assert_array_equal(vectors, first_vectors[::-1])
    np.testing.assert_array_equal(features, first_features[::-1])
    assert (generator.content.rendered.hits, generator.content.one_hots.hits, encoder.memo.hits) == \
        tuple(h + 3 for h in hits)  # nothing rendered, encoded or one-hot encoded again
    # what the memo answers is what the model gives
    np.testing.assert_allclose(vectors, encoder.encoder.encode(texts), atol=1e-6)
