"""The churn benchmark (`benchmarks/churn.py`) on the small serving artifacts: as entities come and go, what the
serving path holds per entity stays with the live set, and a replica started over the store holds the live set."""

from __future__ import annotations

import asyncio

from benchmarks.churn import churn


def test_what_is_held_follows_the_live_set_and_a_restarted_replica_holds_only_it(serving_artifacts, tmp_path):
    rows = asyncio.run(churn(serving_artifacts, tmp_path / "store", rounds=4, batch=3))
    rounds, restart = rows[1:-1], rows[-1]
    for name in ("live registered", "interactions", "digests", "item events", "users"):
        assert len({row[name] for row in rounds}) == 1, (name, [row[name] for row in rounds])
    assert [row["deletions"] for row in rounds] == [6, 12, 18]  # one per deleted entity: kept, and said so
    trained = rounds[0]["index rows"] - 2 * 3  # before round 2's deletions land in rows: two rounds registered
    assert restart["index rows"] == trained + 3 and restart["live registered"] == rounds[-1]["live registered"]


def test_a_replica_whose_deleted_rows_outnumber_the_live_ones_rebuilds_its_index(serving_artifacts, tmp_path,
                                                                               monkeypatch):
    from coldstart.serving import catalogue

    monkeypatch.setattr(catalogue, "REBUILD_DEAD_ROWS", 2)
    rows = asyncio.run(churn(serving_artifacts, tmp_path / "store", rounds=6, batch=3))
    trained = rows[1]["index rows"] - 2 * 3
    index = [row["index rows"] - trained for row in rows[1:-1]]
    assert max(index) <= 9 < 6 * 3, index  # without the rebuilds: 3 more rows a round, 18 after round 6
