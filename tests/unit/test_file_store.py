"""The file log's followers and writers: a rewritten log is found by its generation, a torn record of any size
is cut (issue 33)."""

from __future__ import annotations

import shutil

import pytest

from coldstart.serving.file_store import LOG_FILE, RegistrationStore

pytestmark = pytest.mark.timeout(60)


def _register(store: RegistrationStore, *records: dict) -> None:
    with store.writing() as writer:
        writer.read_new()
        for record in records:
            writer.append(record)


def test_a_follower_finds_a_rewritten_log_by_its_generation_even_where_the_inode_comes_back(tmp_path):
    """After two erasures between one replica's reads, the new log may get the inode the replica last saw. Read
    from its old offset, that file missed records, deletions included, and the replica kept serving a deleted
    user. Here the rewritten log's bytes are put into the very inode the follower saw."""
    folder = tmp_path / "store"
    writer = RegistrationStore(folder)
    _register(writer, *({"kind": "user", "id": f"u{i}", "text": "x" * 200} for i in range(20)))
    follower = RegistrationStore(folder)
    assert len(follower.read_new()) == 20
    # two erasures, made on a copy: the log they leave is what the store holds next
    shutil.copytree(folder, tmp_path / "copy")
    other = RegistrationStore(tmp_path / "copy")
    for user in ("u3", "u4"):
        with other.writing() as w:
            w.read_new()
            assert w.delete({"kind": "deletion", "id": f"user:{user}:1", "target": "user", "target_id": user}) == 1
    rewritten = (tmp_path / "copy" / LOG_FILE).read_bytes()
    with open(folder / LOG_FILE, "r+b") as f:  # the same inode, the new generation's bytes
        f.write(rewritten)
        f.truncate()
    records = follower.read_new()
    deletions = {r["target_id"] for r in records if r["kind"] == "deletion"}
    assert deletions == {"u3", "u4"} and follower.generation == 2
    assert not any(r["kind"] == "log" for r in records)  # the header is the store's own


def test_a_torn_record_of_any_size_is_cut_by_the_next_writer(tmp_path):
    """A crash mid-write of a record over 64 KiB used to make every later write raise."""
    store = RegistrationStore(tmp_path / "store")
    _register(store, {"kind": "item", "id": "i1"})
    with open(store.path, "ab") as f:
        f.write(b"0badc0de " + b"{" + b"y" * 200_000)  # no newline: the write died
    _register(store, {"kind": "item", "id": "i2"})
    assert [r["id"] for r in RegistrationStore(tmp_path / "store").read_new()] == ["i1", "i2"]


def test_a_deletion_whose_erasure_a_crash_cut_off_is_erased_when_the_store_opens(tmp_path):
    """A deletion is appended, then the log is rewritten without the deleted user's records. A kill between the
    two left the user's text in the log for good (served as deleted, but still held) until some later deletion
    happened to rewrite the log."""
    folder = tmp_path / "store"
    store = RegistrationStore(folder)
    _register(store, {"kind": "user", "id": "u1", "text": "a secret about u1"}, {"kind": "user", "id": "u2", "text": "kept"})
    _register(store, {"kind": "deletion", "id": "user:u1:1", "target": "user", "target_id": "u1"})  # the crash: no erase
    assert b"a secret about u1" in (folder / LOG_FILE).read_bytes()

    reopened = RegistrationStore(folder)
    assert b"a secret about u1" not in (folder / LOG_FILE).read_bytes()
    assert [r["id"] for r in reopened.read_new()] == ["u2", "user:u1:1"]  # the reader still gets everything left
    assert [r["id"] for r in store.read_new()] == ["u2", "user:u1:1"]  # an open reader finds the new generation
