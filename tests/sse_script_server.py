"""A small scriptable HTTP/1.1 server for the client's integration tests (real sockets).

It speaks just enough of the Arkor API for a trainer: ``POST /v1/jobs``, ``GET /v1/jobs/:id``,
``POST /v1/jobs/:id/cancel`` and the events stream, whose every connection plays the next
``Conn`` script: a status, then body pieces (bytes to send, ``Pause`` to wait, ``Gate`` to wait
for the test) and an ending (close, reset, or hang). Every request is recorded.
"""

from __future__ import annotations

import json
import socket
from collections import deque
from typing import Any

import attrs
import trio

JOB_ID = "job-1"


@attrs.frozen
class Pause:
    seconds: float


@attrs.define
class Gate:
    """The server waits here until the test sets the event."""

    event: trio.Event = attrs.field(factory=trio.Event)


@attrs.define
class Conn:
    status: int = 200
    headers: dict[str, str] = attrs.field(factory=dict)
    body: list[bytes | Pause | Gate] = attrs.field(factory=list)
    end: str = "close"  # close | reset | hang
    chunked: bool = False
    json_body: Any = None


@attrs.frozen
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


def frame(
    event_id: int | str | None, data: dict[str, Any] | str, event: str | None = None
) -> bytes:
    lines = []
    if event_id is not None:
        lines.append(f"id: {event_id}")
    if event is None and isinstance(data, dict):
        event = str(data.get("type"))
    if event is not None:
        lines.append(f"event: {event}")
    text = data if isinstance(data, str) else json.dumps(data)
    lines.append(f"data: {text}")
    return ("\n".join(lines) + "\n\n").encode()


def log_event(step: int, loss: float = 1.0) -> dict[str, Any]:
    return {"type": "training.log", "jobId": JOB_ID, "step": step, "loss": loss}


STARTED = {"type": "training.started", "jobId": JOB_ID, "timestamp": "2026-01-01T00:00:00Z"}
COMPLETED = {"type": "training.completed", "jobId": JOB_ID, "artifacts": [{"pathname": "a.bin"}]}


def job_json(status: str = "queued", **extra: Any) -> dict[str, Any]:
    return {
        "id": JOB_ID,
        "name": "test-job",
        "status": status,
        "orgId": "o",
        "projectId": "p",
        "config": {"model": "m"},
        "createdAt": "2026-01-01T00:00:00Z",
        **extra,
    }


class ScriptServer:
    """Serve scripted responses; ``port`` is set once started with ``nursery.start(server.run)``."""

    def __init__(self, conns: list[Conn] | None = None, *, job_status: str = "running") -> None:
        self.conns: deque[Conn] = deque(conns or [])
        self.job: dict[str, Any] = job_json(job_status)
        self.cancel_status = 200
        self.requests: list[Seen] = []
        self.port = 0
        self.stream_opened = trio.Event()
        self.jobs_created = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stream_requests(self) -> list[Seen]:
        return [r for r in self.requests if r.path.endswith("/events/stream")]

    def last_event_ids(self) -> list[str | None]:
        return [r.headers.get("last-event-id") for r in self.stream_requests()]

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            task_status.started()
            await trio.serve_listeners(self._handle, listeners, handler_nursery=nursery)

    async def _handle(self, stream: trio.SocketStream) -> None:
        try:
            async with stream:
                while await self._one(stream):
                    pass
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    async def _read_request(self, stream: trio.SocketStream) -> Seen | None:
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = await stream.receive_some(65536)
            if not chunk:
                return None
            buf += chunk
        head, _, rest = buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        length = int(headers.get("content-length", "0"))
        while len(rest) < length:
            rest += await stream.receive_some(65536)
        path = target.split("?", 1)[0]
        return Seen(method, path, headers, rest[:length], trio.current_time())

    async def _send_json(self, stream: trio.SocketStream, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        await stream.send_all(
            f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n".encode()
            + data
        )

    async def _one(self, stream: trio.SocketStream) -> bool:
        req = await self._read_request(stream)
        if req is None:
            return False
        self.requests.append(req)
        if req.method == "POST" and req.path == "/v1/jobs":
            self.jobs_created += 1
            await self._send_json(stream, 201, {"job": self.job})
            return True
        if req.path.endswith("/cancel"):
            body = {"ok": True} if self.cancel_status == 200 else {"error": "already done"}
            await self._send_json(stream, self.cancel_status, body)
            return True
        if req.path.endswith("/events/stream"):
            self.stream_opened.set()
            await self._stream(stream, self.conns.popleft() if self.conns else Conn(end="hang"))
            return False
        if req.method == "GET" and req.path.startswith("/v1/jobs/"):
            await self._send_json(stream, 200, {"job": self.job})
            return True
        await self._send_json(stream, 404, {"error": "no route"})
        return True

    async def _stream(self, stream: trio.SocketStream, conn: Conn) -> None:
        if conn.status != 200:
            body = json.dumps(conn.json_body or {"error": f"scripted {conn.status}"}).encode()
            extra = "".join(f"{k}: {v}\r\n" for k, v in conn.headers.items())
            await stream.send_all(
                f"HTTP/1.1 {conn.status} X\r\nContent-Type: application/json\r\n{extra}"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            return
        headers = {"Content-Type": "text/event-stream", "Connection": "close", **conn.headers}
        if conn.chunked:
            headers["Transfer-Encoding"] = "chunked"
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        await stream.send_all(f"HTTP/1.1 200 OK\r\n{head}\r\n".encode())
        for piece in conn.body:
            if isinstance(piece, Pause):
                await trio.sleep(piece.seconds)
            elif isinstance(piece, Gate):
                await piece.event.wait()
            elif conn.chunked:
                await stream.send_all(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            else:
                await stream.send_all(piece)
        if conn.end == "hang":
            await trio.sleep_forever()
        if conn.end == "reset":
            stream.socket.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )
        elif conn.chunked and conn.end == "finish":
            await stream.send_all(b"0\r\n\r\n")
