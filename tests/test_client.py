"""ArkorClient over httpx.MockTransport: routes, wire rules, error translation, scope, streaming."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import trio
import trio.testing

from arkor_trio._errors import ApiError, ConfigError, JobNotFound, UpgradeRequired
from arkor_trio._version import USER_AGENT, __version__
from arkor_trio.stream import ReconnectPolicy
from arkor_trio.wire._client import ArkorClient
from arkor_trio.wire._http_errors import error_from
from arkor_trio.wire._models import Adapter, HuggingfaceDataset, JobConfig, TrainingJob

TOKEN = "tok-7f3a-secret"
BASE = "http://arkor.test"
JOB = {
    "id": "job-1",
    "orgId": "o1",
    "projectId": "p1",
    "name": "bot",
    "status": "queued",
    "config": {"model": "m"},
    "createdAt": "2026-01-01T00:00:00Z",
}
COMPLETION = {
    "id": "c1",
    "choices": [{"index": 0, "finish_reason": "stop", "message": {"content": "hi"}}],
}


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    """No real credentials, state file or environment leaks into these tests."""
    (tmp_path / "home").mkdir()
    (tmp_path / "cwd").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path / "cwd")
    monkeypatch.delenv("ARKOR_TOKEN", raising=False)
    monkeypatch.delenv("ARKOR_CLOUD_API_URL", raising=False)


Handler = Callable[[httpx.Request], Any]


class Backend:
    """A scripted backend: answers by (method, path) and records every request."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.routes: dict[tuple[str, str], Handler] = {}

    def on(self, method: str, path: str, status: int = 200, body: Any = None, **kw: Any) -> None:
        def answer(_: httpx.Request) -> httpx.Response:
            if isinstance(body, str | bytes):
                return httpx.Response(status, content=body, **kw)
            return httpx.Response(status, json=body, **kw)

        self.routes[method, path] = answer

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        handler = self.routes.get((request.method, request.url.path))
        if handler is None:
            return httpx.Response(599, text=f"unscripted {request.method} {request.url.path}")
        result = handler(request)
        return await result if not isinstance(result, httpx.Response) else result

    @property
    def last(self) -> httpx.Request:
        return self.requests[-1]

    def http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self))


def make_client(backend: Backend, **kw: Any) -> ArkorClient:
    kw.setdefault("org_slug", "acme")
    kw.setdefault("project_slug", "bot")
    kw.setdefault("token", TOKEN)
    return ArkorClient(BASE, http=backend.http(), **kw)


def body_of(request: httpx.Request) -> Any:
    return json.loads(request.content) if request.content else None


def query(request: httpx.Request) -> dict[str, str]:
    return dict(request.url.params)


SCOPE = {"orgSlug": "acme", "projectSlug": "bot"}


# --- routes ------------------------------------------------------------------------------------


async def test_me_sends_token_and_client_header():
    backend = Backend()
    backend.on("GET", "/v1/me", body={"user": {"id": "u"}, "orgs": []})
    me = await make_client(backend).me()
    assert me == {"user": {"id": "u"}, "orgs": []}
    request = backend.last
    assert str(request.url) == f"{BASE}/v1/me"
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.headers["x-arkor-client"] == USER_AGENT
    assert USER_AGENT.startswith("arkor/0.0.3 arkor-trio/")


async def test_projects_routes_take_only_the_org():
    backend = Backend()
    backend.on("GET", "/v1/projects", body={"org": {}, "projects": [{"slug": "a"}, "junk"]})
    backend.on("POST", "/v1/projects", 201, body={"project": {"id": "p9", "slug": "new"}})
    client = make_client(backend)
    assert await client.list_projects() == [{"slug": "a"}]
    assert query(backend.last) == {"orgSlug": "acme"}
    assert await client.create_project("New one", "new", org_slug="other") == {
        "id": "p9",
        "slug": "new",
    }
    assert backend.last.method == "POST"
    assert query(backend.last) == {"orgSlug": "other"}
    assert body_of(backend.last) == {"name": "New one", "slug": "new"}
    assert backend.last.headers["content-type"] == "application/json"


async def test_create_job_sends_camel_case_config_without_nones():
    backend = Backend()
    backend.on("POST", "/v1/jobs", 201, body={"job": JOB})
    config = JobConfig(
        model="unsloth/gemma-4-E4B-it",
        dataset_source=HuggingfaceDataset("arkorlab/triage-demo", split="train"),
        lora_r=16,
        load_in_4bit=False,
        max_steps=100,
        learning_rate=2e-4,
    )
    job = await make_client(backend).create_job("support-bot", config)
    assert job == TrainingJob(
        id="job-1",
        name="bot",
        status="queued",
        org_id="o1",
        project_id="p1",
        config={"model": "m"},
        created_at="2026-01-01T00:00:00Z",
    )
    request = backend.last
    assert (request.method, request.url.path, query(request)) == ("POST", "/v1/jobs", SCOPE)
    assert body_of(request) == {
        "name": "support-bot",
        "config": {
            "model": "unsloth/gemma-4-E4B-it",
            "datasetSource": {
                "type": "huggingface",
                "name": "arkorlab/triage-demo",
                "split": "train",
            },
            "loraR": 16,
            "loadIn4bit": False,
            "maxSteps": 100,
            "learningRate": 2e-4,
        },
    }


async def test_list_and_get_jobs():
    backend = Backend()
    backend.on("GET", "/v1/jobs", body={"jobs": [JOB, {**JOB, "id": "job-2", "extra": 1}]})
    backend.on("GET", "/v1/jobs/job-1", body={"job": {**JOB, "status": "running"}, "events": []})
    client = make_client(backend)
    jobs = await client.list_jobs()
    assert [j.id for j in jobs] == ["job-1", "job-2"]
    assert query(backend.last) == SCOPE
    job = await client.get_job("job-1")
    assert (job.id, job.status, job.is_terminal) == ("job-1", "running", False)
    assert query(backend.last) == SCOPE


async def test_job_ids_are_percent_encoded():
    backend = Backend()
    backend.on("GET", "/v1/jobs/a/b c", body={"job": JOB})
    backend.on("POST", "/v1/jobs/a/b c/cancel", body={"ok": True})
    client = make_client(backend)
    await client.get_job("a/b c")
    assert backend.last.url.raw_path.split(b"?")[0] == b"/v1/jobs/a%2Fb%20c"
    assert await client.cancel_job("a/b c") is None
    request = backend.last
    assert request.url.raw_path.split(b"?")[0] == b"/v1/jobs/a%2Fb%20c/cancel"
    assert (request.method, request.content, query(request)) == ("POST", b"", SCOPE)
    assert client._job_path("x?y#z") == "/v1/jobs/x%3Fy%23z"


async def test_cancel_accepts_an_empty_2xx_body():
    backend = Backend()
    backend.on("POST", "/v1/jobs/j/cancel", 204, body=b"")
    assert await make_client(backend).cancel_job("j") is None


@pytest.mark.parametrize("job_id", ["", None, 7])
async def test_bad_job_id_is_a_config_error(job_id):
    backend = Backend()
    with pytest.raises(ConfigError) as info:
        await make_client(backend).get_job(job_id)
    assert info.value.field == "job_id"
    assert backend.requests == []


async def test_chat_non_streaming_body_and_parse():
    backend = Backend()
    backend.on("POST", "/v1/inference/chat", body=COMPLETION)
    completion = await make_client(backend).chat(
        [{"role": "user", "content": "hello"}],
        adapter=Adapter(kind="checkpoint", job_id="job-1", step=20),
        max_tokens=16,
        top_p=None,
    )
    assert (completion.text, completion.finish_reason, completion.raw) == ("hi", "stop", COMPLETION)
    request = backend.last
    assert (request.url.path, query(request)) == ("/v1/inference/chat", SCOPE)
    assert body_of(request) == {
        "messages": [{"role": "user", "content": "hello"}],
        "adapter": {"kind": "checkpoint", "jobId": "job-1", "step": 20},
        "maxTokens": 16,
        "stream": False,
    }


async def test_chat_with_base_model():
    backend = Backend()
    backend.on("POST", "/v1/inference/chat", body=COMPLETION)
    await make_client(backend).chat([{"role": "user", "content": "x"}], base_model="m1")
    assert body_of(backend.last)["baseModel"] == "m1"
    assert "adapter" not in body_of(backend.last)


# --- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "message", "decoded"),
    [
        (
            400,
            {"error": "unsupported model x"},
            "unsupported model x",
            {"error": "unsupported model x"},
        ),
        (409, {"error": ""}, '{"error": ""}', {"error": ""}),
        (500, {"error": {"message": "nested"}}, '{"error": {"message": "nested"}}', None),
        (502, "Bad gateway\n", "Bad gateway", "Bad gateway\n"),
        (503, "", "HTTP 503", None),
        (418, "   ", "HTTP 418", "   "),
    ],
)
async def test_error_translation(status, body, message, decoded):
    backend = Backend()
    backend.on("GET", "/v1/me", status, body=json.dumps(body) if isinstance(body, dict) else body)
    with pytest.raises(ApiError) as info:
        await make_client(backend).me()
    error = info.value
    assert type(error) is ApiError
    assert (error.status, error.message) == (status, message)
    if decoded is not None:
        assert error.body == decoded
    assert str(error) == f"{message} (HTTP {status})"
    assert error.__notes__ == [f"route: GET /v1/me on {BASE}"]


def test_long_text_bodies_are_cut_to_500_characters():
    error = error_from(500, "x" * 10_000, job_route=False)
    assert len(error.message) == 500
    assert error.message.endswith("…")


async def test_404_is_job_not_found_only_on_job_routes():
    backend = Backend()
    backend.on("GET", "/v1/jobs/gone", 404, body={"error": "not found"})
    backend.on("POST", "/v1/jobs/gone/cancel", 404, body={"error": "not found"})
    backend.on("GET", "/v1/me", 404, body={"error": "no route"})
    client = make_client(backend)
    with pytest.raises(JobNotFound, match="not found"):
        await client.get_job("gone")
    with pytest.raises(JobNotFound):
        await client.cancel_job("gone")
    with pytest.raises(ApiError) as info:
        await client.me()
    assert type(info.value) is ApiError


async def test_cancel_of_a_terminal_job_raises_409():
    backend = Backend()
    backend.on("POST", "/v1/jobs/j/cancel", 409, body={"error": "already cancelled"})
    with pytest.raises(ApiError) as info:
        await make_client(backend).cancel_job("j")
    assert (info.value.status, info.value.message) == (409, "already cancelled")


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            {
                "error": "sdk_version_unsupported",
                "currentVersion": "0.0.3",
                "supportedRange": ">=0.1.0",
                "upgrade": "npm i -g arkor@latest",
            },
            f"arkor-trio {__version__} speaks Arkor protocol 0.0.3, which the backend no longer "
            "accepts (supported: >=0.1.0). Upgrade with: pip install -U arkor-trio",
        ),
        (
            "<html>Upgrade Required</html>",
            f"arkor-trio {__version__} speaks Arkor protocol 0.0.3, which the backend no longer "
            "accepts. Upgrade with: pip install -U arkor-trio",
        ),
        (
            {"error": "sdk_version_unsupported", "supportedRange": "^1", "reason": "malformed"},
            f"arkor-trio {__version__} speaks Arkor protocol 0.0.3, which the backend no longer "
            f"accepts (supported: ^1); it found the X-Arkor-Client header malformed (sent: "
            f"'{USER_AGENT}'). Upgrade with: pip install -U arkor-trio",
        ),
    ],
)
async def test_426_becomes_an_actionable_upgrade_required(body, expected):
    backend = Backend()
    backend.on("GET", "/v1/jobs/j", 426, body=json.dumps(body) if isinstance(body, dict) else body)
    with pytest.raises(UpgradeRequired) as info:
        await make_client(backend).get_job("j")
    assert info.value.status == 426
    assert info.value.message == expected


async def test_transport_failure_is_api_error_status_0():
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    http = httpx.AsyncClient(transport=httpx.MockTransport(refuse))
    client = ArkorClient(BASE, TOKEN, org_slug="o", project_slug="p", http=http)
    with pytest.raises(ApiError) as info:
        await client.get_job("j")
    error = info.value
    assert error.status == 0
    assert isinstance(error.__cause__, httpx.ConnectError)
    assert error.message == (
        f"cannot reach {BASE} for GET /v1/jobs/j: ConnectError: connection refused"
    )


@pytest.mark.parametrize(
    ("path", "body", "detail"),
    [
        ("/v1/me", "<html>", "the body is not JSON"),
        ("/v1/me", "[1]", "expected a JSON object"),
        ("/v1/jobs/j", '{"jobs": []}', "expected a dict in 'job'"),
        ("/v1/jobs/j", '{"job": {"id": 1}}', "job"),
        ("/v1/jobs", '{"jobs": [{"name": "x"}]}', "job"),
        ("/v1/inference/chat", '{"choices": []}', "choices"),
    ],
)
async def test_malformed_2xx_answers(path, body, detail):
    backend = Backend()
    method = "POST" if "chat" in path else "GET"
    backend.on(method, path, 201, body=body)
    client = make_client(backend)
    call = {
        "/v1/me": client.me,
        "/v1/jobs/j": lambda: client.get_job("j"),
        "/v1/jobs": client.list_jobs,
        "/v1/inference/chat": lambda: client.chat([{"role": "user"}], base_model="m"),
    }[path]
    with pytest.raises(ApiError) as info:
        await call()
    assert info.value.status == 201
    assert info.value.message.startswith(f"malformed response from {method} {path}: ")
    assert detail in info.value.message


async def test_missing_token_fails_at_the_first_request_not_before():
    backend = Backend()
    client = ArkorClient(BASE, org_slug="o", project_slug="p", http=backend.http())
    assert "token=missing" in repr(client)
    with pytest.raises(ConfigError, match="no API token: set ARKOR_TOKEN") as info:
        await client.get_job("j")
    assert info.value.field == "token"
    assert backend.requests == []


async def test_token_never_leaks_into_reprs_messages_or_logs(caplog):
    backend = Backend()
    backend.on("GET", "/v1/me", 401, body={"error": f"invalid token {TOKEN}"})
    backend.on("GET", "/v1/jobs/j", 500, body=f"trace: Authorization: Bearer {TOKEN}")
    client = make_client(backend)
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(ApiError) as first:
            await client.me()
        with pytest.raises(ApiError) as second:
            await client.get_job("j")
    assert backend.last.headers["authorization"] == f"Bearer {TOKEN}"  # it was sent
    assert first.value.message == "invalid token <redacted>"
    for error in (first.value, second.value):
        assert TOKEN not in str(error)
        assert TOKEN not in repr(error)
        assert TOKEN not in repr(error.body)
    assert TOKEN not in repr(client)
    assert caplog.records  # httpx logged the requests
    assert TOKEN not in caplog.text


async def test_deprecation_is_logged_once_per_client(caplog):
    backend = Backend()
    headers = {
        "Deprecation": "true",
        "Warning": '299 - "Arkor protocol 0.0.3 goes away soon"',
        "Sunset": "Wed, 01 Jul 2026 00:00:00 GMT",
    }
    backend.on("GET", "/v1/me", body={"orgs": []}, headers=headers)
    backend.on("GET", "/v1/jobs/j", 404, body={"error": "x"}, headers=headers)
    client = make_client(backend)
    with caplog.at_level(logging.WARNING, logger="arkor_trio.client"):
        await client.me()
        with pytest.raises(JobNotFound):
            await client.get_job("j")
        await client.me()
    messages = [r.getMessage() for r in caplog.records if r.name == "arkor_trio.client"]
    assert len(messages) == 1
    assert "Arkor protocol 0.0.3 goes away soon" in messages[0]
    assert "cutoff: Wed, 01 Jul 2026 00:00:00 GMT" in messages[0]
    assert "pip install -U arkor-trio" in messages[0]


async def test_deprecation_needs_exactly_true(caplog):
    backend = Backend()
    backend.on("GET", "/v1/me", body={}, headers={"Deprecation": "@1700000000", "Warning": "x"})
    with caplog.at_level(logging.WARNING, logger="arkor_trio.client"):
        await make_client(backend).me()
    assert not [r for r in caplog.records if r.name == "arkor_trio.client"]


# --- scope via /v1/me -------------------------------------------------------------------------


async def test_scope_from_me_default_project_is_resolved_once():
    backend = Backend()
    backend.on(
        "GET",
        "/v1/me",
        body={"orgs": [{"slug": "x"}], "defaultProject": {"orgSlug": "o", "projectSlug": "p"}},
    )
    backend.on("GET", "/v1/jobs", body={"jobs": []})
    client = ArkorClient(BASE, TOKEN, http=backend.http())
    assert client.scope is None
    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(client.list_jobs)
    await client.list_jobs()
    paths = [r.url.path for r in backend.requests]
    assert paths.count("/v1/me") == 1
    assert paths.count("/v1/jobs") == 4
    assert client.scope == ("o", "p")
    assert query(backend.last) == {"orgSlug": "o", "projectSlug": "p"}


async def test_scope_from_first_org_and_its_only_project():
    backend = Backend()
    backend.on("GET", "/v1/me", body={"orgs": [{"slug": "personal"}]})
    backend.on("GET", "/v1/projects", body={"projects": [{"slug": "only"}]})
    backend.on("POST", "/v1/jobs/j/cancel", body={})
    client = ArkorClient(BASE, TOKEN, http=backend.http())
    await client.cancel_job("j")
    assert [(r.url.path, query(r)) for r in backend.requests] == [
        ("/v1/me", {}),
        ("/v1/projects", {"orgSlug": "personal"}),
        ("/v1/jobs/j/cancel", {"orgSlug": "personal", "projectSlug": "only"}),
    ]


async def test_undeterminable_project_is_a_config_error_and_not_cached():
    backend = Backend()
    backend.on("GET", "/v1/me", body={"orgs": [{"slug": "acme"}]})
    backend.on("GET", "/v1/projects", body={"projects": [{"slug": "a"}, {"slug": "b"}]})
    client = ArkorClient(BASE, TOKEN, http=backend.http())
    for _ in range(2):
        with pytest.raises(ConfigError, match="org 'acme' has projects a, b"):
            await client.list_jobs()
    assert [r.url.path for r in backend.requests].count("/v1/me") == 2
    assert client.scope is None


async def test_scope_from_state_file_needs_no_me(tmp_path):
    (tmp_path / "cwd" / ".arkor").mkdir()
    (tmp_path / "cwd" / ".arkor" / "state.json").write_text(
        json.dumps({"orgSlug": "s-org", "projectSlug": "s-proj"})
    )
    backend = Backend()
    backend.on("GET", "/v1/jobs", body={"jobs": []})
    client = ArkorClient(BASE, TOKEN, http=backend.http())
    await client.list_jobs()
    assert [r.url.path for r in backend.requests] == ["/v1/jobs"]
    assert query(backend.last) == {"orgSlug": "s-org", "projectSlug": "s-proj"}


async def test_list_projects_needs_only_the_org():
    backend = Backend()
    backend.on("GET", "/v1/projects", body={"projects": []})
    client = ArkorClient(BASE, TOKEN, org_slug="acme", http=backend.http())
    assert await client.list_projects() == []
    assert [(r.url.path, query(r)) for r in backend.requests] == [
        ("/v1/projects", {"orgSlug": "acme"})
    ]


# --- lifecycle ---------------------------------------------------------------------------------


async def test_http_client_is_lazy_and_closed_by_aclose():
    client = ArkorClient(BASE, TOKEN)
    assert client._owned_http is None
    first = client._http()
    assert client._http() is first
    assert not first.is_closed
    await client.aclose()
    assert first.is_closed
    second = client._http()  # usable again after aclose
    assert second is not first
    async with client:
        pass
    assert second.is_closed


async def test_a_callers_http_client_is_never_closed():
    backend = Backend()
    backend.on("GET", "/v1/me", body={})
    http = backend.http()
    async with ArkorClient(BASE, TOKEN, http=http) as client:
        assert client._http() is http
        await client.me()
    await client.aclose()
    assert not http.is_closed
    await http.aclose()


def test_repr_and_base_url():
    client = ArkorClient(f"{BASE}/api//", TOKEN, org_slug="o", project_slug="p")
    assert client.base_url == f"{BASE}/api"
    assert client._url("/v1/me") == f"{BASE}/api/v1/me"
    assert repr(client) == f"ArkorClient(base_url='{BASE}/api', scope=('o', 'p'), token=set)"
    assert TOKEN not in repr(client)


def test_headers_merge_extra():
    client = ArkorClient(BASE, TOKEN)
    assert client._headers(extra={"Last-Event-ID": "7"}) == {
        "Authorization": f"Bearer {TOKEN}",
        "X-Arkor-Client": USER_AGENT,
        "Last-Event-ID": "7",
    }


def test_events_hands_the_stream_a_url_headers_and_params():
    client = ArkorClient(BASE, TOKEN, org_slug="o", project_slug="p")
    source = client.stream_source("job/1")
    assert source.job_id == "job/1"
    assert source.url == f"{BASE}/v1/jobs/job%2F1/events/stream"
    assert source.headers() == {
        "Authorization": f"Bearer {TOKEN}",
        "X-Arkor-Client": USER_AGENT,
        "Accept": "text/event-stream",
        "Cache-Control": "no-cache",
    }
    policy = ReconnectPolicy(initial_delay=1.0)
    stream = client.events("job-1", after="5", policy=policy)
    assert (stream.job_id, stream.cursor, stream.policy) == ("job-1", "5", policy)
    assert stream.resume_id == "5"


async def test_stream_source_params_resolve_the_scope():
    client = ArkorClient(BASE, TOKEN, org_slug="o", project_slug="p")
    assert await client.stream_source("j").params() == {"orgSlug": "o", "projectSlug": "p"}


def test_stream_errors_are_the_clients_typed_errors_without_the_token():
    client = ArkorClient(BASE, TOKEN, org_slug="o", project_slug="p")
    make_error = client.stream_source("j").make_error
    missing = make_error(404, '{"error": "no such job"}', "GET /v1/jobs/j/events/stream")
    assert type(missing) is JobNotFound
    assert missing.message == "no such job"
    leaked = make_error(500, f"echo {TOKEN}", "GET /x")
    assert TOKEN not in str(leaked)
    assert "<redacted>" in leaked.message


# --- streaming chat ----------------------------------------------------------------------------


class ChannelStream(httpx.AsyncByteStream):
    """A response body fed chunk by chunk from a trio memory channel."""

    def __init__(self) -> None:
        self.send, self._receive = trio.open_memory_channel[bytes](100)
        self.closed = False

    def __aiter__(self) -> ChannelStream:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self._receive.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        self.closed = True


def streaming(backend: Backend, status: int = 200) -> ChannelStream:
    body = ChannelStream()

    def answer(_: httpx.Request) -> httpx.Response:
        return httpx.Response(status, headers={"content-type": "text/event-stream"}, stream=body)

    backend.routes["POST", "/v1/inference/chat"] = answer
    return body


def chunk(text: str | None = None, finish: str | None = None) -> bytes:
    delta = {} if text is None else {"content": text}
    payload = {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return f"data: {json.dumps(payload)}\n\n".encode()


MESSAGES = [{"role": "user", "content": "hi"}]


async def drain(client: ArkorClient, got: list[str] | None = None) -> list[str]:
    """Stream a chat on base model "m", collecting deltas into ``got`` as they arrive."""
    got = [] if got is None else got
    async with client.chat_stream(MESSAGES, base_model="m") as deltas:
        async for text in deltas:
            got.append(text)  # keep what arrived before an error
    return got


async def test_chat_stream_yields_deltas_as_they_arrive():
    backend = Backend()
    body = streaming(backend)
    client = make_client(backend)
    async with client.chat_stream(MESSAGES, base_model="m", temperature=0.5) as deltas:
        request = backend.last
        assert body_of(request)["stream"] is True
        assert body_of(request)["temperature"] == 0.5
        assert request.headers["accept"] == "text/event-stream"
        assert query(request) == SCOPE
        await body.send.send(b'data: {"choices":[{"delta":{"role":"assistant"}}]}\n\n')
        await body.send.send(chunk("Hel")[:20])  # a frame split across reads
        await body.send.send(chunk("Hel")[20:])
        assert await deltas.__anext__() == "Hel"
        await body.send.send(b"event: ping\ndata: {}\n\n: comment\n\n" + chunk("lo"))
        assert await deltas.__anext__() == "lo"
        await body.send.send(chunk(finish="stop") + b"data: [DONE]\n\n" + chunk("ignored"))
        assert [text async for text in deltas] == []
    assert body.closed


async def test_chat_stream_stops_on_end_frame():
    backend = Backend()
    body = streaming(backend)
    await body.send.send(chunk("a") + b"event: end\ndata: bye\n\n" + chunk("b"))
    async with make_client(backend).chat_stream(MESSAGES, base_model="m") as deltas:
        assert [text async for text in deltas] == ["a"]


async def test_chat_stream_eof_after_finish_reason_is_fine():
    backend = Backend()
    body = streaming(backend)
    await body.send.send(chunk("a") + chunk(finish="length"))
    body.send.close()
    async with make_client(backend).chat_stream(MESSAGES, base_model="m") as deltas:
        assert [text async for text in deltas] == ["a"]


async def test_chat_stream_eof_before_done_raises():
    backend = Backend()
    body = streaming(backend)
    await body.send.send(chunk("a") + b'data: {"choices": [')  # cut mid-frame
    body.send.close()
    got: list[str] = []
    with pytest.raises(ApiError, match=r"ended before \[DONE\]") as info:
        await drain(make_client(backend), got)
    assert got == ["a"]
    assert info.value.status == 200


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (b"data: not json\n\n", "malformed response from POST /v1/inference/chat"),
        (b"data: [1]\n\n", "not a JSON object"),
        (b'data: {"error": {"message": "model crashed"}}\n\n', "model crashed"),
    ],
)
async def test_chat_stream_bad_chunks_raise(frame, message):
    backend = Backend()
    body = streaming(backend)
    await body.send.send(frame)
    with pytest.raises(ApiError, match=message):
        await drain(make_client(backend))
    assert body.closed


async def test_chat_stream_error_status_reads_the_streamed_body():
    backend = Backend()
    body = streaming(backend, status=400)
    await body.send.send(b'{"error": "bad ')
    await body.send.send(b'adapter"}')
    body.send.close()
    with pytest.raises(ApiError) as info:
        async with make_client(backend).chat_stream(MESSAGES, base_model="m"):
            pytest.fail("the body must not run")  # pragma: no cover
    assert (info.value.status, info.value.message) == (400, "bad adapter")
    assert body.closed


async def test_chat_stream_error_body_is_read_only_up_to_a_bound():
    backend = Backend()
    body = streaming(backend, status=500)
    await body.send.send(b"x" * 70_000)  # and the body never ends
    with trio.fail_after(10), pytest.raises(ApiError) as info:  # a regression hangs: bound it
        await drain(make_client(backend))
    assert info.value.status == 500
    assert len(info.value.message) == 500
    assert body.closed


async def test_chat_stream_connection_lost_is_status_0():
    class Broken(httpx.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            yield chunk("a")
            raise httpx.ReadError("reset by peer")

    backend = Backend()
    backend.routes["POST", "/v1/inference/chat"] = lambda _: httpx.Response(200, stream=Broken())
    with pytest.raises(ApiError, match=r"connection to .* lost during POST") as info:
        await drain(make_client(backend))
    assert info.value.status == 0
    assert isinstance(info.value.__cause__, httpx.ReadError)


async def test_chat_stream_cancellation_closes_the_response():
    backend = Backend()
    body = streaming(backend)
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(drain, make_client(backend))
            await trio.testing.wait_all_tasks_blocked()
            assert not body.closed
            scope.cancel()
    assert scope.cancelled_caught
    assert body.closed
