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


def test_profiles_that_differ_only_where_the_text_and_one_hots_do_not_look_share_what_is_remembered(models):
    generator, _ = models
    content = generator.content
    a = {"age": 30, "gender": "F", "occupation": "writer", "zip_code": "12345"}
    b = {**a, "zip_code": "99999"}  # a column neither the template nor the attribute encoder reads
    first = (content.texts("user", [(a, "", None)]), content.features("user", np.zeros(content.text_dim), a))
    hits = (content.rendered.hits, content.one_hots.hits)
    second = (content.texts("user", [(b, "", None)]), content.features("user", np.zeros(content.text_dim), b))
    fresh = type(content)({"templates": content.templates.model_dump(),
                           "item_attributes": content.attribute_encoders["item"].to_json(),
                           "user_attributes": content.attribute_encoders["user"].to_json(),
                           "text_dim": content.text_dim})
    assert second[0] == fresh.texts("user", [(b, "", None)]) == first[0]
    np.testing.assert_array_equal(second[1], fresh.features("user", np.zeros(content.text_dim), b))
    read = {c["name"] for c in content.attribute_encoders["user"].columns}
    assert (content.rendered.hits - hits[0], content.one_hots.hits - hits[1]) == (1, int("zip_code" not in read))
    # a field the template names is part of the key: another age renders again
    c = {**a, "age": 41}
    assert content.texts("user", [(c, "", None)]) != first[0]
