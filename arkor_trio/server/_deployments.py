"""``/v1/endpoints``: the deployments of a project and their API keys, as the cloud serves them.

Routes (all project-scoped, ``orgSlug`` and ``projectSlug``): ``GET``/``POST /v1/endpoints``,
``GET``/``PATCH``/``DELETE /v1/endpoints/{id}``, ``GET``/``POST /v1/endpoints/{id}/keys``,
``DELETE /v1/endpoints/{id}/keys/{key_id}``. Shapes are the wire protocol's ``Deployment`` and
``DeploymentKey`` (section 1.3 of the protocol notes), plus ``url``: where the deployment answers
OpenAI-style chat completions on this backend (``_deploy_serve``).

Every field is checked before anything is written: 400 naming the field (bad slug, reserved
slug, bad target, retention rules, unknown or immutable fields), 404 for a job, deployment or
key outside the project, 409 for a taken slug or a full table.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import trio
from starlette.responses import Response
from starlette.routing import Route

from ._http import fail, json_response, read_json_object, require_project_scope

if TYPE_CHECKING:
    from collections.abc import Sequence

    from starlette.requests import Request

    from ._deploy_store import DeploymentStore
    from ._store import Store

__all__ = ["DEPLOY_PATH_PREFIX", "MAX_LABEL", "RESERVED_SLUGS", "deployment_routes"]

#: Where a deployment answers: ``/d/<slug>/v1/chat/completions``.
DEPLOY_PATH_PREFIX = "/d/"
_SLUG = re.compile(r"[a-z0-9][a-z0-9-]*[a-z0-9]")
MIN_SLUG, MAX_SLUG = 2, 50
MAX_LABEL = 80
MAX_RETENTION_DAYS = 3650
MAX_STEP = 2**53
RESERVED_SLUGS = frozenset(
    {
        "www",
        "api",
        "admin",
        "app",
        "apps",
        "auth",
        "login",
        "studio",
        "docs",
        "static",
        "status",
        "mail",
        "cdn",
        "dashboard",
        "console",
        "arkor",
        "internal",
        "local",
    }
)
_AUTH_MODES = ("none", "fixed_api_key")
_RETENTION_MODES = ("unlimited", "disabled", "days")
_CREATE_FIELDS = frozenset({"slug", "target", "authMode", "runRetentionMode", "runRetentionDays"})
_PATCH_FIELDS = frozenset({"target", "authMode", "enabled", "runRetentionMode", "runRetentionDays"})


def _unknown(body: dict[str, Any], allowed: frozenset[str], what: str) -> None:
    unknown = sorted(set(body) - allowed)
    if not unknown:
        return
    if "slug" in unknown and "slug" not in allowed:
        fail(
            400, "slug cannot be changed (the URL is fixed); create a new deployment", field="slug"
        )
    fail(
        400,
        f"unknown field(s) in the {what}: {', '.join(u[:80] for u in unknown[:10])}",
        field=unknown[0][:80],
    )


def _slug(value: Any) -> str:
    if not isinstance(value, str):
        fail(400, "slug must be a string", field="slug")
    if not MIN_SLUG <= len(value) <= MAX_SLUG or not _SLUG.fullmatch(value):
        fail(
            400,
            f"slug must be {MIN_SLUG}-{MAX_SLUG} characters of a-z, 0-9 and '-', "
            f"starting and ending with a letter or digit, got {value[:80]!r}",
            field="slug",
        )
    if value in RESERVED_SLUGS:
        fail(400, f"slug {value!r} is reserved", field="slug")
    return value


def _target(value: Any, store: Store, project_id: str, models: Sequence[str]) -> dict[str, Any]:
    shape = (
        'target must be {kind:"adapter", adapter:{kind:"final"|"checkpoint", jobId, step?}} '
        'or {kind:"base_model", baseModel}'
    )
    if not isinstance(value, dict):
        fail(400, shape, field="target")
    kind = value.get("kind")
    if kind == "base_model":
        if set(value) != {"kind", "baseModel"} or not isinstance(value["baseModel"], str):
            fail(400, shape, field="target")
        if value["baseModel"] not in models:
            fail(
                400,
                f"unknown baseModel {value['baseModel'][:100]!r}; the local backend "
                f"stands in for: {', '.join(models)}",
                field="target.baseModel",
            )
        return {"kind": "base_model", "baseModel": value["baseModel"]}
    if kind != "adapter" or set(value) != {"kind", "adapter"}:
        fail(400, shape, field="target")
    adapter = value["adapter"]
    if not isinstance(adapter, dict) or adapter.get("kind") not in ("final", "checkpoint"):
        fail(400, shape, field="target.adapter")
    job_id, step = adapter.get("jobId"), adapter.get("step")
    if not isinstance(job_id, str) or not job_id or len(job_id) > 100:
        fail(400, "target.adapter.jobId must be a job id", field="target.adapter.jobId")
    if adapter["kind"] == "final":
        if set(adapter) != {"kind", "jobId"}:
            fail(400, shape, field="target.adapter")
        out: dict[str, Any] = {"kind": "final", "jobId": job_id}
    else:
        if set(adapter) != {"kind", "jobId", "step"}:
            fail(400, shape, field="target.adapter")
        if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step <= MAX_STEP:
            fail(
                400,
                "target.adapter.step must be a non-negative integer",
                field="target.adapter.step",
            )
        out = {"kind": "checkpoint", "jobId": job_id, "step": step}
    row = store.get_job(job_id)
    if row is None or row[2] != project_id:
        fail(404, f"job {job_id} not found in this project", field="target.adapter.jobId")
    return {"kind": "adapter", "adapter": out}


def _auth_mode(value: Any) -> str:
    if value not in _AUTH_MODES:
        fail(400, f"authMode must be one of {', '.join(_AUTH_MODES)}", field="authMode")
    return str(value)


def _retention(body: dict[str, Any], current: str | None) -> tuple[str, int | None] | None:
    """``(mode, days)`` from the body; None when neither field is given."""
    mode, days = body.get("runRetentionMode"), body.get("runRetentionDays")
    if mode is None and days is None:
        return None
    if mode is None:
        mode = current
    if mode not in _RETENTION_MODES:
        fail(
            400,
            f"runRetentionMode must be one of {', '.join(_RETENTION_MODES)}"
            + (" (runRetentionDays alone needs the mode 'days')" if current else ""),
            field="runRetentionMode",
        )
    if mode != "days":
        if days is not None:
            fail(
                400,
                f"runRetentionDays is only for runRetentionMode 'days', not {mode!r}",
                field="runRetentionDays",
            )
        return str(mode), None
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_RETENTION_DAYS:
        fail(
            400,
            f"runRetentionDays must be an integer from 1 to {MAX_RETENTION_DAYS} "
            "with runRetentionMode 'days'",
            field="runRetentionDays",
        )
    return "days", days


def _with_url(request: Request, deployment: dict[str, Any]) -> dict[str, Any]:
    base = str(request.base_url).rstrip("/")
    return {
        **deployment,
        "url": f"{base}{DEPLOY_PATH_PREFIX}{deployment['slug']}/v1/chat/completions",
    }


def deployment_routes(
    deployments: DeploymentStore, store: Store, models: Sequence[str]
) -> list[Route]:
    """The ``/v1/endpoints`` routes (see the module docstring)."""

    async def call(fn: Any, *args: Any, **kwargs: Any) -> Any:
        return await trio.to_thread.run_sync(lambda: fn(*args, **kwargs))

    async def existing(request: Request, project_id: str) -> dict[str, Any]:
        dep_id = request.path_params["dep_id"]
        found = await call(deployments.get, project_id, dep_id)
        if found is None:
            fail(404, f"deployment {dep_id[:100]} not found in this project")
        return found  # type: ignore[no-any-return]

    async def list_all(request: Request) -> Response:
        project_id = require_project_scope(request)
        found = await call(deployments.in_project, project_id)
        return json_response({"deployments": [_with_url(request, d) for d in found]})

    async def create(request: Request) -> Response:
        project_id = require_project_scope(request)
        body = await read_json_object(request)
        _unknown(body, _CREATE_FIELDS, "deployment request")
        slug = _slug(body.get("slug"))
        target = _target(body.get("target"), store, project_id, models)
        auth_mode = _auth_mode(body.get("authMode"))
        retention = _retention(body, None) or ("days", 7)
        try:
            created = await call(
                deployments.create,
                slug=slug,
                project_id=project_id,
                target=target,
                auth_mode=auth_mode,
                retention=retention,
            )
        except OverflowError as exc:
            fail(409, str(exc))
        if created is None:
            fail(409, f"deployment slug {slug!r} is already taken", field="slug")
        return json_response({"deployment": _with_url(request, created)}, 201)

    async def get_one(request: Request) -> Response:
        project_id = require_project_scope(request)
        return json_response(
            {"deployment": _with_url(request, await existing(request, project_id))}
        )

    async def update(request: Request) -> Response:
        project_id = require_project_scope(request)
        current = await existing(request, project_id)
        body = await read_json_object(request)
        _unknown(body, _PATCH_FIELDS, "deployment update")
        changes: dict[str, Any] = {}
        if "target" in body:
            changes["target"] = _target(body["target"], store, project_id, models)
        if "authMode" in body:
            changes["auth_mode"] = _auth_mode(body["authMode"])
        if "enabled" in body:
            if not isinstance(body["enabled"], bool):
                fail(400, "enabled must be true or false", field="enabled")
            changes["enabled"] = int(body["enabled"])
        retention = _retention(body, current["runRetentionMode"])
        if retention is not None:
            changes["retention_mode"], changes["retention_days"] = retention
        updated = await call(deployments.update, project_id, current["id"], changes)
        if updated is None:
            fail(404, f"deployment {current['id']} not found in this project")
        return json_response({"deployment": _with_url(request, updated)})

    async def delete(request: Request) -> Response:
        project_id = require_project_scope(request)
        current = await existing(request, project_id)
        if not await call(deployments.delete, project_id, current["id"]):
            fail(404, f"deployment {current['id']} not found in this project")
        return Response(status_code=204)

    async def list_keys(request: Request) -> Response:
        current = await existing(request, require_project_scope(request))
        return json_response({"keys": await call(deployments.keys, current["id"])})

    async def create_key(request: Request) -> Response:
        current = await existing(request, require_project_scope(request))
        body = await read_json_object(request)
        _unknown(body, frozenset({"label"}), "key request")
        label = body.get("label")
        if not isinstance(label, str) or not 1 <= len(label.strip()) <= MAX_LABEL:
            fail(
                400,
                f"label must be 1-{MAX_LABEL} characters (after trimming spaces)",
                field="label",
            )
        try:
            key = await call(deployments.create_key, current["id"], label.strip())
        except OverflowError as exc:
            fail(409, str(exc))
        return json_response({"key": key}, 201)

    async def revoke_key(request: Request) -> Response:
        current = await existing(request, require_project_scope(request))
        key_id = request.path_params["key_id"]
        if not await call(deployments.revoke_key, current["id"], key_id):
            fail(404, f"key {key_id[:100]} not found on deployment {current['id']}")
        return Response(status_code=204)

    one, keys = "/v1/endpoints/{dep_id}", "/v1/endpoints/{dep_id}/keys"
    return [
        Route("/v1/endpoints", list_all, methods=["GET"]),
        Route("/v1/endpoints", create, methods=["POST"]),
        Route(one, get_one, methods=["GET"]),
        Route(one, update, methods=["PATCH"]),
        Route(one, delete, methods=["DELETE"]),
        Route(keys, list_keys, methods=["GET"]),
        Route(keys, create_key, methods=["POST"]),
        Route(keys + "/{key_id}", revoke_key, methods=["DELETE"]),
    ]
