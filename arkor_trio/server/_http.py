"""HTTP plumbing shared by the local backend's routes: JSON errors, bodies, the fixed scope."""

from __future__ import annotations

import json
from contextlib import aclosing
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

from starlette.responses import Response

from ._limits import MAX_JSON_DEPTH, LimitError, check_json_value

if TYPE_CHECKING:
    from starlette.requests import Request

__all__ = [
    "LOCAL_ORG",
    "LOCAL_PROJECT",
    "ApiProblem",
    "ProjectScopes",
    "fail",
    "json_response",
    "read_json_object",
    "require_job_in_scope",
    "require_org",
    "require_project_scope",
]

#: Largest request body accepted (a chat history or a job config).
MAX_BODY = 4 * 1024 * 1024

#: The local backend's one org, and the project it always has.
LOCAL_ORG = {"id": "org_local", "slug": "local", "name": "Local"}
LOCAL_PROJECT = {"id": "proj_default", "slug": "default", "name": "Default", "orgId": "org_local"}


class ApiProblem(Exception):
    """Raised by a route to answer ``status`` with ``{"error": message, **extra}``."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra

    def response(self) -> Response:
        """The JSON error response."""
        return json_response({"error": self.message, **self.extra}, self.status)


def fail(status: int, message: str, **extra: Any) -> NoReturn:
    """Raise :class:`ApiProblem` (shorthand for routes)."""
    raise ApiProblem(status, message, **extra)


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A compact JSON response."""
    return Response(
        json.dumps(body, separators=(",", ":")).encode(),
        status_code=status,
        headers=headers,
        media_type="application/json",
    )


async def read_json_object(request: Request) -> dict[str, Any]:
    """The request body as a JSON object; 400 naming what is wrong with it, 413 when too large.

    The size bound holds while reading; nesting depth and lone surrogates are checked after
    parsing (see ``_limits``), so no route ever sees them.
    """
    too_large = f"the request body is larger than {MAX_BODY} bytes"
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > MAX_BODY:
        fail(413, too_large)
    parts, size = [], 0
    body_parts = request.stream()
    async with aclosing(body_parts):
        async for part in body_parts:
            size += len(part)
            if size > MAX_BODY:
                fail(413, too_large)
            parts.append(part)
    raw = b"".join(parts)
    if not raw.strip():
        fail(400, "the request body must be a JSON object, got an empty body")
    try:
        body = json.loads(raw)
    except RecursionError:
        fail(400, f"the request body is nested deeper than {MAX_JSON_DEPTH} levels")
    except (ValueError, UnicodeDecodeError) as exc:
        fail(400, f"the request body is not valid JSON: {exc}")
    if not isinstance(body, dict):
        fail(400, f"the request body must be a JSON object, got {type(body).__name__}")
    try:
        check_json_value(body)
    except LimitError as exc:
        fail(400, exc.message, field=exc.field)
    return body


def _known(what: str, slug: str) -> str:
    return f"the local backend has one {what}, {slug!r}"


def require_org(request: Request) -> None:
    """Check the ``orgSlug`` query parameter: 400 when missing, 404 when not ``local``."""
    org = request.query_params.get("orgSlug")
    if not org:
        fail(400, "missing query parameter 'orgSlug' (the local backend's org is 'local')")
    if org != LOCAL_ORG["slug"]:
        fail(404, f"org {org!r} not found; {_known('org', LOCAL_ORG['slug'])}")


class ProjectScopes(Protocol):
    """What the scope check needs from the projects (``app.state.projects``)."""

    def id_of(self, slug: str) -> str | None: ...
    def job_project(self, job_id: str) -> str | None: ...


def require_project_scope(request: Request) -> str:
    """Check ``orgSlug`` and ``projectSlug``; the project's id.

    400 when one is missing, 404 for an unknown org or project, and 404 when the route's
    ``job_id`` (if any) belongs to another project. The projects are the app's
    ``state.projects`` (a :class:`ProjectScopes`).
    """
    require_org(request)
    project = request.query_params.get("projectSlug")
    if not project:
        fail(400, "missing query parameter 'projectSlug' (the local backend's is 'default')")
    scopes: ProjectScopes = request.app.state.projects
    project_id = scopes.id_of(project)
    if project_id is None:
        fail(404, f"project {project!r} not found; create it with POST /v1/projects "
             f"(the local backend always has {LOCAL_PROJECT['slug']!r})")  # fmt: skip
    job_id = request.path_params.get("job_id")
    if job_id is not None:
        require_job_in_scope(request, job_id, project_id)
    return project_id


def require_job_in_scope(request: Request, job_id: str, project_id: str) -> None:
    """404 when ``job_id`` is a job of another project than ``project_id`` (unknown: no-op)."""
    scopes: ProjectScopes = request.app.state.projects
    owner = scopes.job_project(job_id)
    if owner is not None and owner != project_id:
        fail(404, f"job {job_id} not found in project {request.query_params.get('projectSlug')!r}")
