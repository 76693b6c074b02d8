"""Artifacts survive a writer killed at any instant: the path holds the old or the new version whole.

A forked child rewrites one artifact over and over, logging each version once the write call has
returned (the write is acknowledged); the parent SIGKILLs it at a random moment, then checks the
artifact. The same harness run on a naive in-place writer must catch corruption, which shows the
check can fail.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import signal
import time

import numpy as np
import pytest

from coldstart import artifacts

FILES = 4
FILE_BYTES = 1 << 20  # 1 MiB per file: a write spans many syscalls, so kills land mid-file


def _payload(version: int, index: int) -> bytes:
    head = f"v{version:08d}:{index}:".encode()
    return head + bytes([version % 251]) * (FILE_BYTES - len(head))


def _write_dir_version(target, version: int) -> None:
    with artifacts.atomic_dir(target) as tmp:
        digests = []
        for i in range(FILES):
            data = _payload(version, i)
            (tmp / f"part{i}.bin").write_bytes(data)
            digests.append(hashlib.sha256(data).hexdigest())
        artifacts.write_json(tmp / "manifest.json", {"version": version, "sha256": digests})


def _write_dir_in_place(target, version: int) -> None:
    """What atomic_dir exists to prevent: overwriting the live folder file by file."""
    target.mkdir(exist_ok=True)
    digests = []
    for i in range(FILES):
        data = _payload(version, i)
        (target / f"part{i}.bin").write_bytes(data)
        digests.append(hashlib.sha256(data).hexdigest())
    (target / "manifest.json").write_text(__import__("json").dumps({"version": version, "sha256": digests}))


def _write_file_version(target, version: int) -> None:
    data = _payload(version, 0) * 2
    artifacts.write_bytes(target, hashlib.sha256(data).hexdigest().encode() + b"\n" + data)


def read_dir_version(target) -> int:
    """The version of a complete folder artifact; AssertionError if it is missing or mixed."""
    manifest = artifacts.read_json(target / "manifest.json")
    for i, digest in enumerate(manifest["sha256"]):
        data = (target / f"part{i}.bin").read_bytes()
        assert hashlib.sha256(data).hexdigest() == digest, f"part{i} does not match the manifest"
        assert data.startswith(f"v{manifest['version']:08d}:".encode()), f"part{i} is from another version"
    assert sorted(p.name for p in target.iterdir()) == sorted([*(f"part{i}.bin" for i in range(FILES)),
                                                               "manifest.json"])
    return manifest["version"]


def read_file_version(target) -> int:
    raw = target.read_bytes()
    digest, _, data = raw.partition(b"\n")
    assert hashlib.sha256(data).hexdigest().encode() == digest, "file content does not match its checksum"
    return int(data[1:9])


WRITERS = {"dir": (_write_dir_version, read_dir_version), "file": (_write_file_version, read_file_version),
           "dir-in-place": (_write_dir_in_place, read_dir_version)}


def _writer(kind: str, target, log_path, first: int) -> None:
    write = WRITERS[kind][0]
    log = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    version = first
    while True:
        write(target, version)
        os.write(log, f"{version}\n".encode())  # acknowledged: the write call returned
        version += 1


def kill_during_writes(kind: str, target, log_path, *, kills: int, seed: int) -> dict:
    """Kill a rewriting child `kills` times at random moments; count torn reads and lost versions.

    Returns {"kills", "torn", "lost", "versions"}: `torn` counts checks that found a missing or
    mixed artifact, `lost` those that found an older version than the last acknowledged one.
    """
    write, read = WRITERS[kind]
    rng = np.random.default_rng(seed)
    write(target, 0)
    acknowledged, torn, lost = 0, 0, 0
    fork = multiprocessing.get_context("fork")
    for _ in range(kills):
        child = fork.Process(target=_writer, args=(kind, target, log_path, acknowledged + 1), daemon=True)
        child.start()
        time.sleep(float(rng.uniform(0.0, 0.15)))
        os.kill(child.pid, signal.SIGKILL)
        child.join()
        lines = log_path.read_text().split()
        acknowledged = int(lines[-1]) if lines else acknowledged
        try:
            found = read(target)
        except (AssertionError, OSError, ValueError):
            torn += 1
            write(target, acknowledged)  # repair, so the next round starts from a whole artifact
            continue
        if found < acknowledged:
            lost += 1
        acknowledged = max(acknowledged, found)
    return {"kills": kills, "torn": torn, "lost": lost, "versions": acknowledged}


@pytest.mark.parametrize("kind", ["dir", "file"])
def test_a_writer_killed_at_random_moments_never_leaves_a_torn_or_stale_artifact(tmp_path, kind):
    target = tmp_path / ("model" if kind == "dir" else "model.bin")
    outcome = kill_during_writes(kind, target, tmp_path / "acks.log", kills=25, seed=1)
    assert outcome["torn"] == 0
    assert outcome["lost"] == 0
    assert outcome["versions"] > 25  # writes completed between kills, so kills did land mid-run


def test_the_check_catches_a_writer_that_is_not_atomic(tmp_path):
    outcome = kill_during_writes("dir-in-place", tmp_path / "model", tmp_path / "acks.log", kills=25, seed=1)
    assert outcome["torn"] > 0


def test_a_killed_writers_leftovers_are_ignored_and_then_removed(tmp_path):
    target = tmp_path / "model"
    _write_dir_version(target, 1)
    child = multiprocessing.get_context("fork").Process(target=_writer, args=("dir", target, tmp_path / "acks", 2))
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
    _write_dir_version(target, 99)
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
    _write_dir_version(target, 1)
    _write_dir_version(target, 2)
    assert read_dir_version(target) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_a_failing_block_leaves_the_old_version(tmp_path):
    target = tmp_path / "model"
    _write_dir_version(target, 1)
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
    # Shows the reader check above can fail: two renames leave `path` missing for an instant.
    monkeypatch.setattr(artifacts, "_exchange", lambda a, b: False)
    assert count_missing_reads(tmp_path / "model", swaps=300) > 0
