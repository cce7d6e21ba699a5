"""``/v1/endpoints`` and a deployment's OpenAI-style URL, over real HTTP (fake engine)."""

from __future__ import annotations

import hashlib
import json
import sqlite3

import httpx
import pytest

from .conftest import FAKE_MODEL, SCOPE, create_job, read_stream

BASE_TARGET = {"kind": "base_model", "baseModel": FAKE_MODEL}
MESSAGES = [{"role": "user", "content": "hello"}]


async def _create(http, **body) -> httpx.Response:
    body = {"slug": "support-bot", "target": BASE_TARGET, "authMode": "none", **body}
    return await http.post("/v1/endpoints", params=SCOPE, json=body)


async def _completed_job(http) -> str:
    job = await create_job(http)
    await read_stream(http, job["id"])  # until the terminal event
    return str(job["id"])


def _openai(backend) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=backend.base_url, verify=False)


async def test_create_get_list_patch_delete_round_trip(http) -> None:
    job_id = await _completed_job(http)
    target = {"kind": "adapter", "adapter": {"kind": "final", "jobId": job_id}}
    created = await _create(http, target=target, authMode="fixed_api_key")
    assert created.status_code == 201, created.text
    dep = created.json()["deployment"]
    assert dep["slug"] == "support-bot"
    assert dep["target"] == target
    assert dep["authMode"] == "fixed_api_key"
    assert dep["urlFormat"] == "openai_compat"
    assert dep["enabled"] is True
    assert dep["customDomain"] is None
    assert (dep["runRetentionMode"], dep["runRetentionDays"]) == ("days", 7)
    assert dep["orgId"] == "org_local"
    assert dep["url"].endswith("/d/support-bot/v1/chat/completions")

    listed = (await http.get("/v1/endpoints", params=SCOPE)).json()["deployments"]
    assert [d["id"] for d in listed] == [dep["id"]]
    got = (await http.get(f"/v1/endpoints/{dep['id']}", params=SCOPE)).json()["deployment"]
    assert got == dep

    patched = await http.patch(
        f"/v1/endpoints/{dep['id']}",
        params=SCOPE,
        json={"enabled": False, "runRetentionMode": "disabled"},
    )
    assert patched.status_code == 200, patched.text
    after = patched.json()["deployment"]
    assert after["enabled"] is False
    assert after["runRetentionMode"] == "disabled"
    assert "runRetentionDays" not in after
    assert after["target"] == target  # partial: the rest is untouched

    deleted = await http.delete(f"/v1/endpoints/{dep['id']}", params=SCOPE)
    assert deleted.status_code == 204
    assert deleted.content == b""
    gone = await http.get(f"/v1/endpoints/{dep['id']}", params=SCOPE)
    assert gone.status_code == 404


async def test_keys_are_shown_once_hashed_at_rest_and_revocable(http, backend) -> None:
    dep = (await _create(http, authMode="fixed_api_key")).json()["deployment"]
    keys_url = f"/v1/endpoints/{dep['id']}/keys"
    made = await http.post(keys_url, params=SCOPE, json={"label": "  production "})
    assert made.status_code == 201, made.text
    key = made.json()["key"]
    assert key["label"] == "production"
    assert key["plaintext"].startswith("ark_live_")
    assert key["plaintext"].startswith(key["prefix"])
    assert len(key["plaintext"]) > len(key["prefix"]) + 30

    listed = (await http.get(keys_url, params=SCOPE)).json()["keys"]
    assert listed == [
        {
            "id": key["id"],
            "label": "production",
            "prefix": key["prefix"],
            "enabled": True,
            "createdAt": key["createdAt"],
            "lastUsedAt": None,
        }
    ]
    # At rest: the hash, never the plaintext.
    raw = backend.data_dir.glob("arkor-local.sqlite3*")
    blob = b"".join(p.read_bytes() for p in raw)
    assert key["plaintext"].encode() not in blob
    with sqlite3.connect(backend.data_dir / "arkor-local.sqlite3") as conn:
        (stored,) = conn.execute("SELECT hash FROM deployment_keys").fetchone()
    assert stored == hashlib.sha256(key["plaintext"].encode()).hexdigest()

    url = f"/d/{dep['slug']}/v1/chat/completions"
    body = {"model": "ignored", "messages": MESSAGES}
    async with _openai(backend) as client:
        assert (await client.post(url, json=body)).status_code == 401
        wrong = await client.post(url, json=body, headers={"Authorization": "Bearer ark_live_x"})
        assert wrong.status_code == 401
        assert wrong.json()["error"]["type"] == "authentication_error"
        ok = await client.post(url, json=body, headers={"x-api-key": key["plaintext"]})
        assert ok.status_code == 200, ok.text
        assert (await http.get(keys_url, params=SCOPE)).json()["keys"][0]["lastUsedAt"]

        revoked = await http.delete(f"{keys_url}/{key['id']}", params=SCOPE)
        assert revoked.status_code == 204
        assert (await http.get(keys_url, params=SCOPE)).json()["keys"][0]["enabled"] is False
        bearer = {"Authorization": f"Bearer {key['plaintext']}"}
        assert (await client.post(url, json=body, headers=bearer)).status_code == 401
    missing = await http.delete(f"{keys_url}/key_nope", params=SCOPE)
    assert missing.status_code == 404


async def test_chat_completions_json_and_stream(http, backend) -> None:
    job_id = await _completed_job(http)
    final = {"kind": "adapter", "adapter": {"kind": "final", "jobId": job_id}}
    await _create(http, slug="final-one", target=final)
    check = {"kind": "adapter", "adapter": {"kind": "checkpoint", "jobId": job_id, "step": 3}}
    await _create(http, slug="ckpt-one", target=check)
    async with _openai(backend) as client:
        answer = await client.post(
            "/d/final-one/v1/chat/completions",
            json={"model": "gpt-4o", "messages": MESSAGES, "max_tokens": 4, "top_p": 0.5},
        )
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["object"] == "chat.completion"
        assert body["choices"][0]["message"] == {"role": "assistant", "content": "hi f"}
        assert body["choices"][0]["finish_reason"] == "length"
        assert body["model"] == f"adapter:{job_id}"

        streamed = await client.post(
            "/d/ckpt-one/v1/chat/completions", json={"messages": MESSAGES, "stream": True}
        )
        assert streamed.status_code == 200
        frames = [f.removeprefix("data: ") for f in streamed.text.split("\n\n")[:-1]]
        assert frames[-1] == "[DONE]"
        text = "".join(json.loads(f)["choices"][0]["delta"].get("content", "") for f in frames[:-1])
        assert text == f"hi from {job_id}@3"


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"messages": MESSAGES, "stop": ["\n"]}, 400, "stop"),
        ({"messages": MESSAGES, "n": 2}, 400, "n must be 1"),
        ({"messages": MESSAGES, "max_tokens": 0}, 400, "maxTokens"),
        ({"messages": MESSAGES, "max_tokens": 2, "max_completion_tokens": 2}, 400, "one of"),
        ({"messages": []}, 400, "messages"),
        ({"messages": MESSAGES, "tools": [{"type": "function"}]}, 400, "tools"),
        ([1, 2], 400, "JSON object"),
    ],
)
async def test_hostile_completion_requests_are_typed_4xx(http, backend, body, status, needle):
    await _create(http, slug="open-bot")
    async with _openai(backend) as client:
        response = await client.post("/d/open-bot/v1/chat/completions", json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]  # OpenAI's error shape, so OpenAI clients show it
    assert needle in error["message"]
    assert error["type"] == "invalid_request_error"


async def test_passed_on_errors_name_the_param(http, backend) -> None:
    await _create(http, slug="param-bot")
    body = {"messages": MESSAGES, "temperature": "hot"}
    async with _openai(backend) as client:
        response = await client.post("/d/param-bot/v1/chat/completions", json=body)
    assert response.status_code == 400
    assert int(response.headers["content-length"]) == len(response.content)
    assert response.json()["error"] == {
        "message": "temperature must be a number, got 'hot'",
        "type": "invalid_request_error",
        "param": "temperature",
        "code": None,
    }


async def test_completion_url_edges(http, backend) -> None:
    dep = (await _create(http, slug="edge-bot")).json()["deployment"]
    async with _openai(backend) as client:
        assert (await client.post("/d/nobody/v1/chat/completions", json={})).status_code == 404
        assert (await client.get("/d/edge-bot/v1/chat/completions")).status_code == 405
        assert (await client.post("/d/edge-bot/v1/models", json={})).status_code == 404
        big = b'{"messages":"' + b"x" * (5 * 1024 * 1024) + b'"}'
        too_big = await client.post("/d/edge-bot/v1/chat/completions", content=big)
        assert too_big.status_code == 413
        await http.patch(f"/v1/endpoints/{dep['id']}", params=SCOPE, json={"enabled": False})
        off = await client.post("/d/edge-bot/v1/chat/completions", json={"messages": MESSAGES})
        assert off.status_code == 403


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"slug": "a"}, "slug"),
        ({"slug": "-bad-"}, "slug"),
        ({"slug": "Upper"}, "slug"),
        ({"slug": "x" * 51}, "slug"),
        ({"slug": "www"}, "slug"),
        ({"slug": 7}, "slug"),
        ({"target": {"kind": "adapter"}}, "target"),
        ({"target": {"kind": "base_model", "baseModel": "gpt-9"}}, "target.baseModel"),
        (
            {"target": {"kind": "adapter", "adapter": {"kind": "checkpoint", "jobId": "j"}}},
            "target.adapter",
        ),
        (
            {
                "target": {
                    "kind": "adapter",
                    "adapter": {"kind": "checkpoint", "jobId": "j", "step": -1},
                }
            },
            "target.adapter.step",
        ),
        ({"authMode": "password"}, "authMode"),
        ({"runRetentionMode": "days"}, "runRetentionDays"),
        ({"runRetentionMode": "days", "runRetentionDays": 0}, "runRetentionDays"),
        ({"runRetentionMode": "unlimited", "runRetentionDays": 3}, "runRetentionDays"),
        ({"runRetentionMode": "forever"}, "runRetentionMode"),
        ({"extra": 1}, "extra"),
    ],
)
async def test_create_validation_names_the_field(http, body, field) -> None:
    response = await _create(http, **body)
    assert response.status_code == 400, response.text
    assert response.json()["field"] == field


async def test_conflicts_scopes_and_immutable_slug(http) -> None:
    first = (await _create(http)).json()["deployment"]
    taken = await _create(http)
    assert taken.status_code == 409
    assert "taken" in taken.json()["error"]
    unknown_job = {"kind": "adapter", "adapter": {"kind": "final", "jobId": "job_nope"}}
    assert (await _create(http, slug="other", target=unknown_job)).status_code == 404
    slug_change = await http.patch(
        f"/v1/endpoints/{first['id']}", params=SCOPE, json={"slug": "renamed"}
    )
    assert slug_change.status_code == 400
    assert slug_change.json()["field"] == "slug"
    # Another project does not see it.
    made = await http.post(
        "/v1/projects", params={"orgSlug": "local"}, json={"slug": "other-proj", "name": "o"}
    )
    assert made.status_code == 201
    other = {"orgSlug": "local", "projectSlug": "other-proj"}
    assert (await http.get(f"/v1/endpoints/{first['id']}", params=other)).status_code == 404
    assert (await http.get("/v1/endpoints", params=other)).json() == {"deployments": []}
    label = await http.post(
        f"/v1/endpoints/{first['id']}/keys", params=SCOPE, json={"label": " " * 5}
    )
    assert label.status_code == 400
    assert label.json()["field"] == "label"
    long_label = await http.post(
        f"/v1/endpoints/{first['id']}/keys", params=SCOPE, json={"label": "x" * 81}
    )
    assert long_label.status_code == 400
