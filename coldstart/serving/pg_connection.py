"""Talking to PostgreSQL: the registration table's name, connections with our defaults, a URL as a log line
may show it, a record as the table stores it. Shared by the store (`pg_store`), its preflight check and the
batch job's read-only snapshot (`read_snapshot`)."""

from __future__ import annotations

import json

from coldstart.config import ConfigError

TABLE = "coldstart_registrations"
# Connection settings, each unless the URL gives its own.
CONNECT_DEFAULTS = {"connect_timeout": 10, "application_name": "coldstart",
                    # notice a dead server or network in about a minute, not the OS's two hours
                    "keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10, "keepalives_count": 3}


def display_url(url: str) -> str:
    """`postgresql://user@host:port/db`: what a log line or an error may show (never the password)."""
    from psycopg.conninfo import conninfo_to_dict  # psycopg: optional, only a database store loads it

    try:
        params = conninfo_to_dict(url)
    except Exception:  # noqa: BLE001 - a URL libpq cannot parse: show only its scheme
        return url.split("://", 1)[0] + "://..."
    user = f"{params['user']}@" if params.get("user") else ""
    port = f":{params['port']}" if params.get("port") else ""
    return f"postgresql://{user}{params.get('host') or 'localhost'}{port}/{params.get('dbname') or ''}"


def encode(record: dict) -> str:
    if not isinstance(record, dict):
        raise TypeError(f"a registration record is a dict, got {type(record).__name__}")
    # As the file log writes it: ASCII, no NaN (which PostgreSQL's json would refuse anyway).
    return json.dumps(record, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def table_sql(template: str, table: str):
    """A statement naming the table (quoted as an identifier, never pasted in)."""
    from psycopg import sql  # psycopg: optional, only a database store loads it

    return sql.SQL(template).format(table=sql.Identifier(table))


def connect(url: str):
    """A connection with our defaults; raises ConfigError naming the server (not the password) on failure."""
    import psycopg  # psycopg: optional, only a database store loads it
    from psycopg.conninfo import conninfo_to_dict  # psycopg: optional, only a database store loads it

    try:
        given = conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        raise ConfigError(f"registration store {display_url(url)}: not a valid PostgreSQL URL "
                          f"({first_line(exc)})") from None
    extra = {k: v for k, v in CONNECT_DEFAULTS.items() if k not in given}
    try:
        conn = psycopg.connect(url, autocommit=False, **extra)
    except psycopg.Error as exc:
        raise ConfigError(f"registration store {display_url(url)}: cannot connect ({first_line(exc)})") from None
    return conn
