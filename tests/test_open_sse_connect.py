"""``open_sse``: how one connection is opened, on real sockets: TLS certificates and redirects.

The TLS tests run the feed behind a real TLS server on 127.0.0.1 with a certificate from a
throw-away CA made in the test (``trustme``): a client that does not trust it gets a
``StreamError`` naming the problem after one connection (a certificate does not fix itself
between retries); an httpx client that trusts the CA follows the feed.
"""

from __future__ import annotations

import ssl
from typing import Any

import httpx
import pytest
import trio
import trustme

from arkor_trio import ApiError, ArkorClient, StreamError
from arkor_trio.stream import ReconnectPolicy, open_sse
from arkor_trio.stream._connect import MAX_REDIRECTS
from tests.sse_feed_server import Reply, open_feed_server

FAST = ReconnectPolicy(initial_delay=0.01, max_delay=0.05, idle_timeout=5.0)
BOUND = 10.0


async def follow(url: str, **kwargs: Any) -> list[str | None]:
    """The ids of every frame of ``open_sse(url, **kwargs)`` until iteration ends."""
    kwargs.setdefault("policy", FAST)
    with trio.fail_after(BOUND):
        async with open_sse(url, **kwargs) as stream:
            return [frame.id async for frame in stream]


# --- TLS -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def server_context(ca: trustme.CA, *hosts: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*hosts).configure_cert(context)
    return context


def trusting_client(ca: trustme.CA) -> httpx.AsyncClient:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return httpx.AsyncClient(verify=context)


async def test_an_untrusted_certificate_is_a_stream_error_without_retry(ca):
    async with open_feed_server(total=3, ssl_context=server_context(ca, "127.0.0.1")) as server:
        with pytest.raises(StreamError) as caught:
            await follow(server.feed_url)  # unlimited retries: a retry would hang to BOUND
        message = str(caught.value)
        assert "TLS certificate verification failed for 127.0.0.1" in message
        assert "unable to get local issuer certificate" in message
        assert "not retried" in message
        assert isinstance(caught.value.__cause__, httpx.ConnectError)
        assert server.accepted == 1
        assert server.requests == []


async def test_a_plain_request_names_the_certificate_problem_too(ca):
    # Not only the stream: every ArkorClient request (here GET /v1/me) says what TLS refused.
    async with open_feed_server(total=3, ssl_context=server_context(ca, "127.0.0.1")) as server:
        base = server.feed_url.rsplit("/", 1)[0]
        client = ArkorClient(base, "token", org_slug="o", project_slug="p")
        async with client:
            with pytest.raises(ApiError) as caught:
                await client.me()
    assert caught.value.status == 0
    assert "TLS certificate verification failed: unable to get local issuer" in str(caught.value)


async def test_a_certificate_for_another_host_is_named(ca):
    async with (
        open_feed_server(total=3, ssl_context=server_context(ca, "example.test")) as server,
        trusting_client(ca) as http,
    ):
        with pytest.raises(StreamError, match="IP address mismatch"):
            await follow(server.feed_url, http=http)
        assert server.accepted == 1


async def test_a_client_that_trusts_the_certificate_follows_the_feed(ca):
    async with (
        open_feed_server(total=5, ssl_context=server_context(ca, "127.0.0.1")) as server,
        trusting_client(ca) as http,
    ):
        server.script.append(Reply(503))  # a failure over TLS is retried like any other
        assert await follow(server.feed_url, http=http) == ["1", "2", "3", "4", "5"]
        assert server.last_event_ids() == [None, None, "5"]
        assert not http.is_closed  # a client passed in is left open


# --- redirects -----------------------------------------------------------------------------


@pytest.mark.parametrize("status", [301, 302, 307])
async def test_a_redirect_with_a_relative_location_is_followed(status):
    async with open_feed_server(total=4) as server:
        server.routes["/old/feed"] = Reply(status, {"Location": "../moved"})
        server.routes["/moved"] = Reply(status, {"Location": "/feed"})
        ids = await follow(f"{server.url}/old/feed", headers={"Authorization": "Bearer t"})
        assert ids == ["1", "2", "3", "4"]
        paths = [r.path for r in server.requests]
        # Every connection starts at the URL given, and follows the chain again.
        assert paths == ["/old/feed", "/moved", "/feed"] * 2
        # Same origin: the credentials and the resume point go along.
        assert {r.headers.get("authorization") for r in server.requests} == {"Bearer t"}
        assert server.last_event_ids() == [None, "4"]


async def test_a_headers_callable_is_called_once_per_connection_not_per_hop():
    calls = []

    def headers() -> dict[str, str]:
        calls.append(True)
        return {"Authorization": f"Bearer {len(calls)}"}

    async with open_feed_server(total=2) as server:
        server.routes["/old"] = Reply(308, {"Location": "/feed"})
        assert await follow(f"{server.url}/old", headers=headers) == ["1", "2"]
        seen = [(r.path, r.headers["authorization"]) for r in server.requests]
        assert seen == [
            ("/old", "Bearer 1"),
            ("/feed", "Bearer 1"),
            ("/old", "Bearer 2"),
            ("/feed", "Bearer 2"),
        ]
        assert len(calls) == 2


async def test_a_redirect_loop_is_an_error_with_the_chain():
    async with open_feed_server() as server:
        server.routes["/a"] = Reply(302, {"Location": "/b"})
        server.routes["/b"] = Reply(302, {"Location": f"{server.url}/a"})
        with pytest.raises(StreamError) as caught:
            await follow(f"{server.url}/a")
        chain = f"{server.url}/a -> {server.url}/b -> {server.url}/a"
        assert str(caught.value) == f"redirect loop: {chain}"
        assert [r.path for r in server.requests] == ["/a", "/b"]  # not retried


async def test_too_many_redirects_is_an_error():
    async with open_feed_server() as server:
        hops = MAX_REDIRECTS + 1
        for n in range(hops):
            server.routes[f"/r{n}"] = Reply(307, {"Location": f"/r{n + 1}"})
        server.routes[f"/r{hops}"] = Reply(307, {"Location": "/feed"})
        with pytest.raises(StreamError, match=f"more than {MAX_REDIRECTS} redirects"):
            await follow(f"{server.url}/r0")
        assert len(server.requests) == MAX_REDIRECTS + 1
        assert server.feed_requests() == []


async def test_a_redirect_without_location_or_to_another_scheme_is_an_error():
    async with open_feed_server() as server:
        server.routes["/ftp"] = Reply(302, {"Location": "ftp://127.0.0.1/feed"})
        with pytest.raises(StreamError, match="not an http\\(s\\) URL"):
            await follow(f"{server.url}/ftp")


async def test_credentials_are_dropped_on_a_cross_origin_redirect():
    async with open_feed_server(total=2) as origin, open_feed_server(total=2) as other:
        origin.routes["/away"] = Reply(307, {"Location": f"{other.url}/feed"})
        headers = {"Authorization": "Bearer secret", "Cookie": "s=1", "X-Trace": "keep"}
        assert await follow(f"{origin.url}/away", headers=headers) == ["1", "2"]
        assert origin.requests[0].headers["authorization"] == "Bearer secret"
        for request in other.requests:
            assert "authorization" not in request.headers
            assert "cookie" not in request.headers
            assert request.headers["x-trace"] == "keep"
        assert other.last_event_ids() == [None, "2"]


async def test_credentials_stay_dropped_when_a_redirect_comes_back_to_the_origin():
    """As httpx and the Fetch standard do: once a chain left the origin, the other origin
    chooses where it goes next, so the credentials are not sent again in that chain."""
    async with open_feed_server(total=2) as origin, open_feed_server(total=2) as other:
        origin.routes["/away"] = Reply(307, {"Location": f"{other.url}/back"})
        other.routes["/back"] = Reply(307, {"Location": f"{origin.url}/feed"})
        headers = {"Authorization": "Bearer secret", "X-Trace": "keep"}
        assert await follow(f"{origin.url}/away", headers=headers) == ["1", "2"]
        seen = [(r.path, r.headers.get("authorization")) for r in origin.requests]
        assert seen == [("/away", "Bearer secret"), ("/feed", None)] * 2
        assert all(r.headers["x-trace"] == "keep" for r in origin.requests + other.requests)
