"""Deployments and their API keys, in two tables of the backend's SQLite file.

A deployment publishes a job's final adapter, one of its checkpoints or a base model under
``/d/<slug>/v1/chat/completions`` (see ``_deploy_serve``). Its keys are random
(``ark_live_`` + 32 random bytes, URL-safe base64); only their SHA-256 is stored, with a display
prefix. SHA-256 without a salt is enough for random keys of 256 bits (there is no dictionary to
try); a key is found by its hash and then compared in constant time.

Every method here is blocking (one short connection per call, so nothing has to be closed at
shutdown): routes call them with ``trio.to_thread.run_sync``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import sqlite3
import threading
from contextlib import closing
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ._http import LOCAL_ORG
from ._store_errors import store_error

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

__all__ = ["KEY_PREFIX", "MAX_DEPLOYMENTS", "MAX_KEYS", "DeploymentStore", "key_hash"]

#: Most deployments one backend keeps, and most keys (live or revoked) one deployment keeps.
MAX_DEPLOYMENTS = 1000
MAX_KEYS = 100
#: How every key starts, and how many of its characters the listing shows.
KEY_PREFIX = "ark_live_"
_SHOWN = len(KEY_PREFIX) + 8
_BUSY_TIMEOUT_S = 5.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS deployments (
    num INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    slug TEXT NOT NULL UNIQUE,
    project_id TEXT NOT NULL,
    target TEXT NOT NULL,
    auth_mode TEXT NOT NULL,
    enabled INTEGER NOT NULL,
    retention_mode TEXT NOT NULL,
    retention_days INTEGER,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS deployment_keys (
    num INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    deployment_id TEXT NOT NULL,
    label TEXT NOT NULL,
    prefix TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    enabled INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    last_used_at TEXT
);
"""
_COLUMNS = (
    "id, slug, project_id, target, auth_mode, enabled, retention_mode, retention_days, "
    "created_at, updated_at"
)
_KEY_COLUMNS = "id, label, prefix, enabled, created_at, last_used_at"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def key_hash(plaintext: str) -> str:
    """The stored form of a key (hex SHA-256)."""
    return hashlib.sha256(plaintext.encode("utf-8", "surrogatepass")).hexdigest()


def _deployment(row: tuple[Any, ...]) -> dict[str, Any]:
    dep_id, slug, project_id, target, auth, enabled, mode, days, created, updated = row
    out: dict[str, Any] = {
        "id": dep_id,
        "slug": slug,
        "orgId": LOCAL_ORG["id"],
        "projectId": project_id,
        "target": json.loads(target),
        "authMode": auth,
        "urlFormat": "openai_compat",
        "enabled": bool(enabled),
        "customDomain": None,
        "runRetentionMode": mode,
        "createdAt": created,
        "updatedAt": updated,
    }
    if days is not None:
        out["runRetentionDays"] = days
    return out


def _key(row: tuple[Any, ...]) -> dict[str, Any]:
    key_id, label, prefix, enabled, created, last_used = row
    return {
        "id": key_id,
        "label": label,
        "prefix": prefix,
        "enabled": bool(enabled),
        "createdAt": created,
        "lastUsedAt": last_used,
    }


class DeploymentStore:
    """The deployments and deployment_keys tables (see the module docstring).

    Args:
        path: The backend's SQLite file.

    Raises (every method):
        StoreError: SQLite refused (disk full, locked longer than the busy timeout, ...).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._schema_lock = threading.Lock()
        self._schema_ready = False

    def _run(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        try:
            with closing(
                sqlite3.connect(self.path, timeout=_BUSY_TIMEOUT_S, isolation_level=None)
            ) as conn:
                with self._schema_lock:
                    if not self._schema_ready:
                        conn.executescript(_SCHEMA)
                        self._schema_ready = True
                conn.execute("BEGIN IMMEDIATE")
                try:
                    result = fn(conn)
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
                return result
        except sqlite3.OperationalError as exc:
            raise store_error(exc, self.path, _BUSY_TIMEOUT_S) from exc

    def project_slug(self, project_id: str) -> str | None:
        """The slug of a project (the chat route is scoped by slug), or None."""

        def read(conn: sqlite3.Connection) -> str | None:
            row = conn.execute("SELECT slug FROM projects WHERE id = ?", (project_id,)).fetchone()
            return None if row is None else str(row[0])

        result: str | None = self._run(read)
        return result

    def create(
        self,
        *,
        slug: str,
        project_id: str,
        target: dict[str, Any],
        auth_mode: str,
        retention: tuple[str, int | None],
    ) -> dict[str, Any] | None:
        """Create a deployment; None when the slug is taken.

        Raises:
            OverflowError: There are already :data:`MAX_DEPLOYMENTS` deployments.
        """
        now, dep_id = _now(), f"dep_{secrets.token_hex(8)}"
        row = (dep_id, slug, project_id, json.dumps(target), auth_mode, 1, *retention, now, now)

        def write(conn: sqlite3.Connection) -> dict[str, Any] | None:
            (count,) = conn.execute("SELECT COUNT(*) FROM deployments").fetchone()
            if count >= MAX_DEPLOYMENTS:
                raise OverflowError(
                    f"the local backend keeps at most {MAX_DEPLOYMENTS} "
                    "deployments; delete one first"
                )
            try:
                conn.execute(
                    f"INSERT INTO deployments ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)", row
                )
            except sqlite3.IntegrityError:
                return None
            return _deployment(row)

        result: dict[str, Any] | None = self._run(write)
        return result

    def in_project(self, project_id: str) -> list[dict[str, Any]]:
        """The project's deployments, oldest first."""

        def read(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM deployments WHERE project_id = ? ORDER BY num",
                (project_id,),
            ).fetchall()
            return [_deployment(row) for row in rows]

        result: list[dict[str, Any]] = self._run(read)
        return result

    def get(self, project_id: str | None, dep_id: str) -> dict[str, Any] | None:
        """One deployment of the project (any project when ``project_id`` is None), or None."""
        return self._run(lambda conn: _get(conn, "id", dep_id, project_id))  # type: ignore[no-any-return]

    def by_slug(self, slug: str) -> dict[str, Any] | None:
        """The deployment serving ``slug``, or None."""
        return self._run(lambda conn: _get(conn, "slug", slug, None))  # type: ignore[no-any-return]

    def update(
        self, project_id: str, dep_id: str, changes: dict[str, Any]
    ) -> dict[str, Any] | None:
        """Apply column changes (``target``, ``auth_mode``, ``enabled``, ``retention_mode``,
        ``retention_days``) and bump ``updatedAt``; the updated deployment, or None if unknown."""
        allowed = {"target", "auth_mode", "enabled", "retention_mode", "retention_days"}
        assert set(changes) <= allowed, changes
        values = {k: json.dumps(v) if k == "target" else v for k, v in changes.items()}
        values["updated_at"] = _now()

        def write(conn: sqlite3.Connection) -> dict[str, Any] | None:
            if _get(conn, "id", dep_id, project_id) is None:
                return None
            sets = ", ".join(f"{column} = ?" for column in values)
            conn.execute(f"UPDATE deployments SET {sets} WHERE id = ?", (*values.values(), dep_id))
            return _get(conn, "id", dep_id, project_id)

        result: dict[str, Any] | None = self._run(write)
        return result

    def delete(self, project_id: str, dep_id: str) -> bool:
        """Delete a deployment and its keys; whether it existed."""

        def write(conn: sqlite3.Connection) -> bool:
            if _get(conn, "id", dep_id, project_id) is None:
                return False
            conn.execute("DELETE FROM deployment_keys WHERE deployment_id = ?", (dep_id,))
            conn.execute("DELETE FROM deployments WHERE id = ?", (dep_id,))
            return True

        result: bool = self._run(write)
        return result

    def keys(self, dep_id: str) -> list[dict[str, Any]]:
        """A deployment's keys (never their plaintext), oldest first."""

        def read(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            rows = conn.execute(
                f"SELECT {_KEY_COLUMNS} FROM deployment_keys WHERE deployment_id = ? ORDER BY num",
                (dep_id,),
            ).fetchall()
            return [_key(row) for row in rows]

        result: list[dict[str, Any]] = self._run(read)
        return result

    def create_key(self, dep_id: str, label: str) -> dict[str, Any]:
        """A new key: ``{id, label, plaintext, prefix, createdAt}`` (the only plaintext ever).

        Raises:
            OverflowError: The deployment already has :data:`MAX_KEYS` keys.
        """
        plaintext = KEY_PREFIX + secrets.token_urlsafe(32)
        key_id, now = f"key_{secrets.token_hex(8)}", _now()
        prefix = plaintext[:_SHOWN]

        def write(conn: sqlite3.Connection) -> None:
            (count,) = conn.execute(
                "SELECT COUNT(*) FROM deployment_keys WHERE deployment_id = ?", (dep_id,)
            ).fetchone()
            if count >= MAX_KEYS:
                raise OverflowError(
                    f"a deployment keeps at most {MAX_KEYS} keys (revoked "
                    "ones included); delete and recreate it to start over"
                )
            conn.execute(
                "INSERT INTO deployment_keys (id, deployment_id, label, prefix, hash, enabled, "
                "created_at) VALUES (?, ?, ?, ?, ?, 1, ?)",
                (key_id, dep_id, label, prefix, key_hash(plaintext), now),
            )

        self._run(write)
        return {
            "id": key_id,
            "label": label,
            "plaintext": plaintext,
            "prefix": prefix,
            "createdAt": now,
        }

    def revoke_key(self, dep_id: str, key_id: str) -> bool:
        """Disable a key (idempotent); whether the deployment has it."""

        def write(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "UPDATE deployment_keys SET enabled = 0 WHERE id = ? AND deployment_id = ?",
                (key_id, dep_id),
            )
            return cur.rowcount > 0

        result: bool = self._run(write)
        return result

    def use_key(self, dep_id: str, plaintext: str) -> bool:
        """Whether ``plaintext`` is a live key of the deployment; marks it used when it is."""
        wanted = key_hash(plaintext)

        def write(conn: sqlite3.Connection) -> bool:
            row = conn.execute(
                "SELECT id, hash FROM deployment_keys WHERE hash = ? AND deployment_id = ? "
                "AND enabled = 1",
                (wanted, dep_id),
            ).fetchone()
            if row is None or not hmac.compare_digest(str(row[1]), wanted):
                return False
            conn.execute(
                "UPDATE deployment_keys SET last_used_at = ? WHERE id = ?", (_now(), row[0])
            )
            return True

        result: bool = self._run(write)
        return result


def _get(
    conn: sqlite3.Connection, column: str, value: str, project_id: str | None
) -> dict[str, Any] | None:
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM deployments WHERE {column} = ?", (value,)
    ).fetchone()
    if row is None or (project_id is not None and row[2] != project_id):
        return None
    return _deployment(row)
