"""The local backend's ASGI application: routes for me, projects, jobs, events, models, chat,
endpoints (deployments).

Every error is JSON ``{"error": "..."}`` with its status; an unexpected exception is logged and
answered ``500 {"error": "internal error"}`` (never a traceback). The app sits behind
:class:`~arkor_trio.server._auth.GateMiddleware` (426, then 401), itself behind
:class:`~arkor_trio.server._browser.BrowserGate` (the live page and its cookie sessions),
behind :class:`~arkor_trio.server._front.PublicFront` (the CLI config, deployment URLs and the
404 of an unknown route, answered before any gate).
"""

from __future__ import annotations

import logging
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.routing import Route

from ._auth import GateMiddleware
from ._browser import BrowserAccess, BrowserGate
from ._chat import chat_route
from ._deploy_serve import DeploymentServer
from ._deploy_store import DeploymentStore
from ._deployments import deployment_routes
from ._engine import Engine
from ._events import EventHub, stream_events_route
from ._front import PublicFront
from ._http import (
    LOCAL_ORG,
    ApiProblem,
    fail,
    json_response,
    read_json_object,
    require_project_scope,
)
from ._limits import job_name_problem
from ._losses import losses_route
from ._projects import ProjectStore, project_routes
from ._runner import JobRunner
from ._sdk import AnonymousSignIn
from ._store import TERMINAL_STATUSES, Store, StoreError, job_to_wire
from ._ws import ws_route
from ._ws_protocol import WsLimits

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["AppState", "build_app"]

log = logging.getLogger("arkor_trio.server")


@attrs.frozen(kw_only=True)
class AppState:
    """What the routes work on."""

    store: Store
    hub: EventHub
    runner: JobRunner
    engine: Engine
    data_dir: Path
    ping_interval: float
    projects: ProjectStore
    ws_limits: WsLimits = attrs.field(factory=WsLimits)


def _job_or_404(state: AppState, job_id: str) -> dict[str, Any]:
    row = state.store.get_job(job_id)
    if row is None:
        fail(404, f"job {job_id} not found")
    return job_to_wire(row)


def _routes(state: AppState, deployments: DeploymentStore) -> list[Route]:
    store, engine = state.store, state.engine

    async def me(request: Request) -> Response:
        return json_response(
            {
                "user": {"id": "local", "name": "local user"},
                "orgs": [LOCAL_ORG],
                "defaultProject": {"orgSlug": LOCAL_ORG["slug"], "projectSlug": "default"},
            }
        )

    async def create_job(request: Request) -> Response:
        project_id = require_project_scope(request)
        body = await read_json_object(request)
        unknown = sorted(set(body) - {"name", "config"})
        if unknown:
            fail(400, f"unknown field(s) in the job request: {', '.join(unknown)}",
                 field=unknown[0])  # fmt: skip
        name, config = body.get("name"), body.get("config")
        if (problem := job_name_problem(name)) is not None or not isinstance(name, str):
            fail(400, problem or "name must be a string", field="name")
        if not isinstance(config, dict):
            fail(400, "config must be an object", field="config")
        try:
            engine.validate_config(config)
        except engine.config_rejected as exc:
            field = getattr(exc, "field", None)
            fail(400, str(getattr(exc, "message", exc)), field=field)
        if not state.runner.accepting:
            fail(503, "the local backend is shutting down; retry after it restarts")
        job_id = f"job_{secrets.token_hex(8)}"
        await store.in_thread(
            store.create_job,
            job_id=job_id,
            org_id=LOCAL_ORG["id"],
            project_id=project_id,
            name=name,
            config=config,
        )
        job = _job_or_404(state, job_id)
        runner = state.runner  # asked again: shutdown may have begun during the write
        if runner.accepting:
            runner.submit(job_id, config)
        else:  # then the job stays queued, as every job shutdown finds queued
            log.info("job %s created as the backend shuts down: the next start fails it", job_id)
        return json_response({"job": job}, 201)

    async def list_jobs(request: Request) -> Response:
        project_id = require_project_scope(request)
        jobs = [job_to_wire(row) for row in store.list_jobs() if row[2] == project_id]
        return json_response({"jobs": jobs})

    async def get_job(request: Request) -> Response:
        require_project_scope(request)
        return json_response({"job": _job_or_404(state, request.path_params["job_id"])})

    async def cancel_job(request: Request) -> Response:
        require_project_scope(request)
        job_id = request.path_params["job_id"]
        status = _job_or_404(state, job_id)["status"]
        if status in TERMINAL_STATUSES or not await state.runner.cancel(job_id):
            # (the second test catches a job that ended between the read and the cancel)
            fail(409, f"job {job_id} is already {store.job_status(job_id) or status}")
        return json_response({"ok": True})

    async def models(request: Request) -> Response:
        found = [
            {"id": m, "engine": engine.name, "standsIn": True} for m in engine.supported_models
        ]
        return json_response({"models": found})

    return [
        Route("/v1/me", me, methods=["GET"]),
        *project_routes(state.projects),
        Route("/v1/jobs", list_jobs, methods=["GET"]),
        Route("/v1/jobs", create_job, methods=["POST"]),
        Route("/v1/jobs/{job_id}", get_job, methods=["GET"]),
        Route("/v1/jobs/{job_id}/cancel", cancel_job, methods=["POST"]),
        Route(
            "/v1/jobs/{job_id}/events/stream",
            stream_events_route(store, state.hub, state.ping_interval),
            methods=["GET"],
        ),
        Route("/v1/models", models, methods=["GET"]),
        losses_route(store),
        Route(
            "/v1/inference/chat",
            chat_route(store, engine, state.data_dir, state.hub.closing),
            methods=["POST"],
        ),
        *deployment_routes(deployments, store, engine.supported_models),
    ]


async def _problem(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiProblem)  # registered for ApiProblem only
    return exc.response()


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)  # registered for HTTPException only
    message = {404: f"no route {request.method} {request.url.path}"}.get(exc.status_code)
    if exc.status_code == 405:
        message = f"method {request.method} not allowed on {request.url.path}"
    headers = dict(exc.headers) if exc.headers else None
    return json_response({"error": message or str(exc.detail)}, exc.status_code, headers=headers)


async def _store_refused(request: Request, exc: Exception) -> Response:
    return json_response({"error": f"the local backend cannot write: {exc}"}, 503)


async def _internal(request: Request, exc: Exception) -> Response:
    return json_response({"error": "internal error"}, 500)


class _LogErrors:
    """Outermost wrapper: logs an unexpected exception once and keeps it from the server.

    Starlette's error middleware has already answered 500 (via ``_internal``) when it re-raises.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.app(scope, receive, send)
        except Exception:
            if scope["type"] != "http":
                raise
            log.exception("unhandled error in %s %s", scope.get("method"), scope.get("path"))


def build_app(state: AppState, token: str, access: BrowserAccess | None = None) -> ASGIApp:
    """The gated ASGI app (see the module docstring), behind the browser gate (the page)."""
    deployments = DeploymentStore(state.store.path)
    app = Starlette(
        routes=[
            *_routes(state, deployments),
            ws_route(state.store, state.hub, token, state.ping_interval, state.ws_limits),
        ],
        exception_handlers={
            ApiProblem: _problem,
            HTTPException: _http_error,
            StoreError: _store_refused,
            Exception: _internal,
        },
    )
    app.state.projects = state.projects  # for require_project_scope
    access = BrowserAccess(token) if access is None else access
    gated = GateMiddleware(app, token)
    browser = BrowserGate(gated, access, AnonymousSignIn(access))
    served = DeploymentServer(deployments, gated, token)
    return _LogErrors(PublicFront(browser, app.router.routes, served))
