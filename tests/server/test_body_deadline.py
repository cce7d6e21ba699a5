"""The body deadline and the cap on requests waiting for a body (issue 18, item 2).

The middleware is driven with raw ASGI messages and trio's MockClock (no real waiting); the
process-level test (a real server out of descriptors) is in test_hardening_process.py.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio
import trio.testing

from arkor_trio.server._body_deadline import BODY_DEADLINE, BodyDeadline


def _scope(length: bytes | None = b"4000") -> dict[str, Any]:
    headers = [(b"host", b"127.0.0.1")]
    if length is not None:
        headers.append((b"content-length", length))
    return {"type": "http", "method": "POST", "path": "/login", "headers": headers}


async def _reads_body(scope: Any, receive: Any, send: Any) -> None:
    while (await receive()).get("more_body", False):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def _run(app: BodyDeadline, scope: dict[str, Any], receive: Any) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


@pytest.fixture
def clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


async def test_a_body_never_sent_is_answered_408_at_the_deadline(clock) -> None:
    app = BodyDeadline(_reads_body)
    start = trio.current_time()
    sent = await _run(app, _scope(), trio.sleep_forever)
    assert trio.current_time() - start == pytest.approx(BODY_DEADLINE)
    assert sent[0]["status"] == 408
    assert (b"connection", b"close") in sent[0]["headers"]
    assert "did not arrive within 10 s" in json.loads(sent[1]["body"])["error"]
    assert app.waiting == 0


async def test_a_body_that_trickles_past_the_deadline_is_408(clock) -> None:
    async def trickle() -> dict[str, Any]:
        await trio.sleep(1)
        return {"type": "http.request", "body": b"x", "more_body": True}

    sent = await _run(BodyDeadline(_reads_body), _scope(), trickle)
    assert sent[0]["status"] == 408


async def test_a_body_in_time_and_a_request_without_one_pass(clock) -> None:
    async def whole() -> dict[str, Any]:
        await trio.sleep(BODY_DEADLINE - 1)
        return {"type": "http.request", "body": b"token=x", "more_body": False}

    app = BodyDeadline(_reads_body)
    assert (await _run(app, _scope(), whole))[0]["status"] == 200
    assert (await _run(app, _scope(None), whole))[0]["status"] == 200
    assert app.waiting == 0


async def test_one_request_over_the_cap_is_503_at_once_without_reading(clock) -> None:
    app = BodyDeadline(_reads_body, max_waiting=3)
    answers: list[int] = []

    async def one() -> None:
        sent = await _run(app, _scope(), trio.sleep_forever)
        answers.append(sent[0]["status"])

    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(one)
        await trio.testing.wait_all_tasks_blocked()
        assert app.waiting == 3

        async def unread() -> dict[str, Any]:
            raise AssertionError("read over the cap")

        start = trio.current_time()
        sent = await _run(app, _scope(), unread)
        assert (sent[0]["status"], trio.current_time()) == (503, start)
    assert answers == [408, 408, 408]
    assert app.waiting == 0
