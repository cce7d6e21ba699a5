"""Peer (b): the Arkor TypeScript SDK's reconnect policy, re-implemented from its documentation.

Source: arkor-wire-protocol.md section 3 (the SDK's ``wait()`` loop). Per connection: remember
every non-empty id; ``ping`` is ignored; ``end`` stops; data that is not JSON is skipped; JSON
data is progress (attempt counter back to 0). Then:

* clean end of body after at least one JSON frame: wait exactly ``base`` (1 s), no jitter;
* any failure (connect error, any non-2xx but 401/403/410/426, body read error, an end of body
  without a JSON frame): wait ``clamp(e + e * U, 0, cap)`` with ``e = min(base * 2**attempt,
  cap)`` and ``U`` uniform in [-0.25, 0.25), then ``attempt += 1``;
* 401/403/410/426: give up at once.

There is no idle timeout: Node's ``fetch`` (undici) only gives up on a silent body after its
``bodyTimeout`` (300 s by default), which ``timeout`` mirrors. Frames are parsed with httpx-sse.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Mapping

import httpx
import trio
from httpx_sse import EventSource

TERMINAL = frozenset({"training.completed", "training.failed"})
PERMANENT = frozenset({401, 403, 410, 426})
OnEvent = Callable[[str | None, str, str], None]


def backoff(attempt: int, rng: random.Random, base: float = 1.0, cap: float = 60.0) -> float:
    """The SDK's delay before retry number ``attempt`` (0-based) after a failure."""
    exp = min(base * 2**attempt, cap)
    return min(max(exp + exp * rng.uniform(-0.25, 0.25), 0.0), cap)


async def follow(
    url: str,
    *,
    params: Mapping[str, str],
    headers: Mapping[str, str],
    on_event: OnEvent,
    base: float = 1.0,
    cap: float = 60.0,
    rng: random.Random | None = None,
    timeout: httpx.Timeout | None = None,
) -> str:
    """Follow the stream at ``url`` like the SDK's ``wait()``; returns how it ended."""
    rng = rng if rng is not None else random.Random()
    timeout = timeout if timeout is not None else httpx.Timeout(300.0, connect=10.0)
    last_id: str | None = None
    attempt = 0
    async with httpx.AsyncClient(timeout=timeout) as http:
        while True:
            request_headers = dict(headers)
            if last_id:
                request_headers["Last-Event-ID"] = last_id
            productive = False
            failed = True
            try:
                async with http.stream(
                    "GET", url, params=params, headers=request_headers
                ) as response:
                    status = response.status_code
                    if status in PERMANENT:
                        return f"gave up: HTTP {status}"
                    if 200 <= status < 300:
                        async for sse in EventSource(response).aiter_sse():
                            if sse.id:
                                last_id = sse.id
                            if sse.event == "ping":
                                continue
                            if sse.event == "end":
                                return "end frame"
                            try:
                                payload = json.loads(sse.data)
                            except ValueError:
                                continue
                            attempt = 0
                            productive = True
                            on_event(sse.id, sse.event, sse.data)
                            if isinstance(payload, dict) and payload.get("type") in TERMINAL:
                                return "terminal event"
                        failed = not productive  # a clean end of body
                    else:
                        await response.aread()
            except httpx.HTTPError:
                failed = True  # connect or body read error
            if not failed:
                await trio.sleep(base)
                continue
            await trio.sleep(backoff(attempt, rng, base, cap))
            attempt += 1
