"""open_ws against a hostile peer: a refusal whose body never ends is cut, not buffered."""

from __future__ import annotations

from functools import partial

import pytest
import trio
from trio_websocket import HandshakeError

from arkor_trio.wire._ws_connect import MAX_HANDSHAKE_BYTES, open_ws

CHUNK = b"x" * 65536


async def test_a_refusal_with_an_endless_body_is_cut_at_the_handshake_bound():
    sent = 0
    done = trio.Event()

    async def refuse_forever(stream: trio.SocketStream) -> None:
        nonlocal sent
        await stream.receive_some(65536)  # the handshake request
        await stream.send_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 1000000000\r\n\r\n")
        try:
            while sent < 8 * MAX_HANDSHAKE_BYTES:
                await stream.send_all(CHUNK)
                sent += len(CHUNK)
        except trio.BrokenResourceError:
            pass
        done.set()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            partial(trio.serve_tcp, refuse_forever, 0, host="127.0.0.1")
        )
        port = listeners[0].socket.getsockname()[1]
        with trio.fail_after(20), pytest.raises(HandshakeError, match="exceeded"):
            async with open_ws(
                f"ws://127.0.0.1:{port}/v1/events/ws", [], connect_timeout=15, max_message_size=1024
            ):
                pass
        with trio.fail_after(20):
            await done.wait()  # the client closed the socket: the server could not send it all
        assert sent < 8 * MAX_HANDSHAKE_BYTES
        nursery.cancel_scope.cancel()
