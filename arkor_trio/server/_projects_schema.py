"""The projects table, part of the store's schema (created with it at start)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._http import LOCAL_PROJECT

if TYPE_CHECKING:
    import sqlite3

__all__ = ["PROJECTS_SCHEMA", "ensure_default_project"]

PROJECTS_SCHEMA = """
CREATE TABLE IF NOT EXISTS projects (
    num INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    slug TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL
);
"""


def ensure_default_project(conn: sqlite3.Connection) -> None:
    """Insert the ``default`` project when missing: a write only the first time, so a start
    while another process holds the write lock does not wait for it."""
    found = conn.execute("SELECT 1 FROM projects WHERE id = ?", (LOCAL_PROJECT["id"],)).fetchone()
    if found is None:
        conn.execute(
            "INSERT OR IGNORE INTO projects (id, slug, name) VALUES (?, ?, ?)",
            (LOCAL_PROJECT["id"], LOCAL_PROJECT["slug"], LOCAL_PROJECT["name"]),
        )
