"""Peer (a): httpx-sse with the simplest hand-written reconnect loop that resends Last-Event-ID.

What a user writes in ten lines: open the stream, iterate ``aiter_sse()``, remember the last id,
and on any ``httpx.HTTPError`` or end of body reconnect at once. It has no backoff (it hammers a
server that answers 503), ignores ``Retry-After``, and detects a dead connection only through
httpx's read timeout (5 s by default; none when ``timeout=None``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import httpx
from httpx_sse import aconnect_sse

TERMINAL = frozenset({"training.completed", "training.failed", "training.cancelled"})
OnEvent = Callable[[str | None, str, str], None]


async def follow(
    url: str,
    *,
    params: Mapping[str, str],
    headers: Mapping[str, str],
    on_event: OnEvent,
    timeout: httpx.Timeout | float | None = 5.0,
) -> str:
    """Follow the stream at ``url`` to its terminal event; ``on_event(id, name, data)`` each."""
    last_id: str | None = None
    async with httpx.AsyncClient(timeout=timeout) as http:
        while True:
            request_headers = dict(headers)
            if last_id:
                request_headers["Last-Event-ID"] = last_id
            try:
                async with aconnect_sse(
                    http, "GET", url, params=params, headers=request_headers
                ) as source:
                    async for sse in source.aiter_sse():
                        if sse.id:
                            last_id = sse.id
                        if sse.event == "ping":
                            continue
                        if sse.event == "end":
                            return "end frame"
                        on_event(sse.id, sse.event, sse.data)
                        if sse.event in TERMINAL:
                            return "terminal event"
            except httpx.HTTPError:
                pass  # the simplest loop: reconnect at once
