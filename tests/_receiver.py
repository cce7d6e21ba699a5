"""A tiny recording HTTP receiver on 127.0.0.1 for the notifier tests (trio + h11).

Modes decide what happens once a whole request has been read and recorded:
``ok`` answers 200, ``error`` answers 500, ``hang`` holds the socket open forever without
answering, ``close`` closes the connection without answering. Because a request is recorded
before the answer (or the silence), a callback that has returned has been recorded.
"""

from __future__ import annotations

import functools
import json
from typing import Any, Literal

import attrs
import h11
import trio

Mode = Literal["ok", "error", "hang", "close"]


@attrs.frozen
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


class Receiver:
    def __init__(self, mode: Mode = "ok") -> None:
        self.mode = mode
        self.requests: list[Recorded] = []
        self.connections = 0
        self.port = 0

    def url(self, path: str = "/services/T000/B000/s3cr3t-t0ken") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def start(self, nursery: trio.Nursery) -> Receiver:
        serve = functools.partial(trio.serve_tcp, self._handle, 0, host="127.0.0.1")
        listeners = await nursery.start(serve)
        self.port = listeners[0].socket.getsockname()[1]
        return self

    async def _handle(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        async with stream:
            conn = h11.Connection(h11.SERVER)
            try:
                while (request := await self._read(conn, stream)) is not None:
                    self.requests.append(request)
                    if self.mode == "hang":
                        await trio.sleep_forever()
                    if self.mode == "close":
                        return
                    await self._answer(conn, stream, 500 if self.mode == "error" else 200)
                    conn.start_next_cycle()
            except (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError):
                return

    @staticmethod
    async def _read(conn: h11.Connection, stream: trio.SocketStream) -> Recorded | None:
        head: h11.Request | None = None
        body = b""
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(65536))
            elif isinstance(event, h11.Request):
                head = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                assert head is not None
                headers = {k.decode().lower(): v.decode() for k, v in head.headers}
                return Recorded(head.method.decode(), head.target.decode(), headers, body)
            else:  # ConnectionClosed
                return None

    @staticmethod
    async def _answer(conn: h11.Connection, stream: trio.SocketStream, status: int) -> None:
        payload = b"ok" if status == 200 else b"internal error"
        headers = [("content-type", "text/plain"), ("content-length", str(len(payload)))]
        for event in (
            h11.Response(status_code=status, headers=headers),
            h11.Data(data=payload),
            h11.EndOfMessage(),
        ):
            data = conn.send(event)
            if data:
                await stream.send_all(data)
