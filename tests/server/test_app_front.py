"""What the backend answers before its gates: the CLI config, unknown routes, the 426 hint."""

from __future__ import annotations

import httpx
import pytest

from arkor_trio._version import USER_AGENT

TS_CLIENT = "arkor/0.0.3"


async def _get(backend, path: str, headers: dict[str, str]) -> httpx.Response:
    async with httpx.AsyncClient(base_url=backend.base_url, verify=False) as c:
        return await c.get(path, headers=headers)


async def test_cli_config_answers_without_auth_as_anonymous_only(backend) -> None:
    response = await _get(backend, "/v1/auth/cli/config", {"X-Arkor-Client": TS_CLIENT})
    assert response.status_code == 200
    assert response.json() == {
        "auth0Domain": None,
        "clientId": None,
        "audience": None,
        "callbackPorts": [],
    }
    async with httpx.AsyncClient(base_url=backend.base_url, verify=False) as c:
        post = await c.post("/v1/auth/cli/config", headers={"X-Arkor-Client": TS_CLIENT})
    assert post.status_code == 405
    old = await _get(backend, "/v1/auth/cli/config", {"X-Arkor-Client": "arkor/9.0.0"})
    assert old.status_code == 426


@pytest.mark.parametrize(
    "headers",
    [{}, {"X-Arkor-Client": TS_CLIENT}, {"Authorization": "Bearer wrong"}, {"Cookie": "x=y"}],
)
async def test_unknown_route_is_404_whoever_asks(backend, headers) -> None:
    response = await _get(backend, "/v1/no/such/route", headers)
    assert response.status_code == 404
    assert response.json() == {"error": "no route GET /v1/no/such/route"}
    assert backend.token not in response.text


async def test_known_route_keeps_its_gates(backend) -> None:
    assert (await _get(backend, "/v1/jobs", {"X-Arkor-Client": TS_CLIENT})).status_code == 401
    assert (await _get(backend, "/v1/jobs/job_x", {})).status_code == 426
    # A path a route serves with another method is not "unknown": its gate answers.
    assert (await _get(backend, "/v1/jobs/job_x/cancel", {})).status_code == 426


@pytest.mark.parametrize(
    ("headers", "hint"),
    [
        ({"X-Arkor-Client": "arkor/9.0.0"}, "npm install -g arkor@latest"),
        ({"X-Arkor-Client": "arkor/9.0.0 arkor-trio/0.1.0"}, "pip install --upgrade arkor-trio"),
        (
            {"X-Arkor-Client": "arkor/9.0.0", "User-Agent": USER_AGENT},
            "pip install --upgrade arkor-trio",
        ),
        (
            {"User-Agent": "curl/8"},
            "pip install --upgrade arkor-trio (Python) or npm install -g arkor@latest (TypeScript)",
        ),
    ],
)
async def test_426_upgrade_names_the_asking_client(backend, headers, hint) -> None:
    response = await _get(backend, "/v1/jobs", headers)
    assert response.status_code == 426
    assert hint in response.json()["upgrade"]
