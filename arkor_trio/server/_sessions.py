"""The live page's browser sessions, kept server-side in the backend's SQLite file.

A login (the one-time link, or the API token in the login form) creates a session: a random id
(``secrets.token_urlsafe(32)``) that only the browser's cookie holds; the table keeps its SHA-256,
never the id itself. A session is accepted while:

- it is not older than :data:`SESSION_MAX_AGE` (no sliding renewal: sign in again after it);
- it was made under the current API token (a new token, i.e. a rotation, ends every session);
- the request is addressed the way the login was (the same ``Host``: ``127.0.0.1:8787`` and
  ``localhost:8787`` are different sessions) and comes from the same browser (the same
  ``User-Agent``): a cookie copied elsewhere does not work as is;
- it was not revoked: ``arkor-trio sessions revoke`` (or :func:`revoke_sessions`) ends all of
  them, and a running backend sees that at the next request.

Sessions survive a restart of the backend on the same data dir (the page resumes after a
restart), and no more than :data:`MAX_SESSIONS` are kept (a new login drops the oldest).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import sqlite3
import threading
import time
from pathlib import Path

from .._errors import ConfigError
from ._store import DB_NAME

__all__ = ["MAX_SESSIONS", "SESSION_MAX_AGE", "SessionStore", "revoke_sessions"]

log = logging.getLogger("arkor_trio.server")

#: How long a session lasts from its login (seconds).
SESSION_MAX_AGE = 7 * 24 * 3600
#: Most sessions kept; a login beyond this drops the oldest.
MAX_SESSIONS = 256
_BUSY_MS = 5000
_SCHEMA = """
CREATE TABLE IF NOT EXISTS browser_sessions (
    id_hash TEXT PRIMARY KEY,
    token_tag TEXT NOT NULL,
    binding TEXT NOT NULL,
    created REAL NOT NULL,
    expires REAL NOT NULL
)
"""


def _sha(value: bytes) -> str:
    return hashlib.sha256(value).hexdigest()


def _binding(host: bytes, agent: bytes) -> str:
    return _sha(host.lower() + b"\n" + agent)


class SessionStore:
    """Browser sessions in ``path`` (the backend's database file), for one API token.

    Reads (one per page request, on the event loop) use their own connection and lock, so they
    never wait for a login's write. Creating the store drops sessions of another token and
    expired ones.

    Args:
        path: The SQLite file (``":memory:"``: sessions of this process only).
        token: The backend's current API token.
    """

    def __init__(self, path: Path | str, token: str) -> None:
        self._tag = hmac.new(token.encode(), b"arkor-trio session tag", hashlib.sha256).hexdigest()
        self._read_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._writer = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False, timeout=0
        )
        self._ready = False
        try:  # a start must not wait for (or fail on) a database another process holds
            self._prepare()
        except sqlite3.OperationalError as exc:
            log.warning("browser sessions: cannot prepare the table yet (%s); at first login", exc)
        self._writer.execute(f"PRAGMA busy_timeout={_BUSY_MS}")
        if str(path) == ":memory:":  # (one database only lives in one connection)
            self._reader, self._read_lock = self._writer, self._write_lock
            return
        self._reader = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._reader.execute(f"PRAGMA busy_timeout={_BUSY_MS}")

    def _prepare(self) -> None:
        """Create the table and drop sessions of another token and expired ones (a write)."""
        self._writer.execute(_SCHEMA)
        self._writer.execute(
            "DELETE FROM browser_sessions WHERE token_tag != ? OR expires <= ?",
            (self._tag, time.time()),
        )
        self._ready = True

    def close(self) -> None:
        """Close the connections."""
        with self._read_lock:
            self._reader.close()
        with self._write_lock:
            self._writer.close()  # (closing twice is harmless)

    def create(self, host: bytes, agent: bytes) -> str:
        """A new session for a browser (its ``Host`` and ``User-Agent``); returns its id.

        Raises:
            sqlite3.OperationalError: The database refused the write.
        """
        value = secrets.token_urlsafe(32)
        now = time.time()
        with self._write_lock:
            if not self._ready:
                self._prepare()
            self._writer.execute(
                "INSERT INTO browser_sessions VALUES (?, ?, ?, ?, ?)",
                (_sha(value.encode()), self._tag, _binding(host, agent), now,
                 now + SESSION_MAX_AGE),
            )  # fmt: skip
            self._writer.execute(
                "DELETE FROM browser_sessions WHERE id_hash NOT IN (SELECT id_hash FROM "
                "browser_sessions ORDER BY created DESC LIMIT ?)",
                (MAX_SESSIONS,),
            )
        return value

    def valid(self, value: str, host: bytes, agent: bytes) -> bool:
        """Whether ``value`` is a live session of this token, for this ``Host`` and browser."""
        try:
            with self._read_lock:
                row = self._reader.execute(
                    "SELECT token_tag, binding, expires FROM browser_sessions WHERE id_hash = ?",
                    (_sha(value.encode("utf-8", "replace")),),
                ).fetchone()
        except sqlite3.OperationalError:  # no table yet (a start that could not write)
            return False
        if row is None:
            return False
        tag, binding, expires = row
        return (
            hmac.compare_digest(str(tag), self._tag)
            and hmac.compare_digest(str(binding), _binding(host, agent))
            and float(expires) > time.time()
        )


def revoke_sessions(data_dir: Path | str) -> int:
    """Sign out every browser of the backend in ``data_dir``; returns how many sessions ended.

    A running backend refuses the revoked cookies at their next request.

    Raises:
        ConfigError: ``data_dir`` holds no backend database.
        sqlite3.Error: The database cannot be opened or written.
    """
    path = Path(data_dir).expanduser() / DB_NAME
    if not path.is_file():
        raise ConfigError(f"no local backend database in {path.parent}", field="data_dir")
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute(f"PRAGMA busy_timeout={_BUSY_MS}")
        conn.execute(_SCHEMA)
        return conn.execute("DELETE FROM browser_sessions").rowcount
    finally:
        conn.close()
