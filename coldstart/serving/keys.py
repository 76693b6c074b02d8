"""API keys with scopes, read where secrets live: the environment or a file (a mounted Kubernetes Secret).

Two scopes: `read` (recommendations, item facts, health) and `write` (register,
record interactions, delete), which includes read. Keys never travel in
arguments that Ray or the store keep (deployment init arguments, routing
records): every process that checks them reads them here, from its own
environment. `generate_key_file` makes a write key in a file only its owner can
read, for `coldstart serve --generate-key`.

- `COLDSTART_API_KEY`: one write key;
- `COLDSTART_READ_KEY`: one read key;
- `COLDSTART_API_KEYS_FILE`: a file of `SCOPE KEY` lines (blank lines and `#` comments aside).
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from coldstart.config import ConfigError
from coldstart.serving.stores import STORE_ENV, without_password

READ, WRITE = "read", "write"
SCOPES = {READ: {READ}, WRITE: {READ, WRITE}}  # what each scope allows
WRITE_KEY_ENV, READ_KEY_ENV, KEYS_FILE_ENV = "COLDSTART_API_KEY", "COLDSTART_READ_KEY", "COLDSTART_API_KEYS_FILE"


@dataclass(frozen=True)
class ApiKeys:
    keys: tuple[tuple[str, str], ...] = ()  # (scope, key)

    def __repr__(self) -> str:  # never a key in a log line or a traceback
        return f"ApiKeys({len(self.keys)} key(s): {', '.join(sorted({s for s, _ in self.keys})) or 'none'})"

    def __bool__(self) -> bool:
        return bool(self.keys)

    @classmethod
    def of(cls, write: str | None = None, read: str | None = None) -> "ApiKeys":
        return cls(tuple((scope, key) for scope, key in ((WRITE, write), (READ, read)) if key))

    @classmethod
    def from_file(cls, path: str | Path) -> "ApiKeys":
        """`SCOPE KEY` per line; an error names the file and the line, never the key."""
        keys = []
        for number, line in enumerate(Path(path).read_text().splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split()
            if len(parts) != 2 or parts[0] not in SCOPES:
                raise ConfigError(f"{path}, line {number}: expected 'read KEY' or 'write KEY'")
            if len(parts[1]) < 16:
                raise ConfigError(f"{path}, line {number}: a key needs 16 characters or more")
            keys.append((parts[0], parts[1]))
        return cls(tuple(keys))

    @classmethod
    def from_env(cls, environ=None) -> "ApiKeys":
        environ = os.environ if environ is None else environ
        keys = cls.of(environ.get(WRITE_KEY_ENV) or None, environ.get(READ_KEY_ENV) or None)
        path = environ.get(KEYS_FILE_ENV)
        return cls(keys.keys + cls.from_file(path).keys) if path else keys

    def scope(self, presented: str | None) -> str | None:
        """The scope of the key presented, None if it is no key of these (every key compared, in constant time)."""
        found = None
        for scope, key in self.keys:
            if hmac.compare_digest((presented or "").encode(), key.encode()) and found != WRITE:
                found = scope
        return found

    def key(self, scope: str) -> str | None:
        """A key of `scope` (what a smoke test presents), None if there is none."""
        return next((key for s, key in self.keys if s == scope), None)

    def allows(self, presented: str | None, needed: str) -> bool:
        scope = self.scope(presented)
        return scope is not None and needed in SCOPES[scope]


def generate_key_file(path: str | Path) -> Path:
    """A new write key in `path` (mode 0600, created; an existing file is kept): returns the path."""
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"# coldstart API keys: SCOPE KEY per line (read, write)\nwrite {secrets.token_urlsafe(32)}\n")
    return path


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve beyond this machine
        return False


def closed_by_default(cfg) -> ApiKeys:
    """The keys the replicas will check, from `cfg` and this process's environment, which a cluster started
    here passes on (never an argument Ray keeps; so does a store URL's password, which Serve's arguments and
    the routing records carry without). A server reachable beyond loopback without a key is refused."""
    if cfg.api_key:
        os.environ[WRITE_KEY_ENV] = cfg.api_key
    store = cfg.store_location()
    if isinstance(store, str) and without_password(store) != store:  # the password travels only this way
        os.environ[STORE_ENV] = store
    keys = ApiKeys.from_env()
    if not keys and not is_loopback(cfg.host):
        raise ConfigError(f"host: {cfg.host} is reachable beyond this machine, and no API key is set: give one "
                          f"(--api-key, COLDSTART_API_KEY, or a key file in COLDSTART_API_KEYS_FILE), or let "
                          f"`coldstart serve --generate-key` make one")
    return keys
