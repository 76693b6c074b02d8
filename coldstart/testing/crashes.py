"""Kill a process while it rewrites an artifact, many times, and check what a reader then finds.

Shared by the atomic-write tests and `benchmarks/reliability.py`. A forked child rewrites one
artifact over and over, logging each version once the write call has returned (the write is
acknowledged); the parent SIGKILLs it at a random moment and reads the artifact back.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import signal
import time

import numpy as np

from coldstart import artifacts

FILES = 4
FILE_BYTES = 1 << 20  # 1 MiB per file: a write spans many syscalls, so kills land mid-file


def _payload(version: int, index: int) -> bytes:
    head = f"v{version:08d}:{index}:".encode()
    return head + bytes([version % 251]) * (FILE_BYTES - len(head))


def write_dir_version(target, version: int) -> None:
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
    (target / "manifest.json").write_text(json.dumps({"version": version, "sha256": digests}))


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


WRITERS = {"dir": (write_dir_version, read_dir_version), "file": (_write_file_version, read_file_version),
           "dir-in-place": (_write_dir_in_place, read_dir_version)}


def writer_loop(kind: str, target, log_path, first: int) -> None:
    write = WRITERS[kind][0]
    log = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    version = first
    while True:
        write(target, version)
        os.write(log, f"{version}\n".encode())  # acknowledged: the write call returned
        version += 1


def _acknowledged_past(log_path, version: int) -> bool:
    try:
        lines = log_path.read_text().split()
    except FileNotFoundError:
        return False
    return bool(lines) and int(lines[-1]) > version


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
        child = fork.Process(target=writer_loop, args=(kind, target, log_path, acknowledged + 1), daemon=True)
        child.start()
        # Let it finish one write first (however slow the machine), then kill at a random moment
        # of the writes that follow: every round then kills a writer mid-run.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not _acknowledged_past(log_path, acknowledged):
            time.sleep(0.005)
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
