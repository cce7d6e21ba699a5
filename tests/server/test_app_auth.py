"""The gate (426 then 401), the token file, the fixed scope, me/projects/models, JSON errors."""

from __future__ import annotations

import stat

import httpx
import pytest

from arkor_trio._version import USER_AGENT
from arkor_trio.server import open_local_backend

from .conftest import SCOPE

GATE_BASE = {
    "error": "sdk_version_unsupported",
    "supportedRange": ">=0.0.1 <1.0.0",
}
PY_HINT = "pip install --upgrade arkor-trio"
TS_HINT = "npm install -g arkor@latest"
ANY_HINT = f"use an Arkor SDK: {PY_HINT} (Python) or {TS_HINT} (TypeScript)"


async def _raw_get(backend, path: str, headers: dict[str, str]) -> httpx.Response:
    async with httpx.AsyncClient(base_url=backend.base_url, verify=False) as c:
        return await c.get(path, params=SCOPE, headers=headers)


@pytest.mark.parametrize(
    ("client_header", "reason", "current", "hint"),
    [
        (None, "missing", None, ANY_HINT),
        ("", "missing", None, ANY_HINT),
        ("python-httpx/0.28", "malformed", None, ANY_HINT),
        ("arkor/0.0", "malformed", None, TS_HINT),
        ("arkor/1.2.3 arkor-trio/9", None, "1.2.3", PY_HINT),
        # Exactly outside the advertised ">=0.0.1 <1.0.0" (semver precedence):
        ("arkor/0.0.0", None, "0.0.0", TS_HINT),
        ("arkor/0.0.1-alpha.1", None, "0.0.1-alpha.1", TS_HINT),
        ("arkor/1.0.0", None, "1.0.0", TS_HINT),
        ("arkor/1.0.0+build.5", None, "1.0.0+build.5", TS_HINT),
    ],
)
async def test_version_gate_answers_426_before_auth(backend, client_header, reason, current, hint):
    headers = {} if client_header is None else {"X-Arkor-Client": client_header}
    # No Authorization either: the version gate answers first.
    response = await _raw_get(backend, "/v1/jobs", headers)
    assert response.status_code == 426
    expected = {**GATE_BASE, "currentVersion": current, "upgrade": hint}
    if reason is not None:
        expected["reason"] = reason
    assert response.json() == expected


@pytest.mark.parametrize(
    ("auth", "message"),
    [
        (None, "missing bearer token"),
        ("Basic abc", "missing bearer token"),
        ("Bearer", "missing bearer token"),
        ("Bearer wrong-token", "invalid bearer token"),
    ],
)
async def test_bad_token_is_401_json(backend, auth, message) -> None:
    headers = {"X-Arkor-Client": USER_AGENT}
    if auth is not None:
        headers["Authorization"] = auth
    response = await _raw_get(backend, "/v1/jobs", headers)
    assert response.status_code == 401
    assert response.json()["error"].startswith(message)
    assert backend.token not in response.text
    assert response.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "version",
    ["0.0.1", "0.0.3", "0.0.3-alpha.1", "0.9.99", "0.0.1+build", "1.0.0-rc.1", "0.99.0"],
)
async def test_versions_inside_the_advertised_range_are_accepted(backend, version) -> None:
    headers = {"X-Arkor-Client": f"arkor/{version}", "Authorization": f"Bearer {backend.token}"}
    assert (await _raw_get(backend, "/v1/jobs", headers)).status_code == 200


async def test_token_file_is_0600_and_reused_across_restarts(fake, tmp_path) -> None:
    data = tmp_path / "state"
    async with open_local_backend(data, engine=fake.engine()) as first:
        token = first.token
    path = data / "token"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().strip() == token
    assert len(token) >= 32
    async with open_local_backend(data, engine=fake.engine()) as second:
        assert second.token == token
        assert token not in repr(second)


async def test_me_lists_the_local_org_and_default_project(http) -> None:
    response = await http.get("/v1/me")
    assert response.json() == {
        "user": {"id": "local", "name": "local user"},
        "orgs": [{"id": "org_local", "slug": "local", "name": "Local"}],
        "defaultProject": {"orgSlug": "local", "projectSlug": "default"},
    }


@pytest.mark.parametrize(
    ("params", "status", "needle"),
    [
        ({}, 400, "orgSlug"),
        ({"orgSlug": "local"}, 400, "projectSlug"),
        ({"orgSlug": "acme", "projectSlug": "default"}, 404, "'local'"),
        ({"orgSlug": "local", "projectSlug": "other"}, 404, "'default'"),
    ],
)
async def test_project_scope_is_checked(http, params, status, needle) -> None:
    for method, path in [("GET", "/v1/jobs"), ("GET", "/v1/jobs/job_x/events/stream")]:
        response = await http.request(method, path, params=params)
        assert response.status_code == status
        assert needle in response.json()["error"]


async def test_models_lists_the_stand_ins(http) -> None:
    response = await http.get("/v1/models")
    assert response.json() == {
        "models": [{"id": "fake/tiny-model", "engine": "fake-engine", "standsIn": True}]
    }


async def test_unknown_route_and_method_are_json(http) -> None:
    missing = await http.get("/v1/nothing")
    assert missing.status_code == 404
    assert missing.json() == {"error": "no route GET /v1/nothing"}
    wrong = await http.delete("/v1/jobs", params=SCOPE)
    assert wrong.status_code == 405
    assert wrong.json() == {"error": "method DELETE not allowed on /v1/jobs"}
