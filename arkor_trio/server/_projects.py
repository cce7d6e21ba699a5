"""Projects of the local backend: ``GET``/``POST /v1/projects`` and the scope every job lives in.

The local backend has one org (``local``) and any number of projects in it, ``default`` always
among them. Projects live in their own table of the backend's SQLite file, written and read
through this module's own connection (projects change rarely; jobs and events keep theirs).
Jobs are created in the project their request's ``projectSlug`` names and are visible only
there: another project's job is a 404, as on the cloud.

Slugs follow what the TypeScript SDK derives from a directory name: lowercase letters, digits
and ``-``, starting and ending with a letter or digit, at most :data:`MAX_SLUG` characters.
"""

from __future__ import annotations

import re
import secrets
import sqlite3
import threading
from typing import TYPE_CHECKING, Any

import trio
from starlette.routing import Route

from ._http import LOCAL_ORG, fail, json_response, read_json_object, require_org
from ._store_errors import store_error

if TYPE_CHECKING:
    from pathlib import Path

    from starlette.requests import Request
    from starlette.responses import Response

__all__ = ["MAX_PROJECTS", "MAX_SLUG", "ProjectStore", "project_routes"]

#: Longest slug and project name accepted; most projects one backend keeps.
MAX_SLUG = 64
MAX_NAME = 200
MAX_PROJECTS = 1000
#: How long a project write waits for another connection's write lock.
_BUSY_TIMEOUT_S = 5.0
_SLUG = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?")


class ProjectStore:
    """The projects table (its own connection to the backend's database file).

    Args:
        path: The SQLite file (the store's, whose schema creates the table and the ``default``
            project).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        # Two connections: a write may wait (in a worker thread) up to the busy timeout for
        # another connection's write lock, and reads run on the event loop, so a read must
        # never wait for a writer: reads have their own connection and lock (WAL: a reader
        # does not wait for a writer in SQLite either).
        self._read_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._reader = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._writer = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        for conn in (self._reader, self._writer):
            conn.execute(f"PRAGMA busy_timeout={int(_BUSY_TIMEOUT_S * 1000)}")
        # (the table is the store's schema's)

    def close(self) -> None:
        """Close the connections."""
        with self._read_lock:
            self._reader.close()
        with self._write_lock:
            self._writer.close()

    def list(self) -> list[dict[str, str]]:
        """Every project, oldest first, as the wire's ``Project``."""
        with self._read_lock:
            rows = self._reader.execute(
                "SELECT id, slug, name FROM projects ORDER BY num"
            ).fetchall()
        return [_wire(*row) for row in rows]

    def id_of(self, slug: str) -> str | None:
        """The id of the project with this slug, or None."""
        with self._read_lock:
            row = self._reader.execute("SELECT id FROM projects WHERE slug = ?", (slug,)).fetchone()
        return None if row is None else str(row[0])

    def job_project(self, job_id: str) -> str | None:
        """The id of the project a job belongs to, or None for an unknown job."""
        with self._read_lock:
            row = self._reader.execute(
                "SELECT project_id FROM jobs WHERE id = ?", (job_id,)
            ).fetchone()
        return None if row is None else str(row[0])

    def create(self, slug: str, name: str) -> dict[str, str] | None:
        """Create a project; None when the slug is taken.

        Raises:
            OverflowError: There are already :data:`MAX_PROJECTS` projects.
        """
        project_id = f"proj_{secrets.token_hex(8)}"
        with self._write_lock:
            (count,) = self._writer.execute("SELECT COUNT(*) FROM projects").fetchone()
            if count >= MAX_PROJECTS:
                raise OverflowError(f"the local backend keeps at most {MAX_PROJECTS} projects")
            try:
                self._writer.execute(
                    "INSERT INTO projects (id, slug, name) VALUES (?, ?, ?)",
                    (project_id, slug, name),
                )
            except sqlite3.IntegrityError:
                return None
        return _wire(project_id, slug, name)


def _wire(project_id: str, slug: str, name: str) -> dict[str, str]:
    return {"id": project_id, "slug": slug, "name": name, "orgId": LOCAL_ORG["id"]}


def _slug(value: Any) -> str:
    if not isinstance(value, str) or not value:
        fail(400, "slug must be a non-empty string", field="slug")
    if len(value) > MAX_SLUG or not _SLUG.fullmatch(value):
        fail(
            400,
            f"slug must be 1-{MAX_SLUG} characters of a-z, 0-9 and '-', starting and ending "
            f"with a letter or digit, got {value[:80]!r}",
            field="slug",
        )
    return value


def project_routes(projects: ProjectStore) -> list[Route]:
    """``GET /v1/projects`` and ``POST /v1/projects`` (both take ``orgSlug`` only)."""

    async def list_projects(request: Request) -> Response:
        require_org(request)
        return json_response({"org": LOCAL_ORG, "projects": projects.list()})

    async def create_project(request: Request) -> Response:
        require_org(request)
        body = await read_json_object(request)
        unknown = sorted(set(body) - {"name", "slug"})
        if unknown:
            fail(400, f"unknown field(s) in the project request: {', '.join(unknown)}",
                 field=unknown[0])  # fmt: skip
        slug = _slug(body.get("slug"))
        name = body.get("name", slug)
        if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME:
            fail(400, f"name must be a non-empty string of at most {MAX_NAME} characters",
                 field="name")  # fmt: skip
        try:  # a write: off the event loop, as every store write (it may wait for a lock)
            created = await trio.to_thread.run_sync(projects.create, slug, name)
        except OverflowError as exc:
            fail(409, str(exc))
        except sqlite3.OperationalError as exc:
            raise store_error(exc, projects.path, _BUSY_TIMEOUT_S) from exc
        if created is None:
            fail(409, f"project slug {slug!r} already exists")
        return json_response({"project": created}, 201)

    return [
        Route("/v1/projects", list_projects, methods=["GET"]),
        Route("/v1/projects", create_project, methods=["POST"]),
    ]
