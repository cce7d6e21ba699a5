"""Request bodies arrive in time or the request is answered: the body deadline and its cap.

hypercorn has no read timeout once a request's headers are complete, so a client that sends
``Content-Length: 4000`` and then nothing holds a connection (a file descriptor) for as long as
it likes; a thousand of them exhaust the process. :class:`BodyDeadline` sits in front of every
route:

- a request that announces a body (``Content-Length`` > 0 or ``Transfer-Encoding``) must
  deliver all of it within ``deadline`` seconds of its headers, or the route's next read ends
  it: ``408`` (when nothing was answered yet) and the connection is closed;
- at most ``max_waiting`` such requests wait for their body at once; one more is answered
  ``503`` at once, without reading, and its connection closed (the routes that read bodies are
  JSON and form posts of at most a few MiB: a local client sends them in milliseconds).

A route that answers without reading the body (a 401, say) does not wait: hypercorn closes a
connection whose request body was not read.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["BODY_DEADLINE", "MAX_WAITING_BODIES", "BodyDeadline"]

log = logging.getLogger("arkor_trio.server")

#: Seconds a request has, after its headers, to deliver its whole body.
BODY_DEADLINE = 10.0
#: Requests waiting for their body at once; one more is a 503.
MAX_WAITING_BODIES = 64


class _TooSlow(BaseException):
    """The body deadline passed (a BaseException: no route turns it into a 500)."""


def _announces_body(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"transfer-encoding":
            return True
        if name == b"content-length":
            return value.strip() not in (b"0", b"")
    return False


async def _answer(send: Send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class BodyDeadline:
    """ASGI middleware enforcing the body deadline and the cap (see the module docstring).

    Args:
        app: The application.
        deadline: Seconds from the headers to the body's end.
        max_waiting: Requests that may wait for their body at once.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        deadline: float = BODY_DEADLINE,
        max_waiting: int = MAX_WAITING_BODIES,
    ) -> None:
        self.app = app
        self.deadline = deadline
        self.max_waiting = max_waiting
        self.waiting = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass requests without a body through; bound the others."""
        if scope["type"] != "http" or not _announces_body(scope):
            await self.app(scope, receive, send)
            return
        if self.waiting >= self.max_waiting:
            await _answer(send, 503, f"more than {self.max_waiting} requests are waiting for "
                          "their body; retry shortly")  # fmt: skip
            return
        self.waiting += 1
        pending = True
        started = False
        due = trio.current_time() + self.deadline

        async def timed_receive() -> Message:
            nonlocal pending
            if not pending:
                return await receive()
            with trio.move_on_at(due):
                message = await receive()
                if message["type"] != "http.request" or not message.get("more_body", False):
                    pending = False
                    self.waiting -= 1
                return message
            raise _TooSlow

        async def watched_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, timed_receive, watched_send)
        except* _TooSlow:
            if not started:
                await _answer(send, 408, f"the request body did not arrive within "
                              f"{self.deadline:g} s")  # fmt: skip
        finally:
            if pending:
                self.waiting -= 1
