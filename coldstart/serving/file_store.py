"""The append-only store of registered items and users: one checksummed JSON line per record.

Durability: a record is one `write` of a whole line on an O_APPEND descriptor,
then `fsync`; the registration is acknowledged only after that, so an answered
registration survives a crash or a restart. Writers (ranker replicas, in other
processes too) hold an exclusive `flock` while they append; readers follow the
log's tail and take only whole lines.

Erasure (`writer.delete(record)`, a deletion) rewrites the log without the
erased records: a new file written and fsynced beside it, renamed over it, the
folder fsynced (a crash after the deletion's append and before the rewrite is
finished by whoever opens the store next). Its first line is a header record, `{"kind": "log",
"generation": N}`, one more than the file it replaces (a log without a header is
generation 0). Readers compare the generation, not the inode (which the system
may give a new file again once the old is gone: after two erasures between one
reader's reads, the inode alone would send it to a stale offset of another file),
and read a new generation from the start; the catalogue applies a record it has
already applied as a no-op. A writer that opened the old file before the rename
finds, once it holds the lock, that its file is no longer the log (its open
descriptor keeps the old inode from being reused), and opens the new one.

A torn record (a crash in the middle of a write leaves a last line without its
newline, or a line whose checksum fails) is never served: the tail is cut off,
whatever its length, with a warning, before the next append; a bad line
elsewhere is skipped with a warning.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import zlib
from collections.abc import Iterator
from pathlib import Path

from coldstart.artifacts import _fsync_dir
from coldstart.data.schema import DataError
from coldstart.serving.records import erased

log = logging.getLogger(__name__)

LOG_FILE = "registrations.log"
CHUNK_BYTES = 8 * 2**20  # what `read_new(chunk=True)` reads at a time
HEADER_KIND = "log"  # the first record of a rewritten log: {"kind": "log", "generation": N}


def encode_record(record: dict) -> bytes:
    payload = json.dumps(record, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return f"{zlib.crc32(payload.encode()):08x} {payload}\n".encode()


def decode_record(line: bytes) -> dict | None:
    """The record of one whole line, or None if its checksum or JSON is bad."""
    try:
        text = line.decode("ascii").rstrip("\n")
        crc, payload = text[:8], text[9:]
        if text[8:9] != " " or int(crc, 16) != zlib.crc32(payload.encode()):
            return None
        record = json.loads(payload)
    except (UnicodeDecodeError, ValueError):
        return None
    return record if isinstance(record, dict) else None


class RegistrationStore:
    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / LOG_FILE
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        os.close(fd)
        _fsync_dir(self.folder)  # the log file itself must survive a crash, not only its records
        self.offset = 0  # bytes of the log this reader has consumed
        self.generation = 0  # which file: erasure replaces it with the next generation
        self.skipped = 0  # bad records met while reading
        self._finish_erasures()

    def _finish_erasures(self) -> None:
        """A deletion and its erasure are two writes here (an append, then a rewrite): a crash between them leaves
        the deleted entity's records (its text, attributes, interactions) in the log, served as deleted but still
        held. Whoever opens the store next finishes the erasure, under the writers' lock; this reader then reads
        the rewritten log from its start."""
        with self.writing():
            gone = self._erase()
        if gone:
            log.warning("%s: finished the erasure of %d record(s) that a deletion interrupted (by a crash) left",
                        self.path, gone)
        self.offset = 0

    @staticmethod
    def _generation(f) -> int:
        """The generation of the open log `f`, from its header line (0 without one)."""
        f.seek(0)
        first = decode_record(f.readline(4096))
        return int(first["generation"]) if first is not None and first.get("kind") == HEADER_KIND else 0

    def read_new(self, chunk: bool = False) -> list[dict]:
        """Whole records appended since the last call (a line still being written waits for the next); after
        an erasure replaced the log, every record of the new one. With `chunk`, only the records of the next
        `CHUNK_BYTES` or so (and at least one): a start-up that reads a large log chunk by chunk never holds
        the whole of it."""
        with open(self.path, "rb") as f:
            stat = os.fstat(f.fileno())
            generation = self._generation(f)
            if generation != self.generation:
                log.info("%s: the log was rewritten by an erasure (generation %d); reading it from the start",
                         self.path, generation)
                self.generation, self.offset = generation, 0
            if stat.st_size <= self.offset:
                return []
            f.seek(self.offset)
            left = stat.st_size - self.offset
            data = f.read(min(left, CHUNK_BYTES) if chunk else left)
            while chunk and b"\n" not in data and len(data) < left:  # one record longer than a chunk
                data += f.read(min(left - len(data), CHUNK_BYTES))
        end = data.rfind(b"\n") + 1
        records = []
        for line in data[:end].splitlines(keepends=True):
            record = decode_record(line)
            if record is None:
                self.skipped += 1
                log.warning("%s: skipping a damaged record at byte %d", self.path, self.offset)
            elif record.get("kind") != HEADER_KIND:
                records.append(record)
            self.offset += len(line)
        return records

    def rewind(self) -> None:
        """The next `read_new` returns every record again."""
        self.offset = 0

    @contextlib.contextmanager
    def writing(self) -> Iterator["_Writer"]:
        """Hold the writers' lock: read what others appended, then append (`writer.append`)."""
        while True:
            f = open(self.path, "rb+")
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            if os.fstat(f.fileno()).st_ino == os.stat(self.path).st_ino:
                break
            f.close()  # an erasure replaced the log while this writer waited: lock the new one
        try:
            self._cut_torn_tail(f)
            yield _Writer(self)
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
            f.close()

    def _cut_torn_tail(self, f) -> None:
        """Under the lock nobody is mid-write, so a last line without its newline is a crashed write: cut back
        to the last newline, however far back (in blocks of 64 KiB)."""
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            return
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return
        keep, end = 0, size
        while end > 0:
            start = max(0, end - 65536)
            f.seek(start)
            block = f.read(end - start)
            newline = block.rfind(b"\n")
            if newline >= 0:
                keep = start + newline + 1
                break
            end = start
        log.warning("%s: dropping a torn last record (%d bytes) left by an interrupted write", self.path, size - keep)
        os.ftruncate(f.fileno(), keep)
        os.fsync(f.fileno())
        self.offset = min(self.offset, keep)

    def _erase(self) -> int:
        """Under the lock: rewrite the log without the records `erased` marks (and any damaged line, which is
        never served). How many records went."""
        with open(self.path, "rb") as f:
            data = f.read()
        lines = data.splitlines(keepends=True)
        decoded = [decode_record(line) for line in lines]
        drop = erased([r if r is not None else {} for r in decoded])
        gone = [line for line, r, d in zip(lines, decoded, drop) if d or r is None]
        if not gone:
            return 0
        generation = self._generation_of(decoded) + 1
        kept = encode_record({"kind": HEADER_KIND, "generation": generation}) + b"".join(
            line for line, r, d in zip(lines, decoded, drop) if not d and r is not None and r.get("kind") != HEADER_KIND)
        fresh = self.folder / f".{LOG_FILE}.erasing"
        fd = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            view = memoryview(kept)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(fresh, self.path)
        _fsync_dir(self.folder)
        self.generation, self.offset = generation, os.stat(self.path).st_size
        return sum(d for d in drop)

    @staticmethod
    def _generation_of(decoded: list[dict | None]) -> int:
        first = decoded[0] if decoded else None
        return int(first["generation"]) if first is not None and first.get("kind") == HEADER_KIND else 0

    def _append(self, record: dict) -> None:
        line = encode_record(record)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        try:
            written = os.write(fd, line)
            if written != len(line):  # a short write leaves a torn line: cut it now, not at the next start
                os.ftruncate(fd, os.fstat(fd).st_size - written)
                raise OSError(f"{self.path}: short write ({written} of {len(line)} bytes)")
            os.fsync(fd)
        finally:
            os.close(fd)


class _Writer:
    def __init__(self, store: RegistrationStore):
        self.store = store

    def read_new(self) -> list[dict]:
        return self.store.read_new()

    def append(self, record: dict) -> None:
        """Durable when this returns. The caller applies the record itself (the next read skips it)."""
        if os.stat(self.store.path).st_size != self.store.offset:
            # A check made before catching up (a duplicate id, say) would not see others' records.
            raise RuntimeError("read_new() must return every record before append()")
        self.store._append(record)
        self.store.offset = os.stat(self.store.path).st_size

    def delete(self, record: dict) -> int:
        """Append the deletion `record` and erase every earlier record about its entity, under the one lock
        no other writer gets between; how many records went."""
        self.append(record)
        return self.erase()

    def erase(self) -> int:
        """Remove for good every record a later deletion names (`coldstart.serving.records.erased`); the caller
        has read every record. How many were removed."""
        if os.stat(self.store.path).st_size != self.store.offset:
            raise RuntimeError("read_new() must return every record before erase()")
        return self.store._erase()


def read_snapshot(folder: Path, upto: int | None = None) -> tuple[list[dict], int]:
    """(records, position) of the file log in `folder` up to byte `upto` (all when None), as
    `RegistrationStore.read_new` takes them, writing nothing: the batch job's fixed view of the store."""
    path = folder / LOG_FILE
    if not path.is_file():
        if upto:
            raise DataError("the registration log the job started with is gone", file=path)
        return [], 0
    with open(path, "rb") as f:
        data = f.read() if upto is None else f.read(upto)
    if upto is not None and len(data) < upto:
        raise DataError(f"the registration log is shorter ({len(data)} bytes) than when the job started "
                        f"({upto}): was it cut or replaced?", file=path)
    end = data.rfind(b"\n") + 1  # a line still being written (or torn by a crash) is not a record yet
    records, damaged = [], 0
    for line in data[:end].splitlines(keepends=True):
        record = decode_record(line)
        if record is None:
            damaged += 1
        elif record.get("kind") != HEADER_KIND:
            records.append(record)
    if damaged:
        log.warning("%s: skipped %d damaged record(s)", path, damaged)
    return records, end
