"""Artifacts survive a writer killed at any instant: the path holds the old or the new version whole.

The harness (`coldstart/testing/crashes.py`) kills a rewriting child at random moments; run on a naive
in-place writer it must catch corruption, which shows the check can fail.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time

import pytest

from coldstart import artifacts
from coldstart.testing.crashes import kill_during_writes, read_dir_version, write_dir_version, writer_loop

@pytest.mark.parametrize("kind", ["dir", "file"])
def test_a_writer_killed_at_random_moments_never_leaves_a_torn_or_stale_artifact(tmp_path, kind):
    target = tmp_path / ("model" if kind == "dir" else "model.bin")
    outcome = kill_during_writes(kind, target, tmp_path / "acks.log", kills=25, seed=1)
    assert outcome["torn"] == 0
    assert outcome["lost"] == 0
    assert outcome["versions"] >= 25  # a write completed in every round, so each kill landed mid-run


def test_the_check_catches_a_writer_that_is_not_atomic(tmp_path):
    outcome = kill_during_writes("dir-in-place", tmp_path / "model", tmp_path / "acks.log", kills=25, seed=1)
    assert outcome["torn"] > 0


def test_a_killed_writers_leftovers_are_ignored_and_then_removed(tmp_path):
    target = tmp_path / "model"
    write_dir_version(target, 1)
    child = multiprocessing.get_context("fork").Process(target=writer_loop, args=("dir", target, tmp_path / "acks", 2))
    child.start()
    deadline = time.monotonic() + 10
    # Kill it while its temporary folder exists, i.e. mid-write.
    while not any(p.name.endswith(".tmp") for p in tmp_path.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.001)
    os.kill(child.pid, signal.SIGKILL)
    child.join()
    leftovers = [p for p in tmp_path.iterdir() if p.name.startswith(".model.")]
    assert leftovers, "the child was not caught mid-write"
    assert read_dir_version(target) >= 1  # the reader sees a whole artifact, not the leftover
    write_dir_version(target, 99)
    assert read_dir_version(target) == 99
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".model.")]


def test_a_live_writers_temporary_folder_is_left_alone(tmp_path):
    target = tmp_path / "model"
    with artifacts.atomic_dir(target) as tmp:
        (tmp / "a").write_text("in progress")
        assert artifacts.clean_stale(target) == []  # this process is alive: its folder stays
        assert tmp.is_dir()
    assert (target / "a").read_text() == "in progress"


def test_without_an_atomic_exchange_the_fallback_still_replaces_whole(tmp_path, monkeypatch):
    monkeypatch.setattr(artifacts, "_exchange", lambda a, b: False)
    target = tmp_path / "model"
    write_dir_version(target, 1)
    write_dir_version(target, 2)
    assert read_dir_version(target) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_a_failing_block_leaves_the_old_version(tmp_path):
    target = tmp_path / "model"
    write_dir_version(target, 1)
    with pytest.raises(RuntimeError), artifacts.atomic_dir(target) as tmp:
        (tmp / "part0.bin").write_bytes(b"partial")
        raise RuntimeError("crash mid-write")
    assert read_dir_version(target) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def count_missing_reads(target, swaps: int) -> int:
    """Rewrite `target` `swaps` times while a thread keeps reading it; count reads that found nothing."""
    import threading

    _write_small(target, 0)
    stop, missing = threading.Event(), []

    def reader():
        while not stop.is_set():
            if not (target / "x").exists():
                missing.append(1)

    thread = threading.Thread(target=reader)
    thread.start()
    for version in range(1, swaps + 1):
        _write_small(target, version)
    stop.set()
    thread.join()
    return len(missing)


def _write_small(target, version: int) -> None:
    with artifacts.atomic_dir(target) as tmp:
        (tmp / "x").write_text(str(version))


def test_a_reader_never_finds_the_folder_missing_while_it_is_replaced(tmp_path):
    assert count_missing_reads(tmp_path / "model", swaps=300) == 0


def test_the_two_rename_fallback_has_the_gap_the_exchange_closes(tmp_path, monkeypatch):
    # Deterministic where a reader thread is not: look at the folder right after every rename.
    import os

    target, real_replace, after_rename = tmp_path / "model", os.replace, []
    _write_small(target, 0)

    def watched_replace(src, dst):
        real_replace(src, dst)
        after_rename.append((target / "x").exists())

    monkeypatch.setattr(artifacts.os, "replace", watched_replace)
    _write_small(target, 1)
    assert False not in after_rename  # the exchange: never missing
    monkeypatch.setattr(artifacts, "_exchange", lambda a, b: False)
    _write_small(target, 2)
    assert False in after_rename  # two renames: missing in between
    assert (target / "x").read_text() == "2"
