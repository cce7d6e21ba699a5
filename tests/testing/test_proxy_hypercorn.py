"""The chaos proxy in front of a real ASGI server (Starlette on hypercorn's trio worker)."""

from __future__ import annotations

from functools import partial

import httpx
import pytest
import trio

from arkor_trio.testing import CutAfterEvents, CutKind, Plan, open_chaos_proxy

from ._proxy_upstream import frames

hypercorn_config = pytest.importorskip("hypercorn.config")
hypercorn_trio = pytest.importorskip("hypercorn.trio")
applications = pytest.importorskip("starlette.applications")
responses = pytest.importorskip("starlette.responses")
routing = pytest.importorskip("starlette.routing")


class Frames:
    """An async iterator that is not a generator: Starlette drops it unexhausted on a cut."""

    def __init__(self, first: int) -> None:
        self.pending = frames(first, 50)

    def __aiter__(self):
        return self

    async def __anext__(self) -> bytes:
        await trio.lowlevel.checkpoint()
        if not self.pending:
            raise StopAsyncIteration
        return self.pending.pop(0)


async def events(request):
    first = int(request.headers.get("last-event-id", "0")) + 1
    return responses.StreamingResponse(Frames(first), media_type="text/event-stream")


async def echo(request):
    return responses.JSONResponse({"got": await request.json()})


APP = applications.Starlette(
    routes=[routing.Route("/events", events), routing.Route("/echo", echo, methods=["POST"])]
)


async def test_cuts_and_requests_through_hypercorn():
    config = hypercorn_config.Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = config.errorlog = None
    plan = Plan.of(CutAfterEvents(3, mode="mid_frame"), CutAfterEvents(5, mode="after_id"))
    async with trio.open_nursery() as nursery:
        serve = partial(hypercorn_trio.serve, APP, config, shutdown_trigger=trio.sleep_forever)
        binds = await nursery.start(serve)
        upstream = binds[0].removeprefix("http://")
        async with open_chaos_proxy(upstream, plan=plan) as proxy, httpx.AsyncClient() as client:
            bodies = []
            for _ in range(3):
                got = b""
                try:
                    async with client.stream("GET", proxy.url + "/events") as response:
                        async for chunk in response.aiter_raw():
                            got += chunk
                except httpx.RemoteProtocolError:
                    pass
                bodies.append(got)
            echoed = await client.post(proxy.url + "/echo", json={"a": [1, 2]})
            await proxy.wait_closed(4)
        nursery.cancel_scope.cancel()
    head = b"".join(frames(1, 3))
    assert bodies[0].startswith(head)
    assert 0 < len(bodies[0]) - len(head) < len(frames(4, 4)[0])
    assert bodies[1] == b"".join(frames(1, 5)) + b"id: 6\n"
    assert bodies[2] == b"".join(frames(1, 50))
    assert echoed.json() == {"got": {"a": [1, 2]}}
    kinds = [r.cut_kind for r in proxy.records]
    assert kinds == [CutKind.MID_FRAME, CutKind.AFTER_ID, None, None]
    assert [r.ended_by for r in proxy.records[2:]] == ["complete", "complete"]
