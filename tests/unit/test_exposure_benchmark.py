"""The exposure replay (`benchmarks/exposure.py`) on the small serving artifacts: it counts what users click."""

from __future__ import annotations

from benchmarks.exposure import replay_users, simulate
from coldstart.serving.slots import Slots


def test_clicks_accumulate_and_slots_for_new_items_bring_more_clicks_on_them(serving_artifacts):
    held = replay_users(serving_artifacts, "test", limit=12)
    runs = {share: simulate(serving_artifacts, held, "distill", Slots.share(share), rounds=2) for share in (0.0, 0.5, 1.0)}
    for (hits_1, new_1), (hits_2, new_2) in runs.values():
        assert 0 <= new_1 <= hits_1 <= hits_2 and new_1 <= new_2 <= hits_2
        assert hits_2 <= sum(len(items) for items in held.values())
    assert runs[1.0][-1][1] > runs[0.0][-1][1]
