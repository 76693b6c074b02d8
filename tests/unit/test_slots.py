"""Which slots of a list go to new items: a share, or the pattern learnt from each rank's gains."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from coldstart.serving.slots import Slots, interleave

pytestmark = pytest.mark.timeout(30)


def _expected_gain(pattern, old, new):
    """Sum over slots of discount x the gain of the entry that fills it."""
    a = b = 0
    total = 0.0
    for slot, is_new in enumerate(pattern):
        total += (new[b] if is_new else old[a]) / np.log2(slot + 2)
        a, b = a + (not is_new), b + is_new
    return total


def test_the_learnt_pattern_is_the_best_of_every_pattern_for_its_gains():
    rng = np.random.default_rng(0)
    for _ in range(20):
        old = np.sort(rng.random(8))[::-1]
        new = np.sort(rng.random(8))[::-1] * rng.random()
        learnt = Slots.learnt(old, new)
        best = max(_expected_gain(p, old, new) for p in itertools.product([False, True], repeat=8))
        assert _expected_gain(learnt.pattern, old, new) == pytest.approx(best)


def test_a_new_list_that_gains_nothing_gets_no_slot_and_one_that_gains_more_leads():
    assert not Slots.learnt([0.05, 0.04, 0.03], [0.0, 0.0, 0.0])
    assert Slots.learnt([0.02, 0.01, 0.01], [0.05, 0.015, 0.0]).pattern == (True, False, True)


def test_a_share_spreads_its_slots_evenly_and_repeats_beyond_its_period():
    assert Slots.share(0.5).pattern[:6] == (False, True) * 3
    assert sum(Slots.share(0.3).pattern) == 6 and Slots.share(0.3).fraction == pytest.approx(0.3)
    listed = interleave(list(range(30)), [f"n{i}" for i in range(30)], 40, Slots.share(0.25))
    assert [isinstance(e, str) for e in listed] == [False, False, False, True] * 10
    with pytest.raises(ValueError, match="between 0 and 1"):
        Slots.share(1.5)


def test_slots_round_trip_through_the_serving_record_and_older_records_hold_a_share():
    slots = Slots.learnt([0.05, 0.02, 0.02, 0.01], [0.03, 0.03, 0.0, 0.0])
    assert Slots.from_record(slots.record()) == slots
    assert Slots.from_record(0.5) == Slots.share(0.5) and not Slots.from_record(None)


def test_when_one_list_runs_out_the_other_fills_and_overlaps_are_listed_once():
    assert interleave([1, 2], ["a", "b", "c", "d"], 5, Slots.share(0.5)) == [1, "a", 2, "b", "c"]
    assert interleave([1, 2, 3], [2, 4], 4, Slots.share(0.5), distinct=lambda e: e) == [1, 2, 3, 4]


def test_a_stated_interest_holds_its_share_of_the_first_slots_and_leaves_the_rest_to_the_ranking():
    slots = Slots.head(0.7, 10)
    assert [slots(i) for i in range(10)].count(True) == 7 and not any(slots(i) for i in range(10, 20))
    merged = interleave([f"r{i}" for i in range(20)], [f"s{i}" for i in range(20)], 20, slots)
    assert sum(m.startswith("s") for m in merged[:10]) == 7
    assert merged[10:] == [f"r{i}" for i in range(3, 13)]  # after the first 10, the ranking goes on
