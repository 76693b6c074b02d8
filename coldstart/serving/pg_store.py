"""The registration store in PostgreSQL: for ranker replicas on several machines.

The file log (`coldstart.serving.file_store`) relies on `flock` and `O_APPEND`,
which a network volume shared by pods does not reliably honour. Here the
records are rows of one table, `coldstart_registrations (id bigserial, record
json, created_at timestamptz, about text[])`, and the database gives the three
guarantees the store promises:

- **Order**: a writer takes `LOCK TABLE ... IN EXCLUSIVE MODE` (it excludes
  other writers, never readers) before it inserts and holds it until its commit.
  Ids are drawn and committed one writer at a time, so they become visible in
  increasing order, and a reader that asks for `id > last seen` never misses a
  row that commits later with a smaller id. A rolled-back insert leaves a gap in
  the ids, nothing else.
- **Exclusivity**: the table lock is the writers' lock; it is transaction-level,
  so a writer that dies (its process killed, its connection cut) releases it
  when the server ends its session, and works behind PgBouncer in transaction
  mode. `idle_in_transaction_session_timeout` ends a writer that hangs holding
  it; `lock_timeout` turns a long wait into an error the client retries. Both
  are set per transaction (`SET LOCAL`): a pooler keeps no session settings.
- **Durability**: `append` commits before it returns. A commit the connection
  lost the answer to may or may not have happened; the client retries, and
  registration is idempotent by id and body, so either way one record results.

A record is stored as `json` (its text, exactly), not `jsonb`, which would
rewrite numbers (`1e300` would come back as a 301-digit integer): a record
reads back as the dict that went in.

A deletion (`writer.delete`) inserts its record and deletes every earlier row
about the entity in one transaction, by `about` ("user:u1", "item:i9": the
entities a record concerns, written with it and indexed): nobody inserts between
the two, and nothing reads the table to find them.

The URL is libpq's (`postgresql://user@host:5432/db?sslmode=require`); leave
the password out of it and libpq reads `PGPASSWORD` or `~/.pgpass`. A schema
other than the user's default: `?options=-csearch_path%3Dmyschema`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import threading
from collections.abc import Iterator

from coldstart.config import ConfigError
from coldstart.serving.pg_connection import TABLE, connect, display_url, encode, first_line, table_sql  # noqa: F401
from coldstart.serving.records import DELETIONS, concerns, supersedes

log = logging.getLogger(__name__)

CHUNK_ROWS = 10_000  # what `read_new(chunk=True)` reads at a time
LOCK_TIMEOUT_S = 30.0  # a writer waits this long for the lock, then the request fails (and is retried)
IDLE_IN_TRANSACTION_S = 60.0  # the server ends a writer's session that holds the lock this long doing nothing
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_CREATE_LOCK = 0x636F6C64  # advisory lock key: replicas starting together create the table once ("cold")


def about(record: dict) -> list[str]:
    """The `about` column: "kind:id" of each entity the record concerns (`records.concerns`), which a deletion
    erases by, through its index, never parsing the records in SQL (a json string may hold \\u0000, which
    PostgreSQL cannot turn into text)."""
    return [f"{kind}:{entity}" for kind, entity in concerns(record)]


class PostgresStore:
    """The registration store in a PostgreSQL table; same contract as the file log's `RegistrationStore`."""

    def __init__(self, url: str, *, table: str = TABLE):
        if not _IDENTIFIER.match(table):
            raise ConfigError(f"registration store table {table!r}: use lower-case letters, digits and _")
        self.url, self.table = url, table
        self.last_id = 0  # the highest id this reader has consumed
        self.skipped = 0  # rows that were not a JSON object
        self._lock = threading.RLock()  # one connection: its statements and transactions, one thread at a time
        self._conn = None
        self._locked = False  # whether this connection's open transaction holds the table lock
        self._create_table()

    def __repr__(self) -> str:
        return f"PostgresStore({display_url(self.url)!r}, table={self.table!r})"

    # ---- the connection -----------------------------------------------------------------------------

    def _connection(self):
        if self._conn is None or self._conn.closed or self._conn.broken:
            if self._conn is not None:
                log.warning("%s: connection lost; reconnecting", display_url(self.url))
                self._conn.close()
            self._conn = connect(self.url)
            self._locked = False
        return self._conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _sql(self, template: str):
        return table_sql(template, self.table)

    def _create_table(self) -> None:
        with self._lock:
            conn = self._connection()
            try:
                with conn.cursor() as cur:
                    cur.execute("SELECT to_regclass(%s) IS NOT NULL", (self.table,))
                    if not cur.fetchone()[0]:
                        # Replicas start together: serialise the creation (IF NOT EXISTS alone races).
                        cur.execute("SELECT pg_advisory_xact_lock(%s)", (_CREATE_LOCK,))
                        cur.execute(self._sql("CREATE TABLE IF NOT EXISTS {table} ("
                                              "id bigserial PRIMARY KEY, record json NOT NULL, "
                                              "created_at timestamptz NOT NULL DEFAULT now())"))
                    cur.execute("SELECT count(*) FROM information_schema.columns WHERE table_name = %s "
                                "AND column_name = 'about'", (self.table,))
                    if not cur.fetchone()[0]:  # new, or a table of an earlier version: the key deletions erase by
                        self._add_about(cur)
                conn.commit()
            except Exception as exc:
                self._end(conn)
                import psycopg  # psycopg: optional, only a database store loads it

                if isinstance(exc, psycopg.Error):
                    raise ConfigError(f"registration store {display_url(self.url)}: cannot create table "
                                      f"{self.table} ({first_line(exc)})") from None
                raise

    def _add_about(self, cur) -> None:
        """Add the `about` column and its index, and fill it for the rows already there (in Python: the keys
        come from `records.concerns`, as for every new row)."""
        from psycopg import sql  # psycopg: optional, only a database store loads it

        cur.execute("SELECT pg_advisory_xact_lock(%s)", (_CREATE_LOCK,))
        cur.execute(self._sql("ALTER TABLE {table} ADD COLUMN IF NOT EXISTS about text[]"))
        cur.execute(sql.SQL("CREATE INDEX IF NOT EXISTS {index} ON {table} USING gin (about)").format(
            index=sql.Identifier(f"{self.table}_about"), table=sql.Identifier(self.table)))
        cur.execute(self._sql("SELECT id, record::text FROM {table} WHERE about IS NULL ORDER BY id"))
        for row_id, text in cur.fetchall():
            record = json.loads(text)
            cur.execute(self._sql("UPDATE {table} SET about = %s WHERE id = %s"),
                        (about(record) if isinstance(record, dict) else [], row_id))

    def _end(self, conn) -> None:
        """Roll back whatever is open (releasing the table lock); a dead connection is left to reconnect."""
        self._locked = False
        if not conn.broken and not conn.closed:
            with contextlib.suppress(Exception):
                conn.rollback()

    # ---- reading --------------------------------------------------------------------------------------

    def _fetch_new(self, conn, limit: int | None = None) -> tuple[list[dict], int]:
        """(records after `last_id`, at most `limit`; the last id read); the caller moves `last_id` once the
        read is safe."""
        with conn.cursor() as cur:
            cur.execute(self._sql("SELECT id, record::text FROM {table} WHERE id > %s ORDER BY id LIMIT %s"),
                        (self.last_id, limit))
            rows = cur.fetchall()
        records = []
        for row_id, text in rows:
            record = json.loads(text)
            if isinstance(record, dict):
                records.append(record)
            else:
                self.skipped += 1
                log.warning("%s: skipping row %d of %s: not a JSON object", display_url(self.url), row_id, self.table)
        return records, rows[-1][0] if rows else self.last_id

    def read_new(self, chunk: bool = False) -> list[dict]:
        """Records committed since the last call, in order; with `chunk`, the next `CHUNK_ROWS` of them (a
        start-up that reads a large table chunk by chunk never holds the whole of it)."""
        import psycopg  # psycopg: optional, only a database store loads it

        with self._lock:
            if self._locked:  # inside writing(): read in the writer's transaction
                records, self.last_id = self._fetch_new(self._conn)
                return records
            for attempt in (1, 2):
                conn = self._connection()
                try:
                    records, last_id = self._fetch_new(conn, CHUNK_ROWS if chunk else None)
                    conn.commit()  # end the read's transaction: no session left idle in one
                    self.last_id = last_id
                    return records
                except psycopg.OperationalError:
                    self._end(conn)
                    if attempt == 2 or not conn.broken:
                        raise
                    # The server restarted or the network blinked: one reconnect, then give up.
                except BaseException:
                    self._end(conn)
                    raise
        raise AssertionError("unreachable")

    def rewind(self) -> None:
        """The next `read_new` returns every record again."""
        with self._lock:
            self.last_id = 0

    # ---- writing --------------------------------------------------------------------------------------

    def _take_lock(self) -> None:
        """Begin a transaction holding the table lock (waits up to LOCK_TIMEOUT_S for other writers)."""
        import psycopg  # psycopg: optional, only a database store loads it

        for attempt in (1, 2):
            conn = self._connection()
            try:
                with conn.cursor() as cur:
                    # per transaction, not per session: a pooler (PgBouncer's transaction mode) keeps no session
                    cur.execute(f"SET LOCAL lock_timeout = '{int(LOCK_TIMEOUT_S * 1000)}ms'")
                    cur.execute(f"SET LOCAL idle_in_transaction_session_timeout = '{int(IDLE_IN_TRANSACTION_S * 1000)}ms'")
                    cur.execute(self._sql("LOCK TABLE {table} IN EXCLUSIVE MODE"))
                self._locked = True
                return
            except psycopg.OperationalError:
                self._end(conn)
                if attempt == 2 or not conn.broken:
                    raise  # a lock timeout, say: the request fails and the client retries it
            except BaseException:
                self._end(conn)
                raise

    @contextlib.contextmanager
    def writing(self) -> Iterator["PostgresWriter"]:
        """Hold the writers' lock: read what others appended, then append (`writer.append`)."""
        with self._lock:
            self._take_lock()
            try:
                yield PostgresWriter(self)
            finally:
                self._end(self._conn)  # nothing uncommitted is kept: append commits its own record

    def _append(self, record: dict) -> None:
        payload = encode(record)
        if not self._locked:  # a second append in the same block: the first one's commit let the lock go
            self._take_lock()
        conn = self._conn
        with conn.cursor() as cur:
            cur.execute(self._sql("SELECT EXISTS (SELECT 1 FROM {table} WHERE id > %s)"), (self.last_id,))
            if cur.fetchone()[0]:
                # A check made before catching up (a duplicate id, say) would not see others' records.
                raise RuntimeError("read_new() must return every record before append()")
            cur.execute(self._sql("INSERT INTO {table} (record, about) VALUES (%s::json, %s) RETURNING id"),
                        (payload, about(record)))
            row_id = cur.fetchone()[0]
        conn.commit()  # durable from here on; the lock goes with the transaction
        self._locked = False
        self.last_id = row_id


    def _delete(self, record: dict) -> int:
        kind, target = supersedes(record)
        if not self._locked:
            self._take_lock()
        conn = self._conn
        with conn.cursor() as cur:
            cur.execute(self._sql("SELECT EXISTS (SELECT 1 FROM {table} WHERE id > %s)"), (self.last_id,))
            if cur.fetchone()[0]:
                raise RuntimeError("read_new() must return every record before delete()")
            cur.execute(self._sql("INSERT INTO {table} (record, about) VALUES (%s::json, %s) RETURNING id"),
                        (encode(record), about(record)))
            row_id = cur.fetchone()[0]
            # every earlier record about the entity (its registration, its interactions), by the indexed key
            cur.execute(self._sql("DELETE FROM {table} WHERE id < %s AND about @> ARRAY[%s]::text[]"),
                        (row_id, f"{kind}:{target}"))
            gone = cur.rowcount
            if record.get("kind") == "compaction":  # and the deletion records older than its cutoff
                cur.execute(self._sql("DELETE FROM {table} WHERE id < %s AND about @> ARRAY[%s]::text[] "
                                      "AND created_at < to_timestamp(%s)"),
                            (row_id, ":".join(DELETIONS), float(record["cutoff"])))
                gone += cur.rowcount
        conn.commit()
        self._locked = False
        self.last_id = row_id
        return gone


class PostgresWriter:
    def __init__(self, store: PostgresStore):
        self.store = store

    def read_new(self) -> list[dict]:
        return self.store.read_new()

    def append(self, record: dict) -> None:
        """Committed when this returns. The caller applies the record itself (the next read skips it)."""
        self.store._append(record)

    def delete(self, record: dict) -> int:
        """The deletion (or routing) `record` and the erasure of every earlier record about the entity it
        supersedes (`records.supersedes`), in one transaction (nobody inserts between them), found by key;
        committed when this returns. How many records went."""
        return self.store._delete(record)


def read_snapshot(url: str, upto: int | None = None, *, table: str = TABLE) -> tuple[list[dict], int]:
    """(records with id <= `upto`, all when None; the last id read), creating nothing: a missing table
    has no records. For readers that never write (batch recommendations)."""
    import psycopg  # psycopg: optional, only a database store loads it

    conn = connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT to_regclass(%s) IS NOT NULL", (table,))
            if not cur.fetchone()[0]:
                if upto:
                    raise ConfigError(f"registration store {display_url(url)}: table {table} is gone")
                return [], 0
            cur.execute(table_sql("SELECT id, record::text FROM {table} WHERE id <= %s ORDER BY id", table),
                        (upto if upto is not None else 2**63 - 1,))
            rows = cur.fetchall()
    except psycopg.Error as exc:
        raise ConfigError(f"registration store {display_url(url)}: {first_line(exc)}") from None
    finally:
        conn.close()
    records = [r for r in (json.loads(text) for _, text in rows) if isinstance(r, dict)]
    return records, rows[-1][0] if rows else (upto or 0)
