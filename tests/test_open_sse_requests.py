"""``open_sse`` as httpx-sse and LaunchDarkly eventsource users use it, on real sockets.

POST with a body (sent again on every reconnect), the resume id as a query parameter for servers
that take ``?since=``, per-connection params, ``SSEFrame.json()``, connection-state callbacks, and
an HTML error page summarised in the ``ApiError`` message instead of quoted raw.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import trio

from arkor_trio import ApiError, ConfigError
from arkor_trio.sse import SSEFrame
from arkor_trio.stream import ConnectionState, ReconnectPolicy, open_sse
from tests.sse_feed_server import Feed, Reply, open_feed_server

FAST = ReconnectPolicy(initial_delay=0.01, max_delay=0.05, idle_timeout=5.0)
BOUND = 10.0


async def follow(url: str, **kwargs: Any) -> list[str | None]:
    kwargs.setdefault("policy", FAST)
    with trio.fail_after(BOUND):
        async with open_sse(url, **kwargs) as stream:
            return [frame.id async for frame in stream]


async def test_post_with_a_json_body_is_sent_on_every_connection():
    async with open_feed_server(total=6) as server:
        server.script.append(Feed(limit=2))  # a cut after two events: the POST is sent again
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        ids = await follow(server.feed_url, method="post", json=body)
    assert ids == ["1", "2", "3", "4", "5", "6"]
    requests = server.feed_requests()
    assert [r.method for r in requests] == ["POST", "POST", "POST"]
    assert all(json.loads(r.body) == body for r in requests)
    assert all(r.headers["content-type"] == "application/json" for r in requests)
    assert server.last_event_ids() == [None, "2", "6"]


async def test_post_with_raw_content_keeps_the_callers_content_type():
    async with open_feed_server(total=2) as server:
        headers = {"Content-Type": "text/plain"}
        ids = await follow(server.feed_url, method="POST", content="prompt", headers=headers)
    assert ids == ["1", "2"]
    first = server.feed_requests()[0]
    assert (first.body, first.headers["content-type"]) == (b"prompt", "text/plain")


async def test_content_and_json_together_are_refused():
    with pytest.raises(ConfigError, match="either content= or json="):
        await follow("http://127.0.0.1:9/feed", content=b"x", json={})


async def test_a_303_after_a_post_continues_as_a_get_without_the_body():
    async with open_feed_server(total=2) as server:
        server.routes["/submit"] = Reply(303, {"Location": "/feed"})
        ids = await follow(f"{server.url}/submit", method="POST", json={"q": 1})
    assert ids == ["1", "2"]
    submit, feed = server.requests[0], server.feed_requests()[0]
    assert (submit.method, json.loads(submit.body)) == ("POST", {"q": 1})
    assert (feed.method, feed.body) == ("GET", b"")
    assert "content-type" not in feed.headers


@pytest.mark.parametrize(("status", "method"), [(307, "POST"), (308, "POST"), (303, "GET")])
async def test_a_cross_origin_redirect_of_a_post_sends_no_credential(status, method):
    """A 307/308 to another origin carries the method and body on, a 303 turns into a GET;
    either way nothing that may authenticate is sent there (the hop is built bare)."""
    credentials = {"Authorization": "Bearer secret", "X-Api-Key": "k1", "X-Trace": "keep"}
    async with open_feed_server(total=2) as origin, open_feed_server(total=2) as other:
        origin.routes["/submit"] = Reply(status, {"Location": f"{other.url}/feed"})
        async with httpx.AsyncClient(cookies={"session": "c1"}) as http:
            ids = await follow(
                f"{origin.url}/submit", method="POST", json={"q": 1}, headers=credentials, http=http
            )
    assert ids == ["1", "2"]
    submit = origin.requests[0]
    assert (submit.method, submit.headers["authorization"]) == ("POST", "Bearer secret")
    assert other.requests
    for request in other.requests:
        assert not set(request.headers) & {"authorization", "cookie", "x-api-key"}
        assert request.headers["x-trace"] == "keep"
        assert request.method == method
        if method == "POST":
            assert json.loads(request.body) == {"q": 1}
            assert request.headers["content-type"] == "application/json"
        else:
            assert (request.body, "content-type" in request.headers) == (b"", False)


async def test_resume_param_sends_the_resume_id_as_a_query_parameter():
    async with open_feed_server(total=5) as server:
        server.script.extend([Feed(limit=2), Feed(limit=2)])
        ids = await follow(server.feed_url, resume_param="since", params={"topic": "jobs"})
    assert ids == ["1", "2", "3", "4", "5"]
    queries = [r.query for r in server.feed_requests()]
    assert queries == [
        {"topic": "jobs"},  # no resume id yet: no since=
        {"topic": "jobs", "since": "2"},
        {"topic": "jobs", "since": "4"},
        {"topic": "jobs", "since": "5"},
    ]


async def test_params_may_be_a_callable_reading_the_stream_per_connection():
    async with open_feed_server(total=4) as server:
        server.script.append(Feed(limit=3))
        box: dict[str, Any] = {}

        def params() -> dict[str, str]:
            stream = box.get("stream")
            return {"from": stream.resume_id or "start"} if stream else {"from": "start"}

        with trio.fail_after(BOUND):
            async with open_sse(server.feed_url, params=params, policy=FAST) as stream:
                box["stream"] = stream
                ids = [frame.id async for frame in stream]
    assert ids == ["1", "2", "3", "4"]
    assert [r.query["from"] for r in server.feed_requests()] == ["start", "3", "4"]


def test_frame_json_parses_the_data():
    assert SSEFrame("message", '{"a": [1, 2]}', "1").json() == {"a": [1, 2]}
    with pytest.raises(ValueError):
        SSEFrame("message", "not json").json()


async def test_on_state_reports_connecting_open_reconnecting_and_closed():
    states: list[ConnectionState] = []
    async with open_feed_server(total=3) as server:
        server.script.extend([Reply(503, {"Retry-After": "0"}), Feed(limit=1)])
        ids = await follow(server.feed_url, on_state=states.append)
    assert ids == ["1", "2", "3"]
    names = [s.name for s in states]
    assert names == [
        "connecting", "reconnecting",  # 503
        "connecting", "open", "reconnecting",  # cut after one event (progress)
        "connecting", "open", "reconnecting",  # the rest, then the body ends
        "connecting", "closed",  # 204: over
    ]  # fmt: skip
    failed = states[1]
    assert isinstance(failed.error, ApiError)
    assert failed.error.status == 503
    assert failed.delay is not None
    assert failed.attempt == 1
    assert states[4].attempt == 0  # after progress
    assert states[4].delay == 0
    assert states[-1].error is None


async def test_on_state_closed_carries_the_permanent_error():
    states: list[ConnectionState] = []
    async with open_feed_server(total=3) as server:
        server.script.append(Reply(401, body=b'{"error": "bad token"}'))
        with pytest.raises(ApiError, match="bad token"):
            await follow(server.feed_url, on_state=states.append)
    assert [s.name for s in states] == ["connecting", "closed"]
    assert isinstance(states[-1].error, ApiError)


NGINX_404 = (
    b"""<html>
<head><title>404 Not Found</title></head>
<body>
<center><h1>404 Not Found</h1></center>
<hr><center>nginx/1.25.3</center>
</body>
</html>
"""
    + b"<!-- padding -->\n" * 30
)


async def test_an_html_error_page_is_summarised_not_quoted():
    async with open_feed_server(total=3) as server:
        page = Reply(404, {"Content-Type": "text/html"}, NGINX_404)
        server.script.append(page)
        with pytest.raises(ApiError) as caught:
            await follow(server.feed_url)
    message = caught.value.message
    assert message == (f"404 Not Found (an HTML page of {len(NGINX_404)} bytes) from GET /feed")
    assert "<" not in message
    assert caught.value.body == NGINX_404.decode()  # the whole page stays on .body


def test_an_html_page_without_a_title_is_cut_to_its_text():
    from arkor_trio._errors import body_message

    page = "<!DOCTYPE html><html><body><p>" + "Sorry, " * 100 + "</p></body></html>"
    summary = body_message(page)
    assert summary.startswith("Sorry, Sorry,")
    assert summary.endswith(f"… (an HTML page of {len(page)} bytes)")
    assert len(summary) < 200
    assert body_message("  plain\n text  ") == "plain text"
    assert body_message("x" * 600).endswith("…")
    assert len(body_message("x" * 600)) == 500
