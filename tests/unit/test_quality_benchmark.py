"""The quality harness's helpers (`benchmarks/quality.py`): a text is encoded once (the vector cache), and
runs compared over seeds are compared seed by seed."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.quality import against_first, remembered

pytestmark = pytest.mark.timeout(60)


def test_each_text_is_encoded_once_and_rows_come_back_in_the_callers_order(tmp_path):
    from coldstart.text.vector_cache import VectorCache

    calls = []

    def encode(texts):
        calls.append(list(texts))
        return np.asarray([[len(t), ord(t[0])] for t in texts], np.float32)

    once = remembered(encode, VectorCache(tmp_path / "vectors"))
    first = once(["bb", "a", "bb"])
    second = once(["ccc", "a", "bb"])
    assert calls == [["bb", "a"], ["ccc"]]
    np.testing.assert_array_equal(first, [[2, 98], [1, 97], [2, 98]])
    np.testing.assert_array_equal(second, [[3, 99], [1, 97], [2, 98]])


def _run(test: list[float], val: list[float]) -> dict[int, dict]:
    return {seed: {"knn-bag": {"cold": {"ndcg@20": t}, "val": {"cold": {"ndcg@20": v}}}}
            for seed, t, v in zip((42, 43, 44), test, val)}


def test_a_run_is_compared_with_the_first_on_the_same_seeds():
    table = against_first({"shipped": _run([0.2, 0.3, 0.4], [0.1, 0.2, 0.3]),
                           "title alone": _run([0.1, 0.35, 0.2], [0.2, 0.2, 0.2])}, ["knn-bag"])
    shipped, other = table.splitlines()[2:]
    assert "| shipped | knn-bag | 0.3000 ± 0.0816 | 1.000x | nan | 0 of 3 | 1.000x |" == shipped
    # 0.2167 / 0.3 over test, ahead on one seed (43), val 0.2 / 0.2
    assert other.startswith("| title alone | knn-bag | 0.2167 ± ") and "| 0.722x |" in other
    assert "| 1 of 3 | 1.000x |" in other
