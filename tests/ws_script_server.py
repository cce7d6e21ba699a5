"""A scriptable WebSocket server for the job feed's client tests (real sockets on 127.0.0.1).

Each accepted connection runs the next script: ``async def script(request, index)`` that
accepts (or rejects) the handshake and talks the feed protocol itself. ``ScriptClient`` is the
``FeedClient`` a :class:`~arkor_trio.JobFeed` needs to reach it.
"""

from __future__ import annotations

import json
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import trio
from trio_websocket import serve_websocket

from arkor_trio import ApiError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from trio_websocket import WebSocketConnection, WebSocketRequest

    from arkor_trio import TrainingJob

    Script = Callable[[WebSocketRequest, int], Awaitable[None]]

SCOPE = "?orgSlug=local&projectSlug=default"


class ScriptClient:
    """A ``FeedClient`` for a scripted server (``get_job`` answers 503: a transient error)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.targets: list[str] = []

    async def websocket_target(self, path: str) -> tuple[str, list[tuple[bytes, bytes]]]:
        target = f"{self.url}{path}{SCOPE}"
        self.targets.append(target)
        return target, []

    async def get_job(self, job_id: str) -> TrainingJob:
        await trio.lowlevel.checkpoint()
        raise ApiError(503, "the scripted server has no HTTP routes")


@asynccontextmanager
async def open_ws_script(script: Script) -> AsyncIterator[ScriptClient]:
    """Serve ``script`` for every connection (its index counts from 0); yield the client."""
    count = 0

    async def handler(request: WebSocketRequest) -> None:
        nonlocal count
        index, count = count, count + 1
        await script(request, index)

    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, None)
        yield ScriptClient(f"ws://127.0.0.1:{server.port}")
        nursery.cancel_scope.cancel()


async def receive(ws: WebSocketConnection) -> list[dict[str, Any]]:
    """The client messages of one text message (a message or a batch)."""
    decoded = json.loads(await ws.get_message())
    return decoded if isinstance(decoded, list) else [decoded]


def event(job: str, event_id: int, **data: Any) -> dict[str, Any]:
    """An ``event`` message; ``data`` defaults to a training.log of step ``event_id``."""
    payload = data or {"type": "training.log", "step": event_id, "loss": 1.0}
    return {
        "type": "event",
        "job": job,
        "id": str(event_id),
        "event": payload["type"],
        "data": payload,
    }


def completed(job: str, event_id: int) -> dict[str, Any]:
    return event(job, event_id, type="training.completed", artifacts=[])


async def send(ws: WebSocketConnection, *messages: dict[str, Any]) -> None:
    """Send ``messages`` as one text message (a batch when there are several)."""
    body: Any = messages[0] if len(messages) == 1 else list(messages)
    await ws.send_message(json.dumps(body))
