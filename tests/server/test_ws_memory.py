"""The feed's 64 KiB message limit bounds memory (issue 18, item 4).

A raw socket client announces a 500 MiB frame and sends its first MiBs, or offers
permessage-deflate and sends a frame that would inflate to 128 MiB. The server's Python
allocations (tracemalloc, in this process) must not grow with what the client sends: the limit
is checked before anything is kept, the connection ends after the 1009, and nothing is inflated
(permessage-deflate is never negotiated).
"""

from __future__ import annotations

import base64
import os
import struct
import tracemalloc
import zlib
from typing import TYPE_CHECKING

import trio

from arkor_trio._version import USER_AGENT

if TYPE_CHECKING:
    from arkor_trio.server import LocalBackend

MIB = 1024 * 1024
#: What the server may keep for one message, with room for the rest of its work (the limit
#: itself is 64 KiB; a read is 64 KiB).
BOUND = 8 * MIB


async def _upgrade(backend: LocalBackend, *, deflate: bool) -> tuple[trio.SocketStream, bytes]:
    host, port = backend.base_url.removeprefix("http://").rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    key = base64.b64encode(os.urandom(16))
    request = (
        b"GET /v1/events/ws?orgSlug=local&projectSlug=default HTTP/1.1\r\n"
        b"Host: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + key + b"\r\n"
        b"Authorization: Bearer " + backend.token.encode() + b"\r\n"
        b"X-Arkor-Client: " + USER_AGENT.encode() + b"\r\n"
    )
    if deflate:
        request += b"Sec-WebSocket-Extensions: permessage-deflate\r\n"
    await stream.send_all(request + b"\r\n")
    head = b""
    with trio.fail_after(10):
        while b"\r\n\r\n" not in head:
            head += await stream.receive_some(4096)
    assert head.startswith(b"HTTP/1.1 101"), head
    return stream, head.split(b"\r\n\r\n")[0].lower()


def _frame_head(length: int, *, compressed: bool = False) -> bytes:
    """A masked, final text frame's header (mask 0: the payload goes as is)."""
    first = 0x81 | (0x40 if compressed else 0)
    if length < 126:
        size = bytes([0x80 | length])
    elif length < 65536:
        size = bytes([0x80 | 126]) + struct.pack("!H", length)
    else:
        size = bytes([0x80 | 127]) + struct.pack("!Q", length)
    return bytes([first]) + size + b"\0\0\0\0"


async def _send_until_closed(stream: trio.SocketStream, chunks: list[bytes]) -> int:
    sent = 0
    try:
        for chunk in chunks:
            await stream.send_all(chunk)
            sent += len(chunk)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    with trio.move_on_after(10):  # until the server ends the connection
        try:
            while await stream.receive_some(65536):
                pass
        except trio.BrokenResourceError:
            pass
    return sent


async def _peak_growth(send: object) -> int:
    tracemalloc.start()
    try:
        await trio.testing.wait_all_tasks_blocked()
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        await send()  # type: ignore[operator]
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


async def test_a_500_mib_frame_is_refused_before_it_is_kept(backend: LocalBackend) -> None:
    stream, _ = await _upgrade(backend, deflate=False)
    block = b"a" * MIB
    chunks = [_frame_head(500 * MIB), *([block] * 24)]

    async def send() -> None:
        async with stream:
            await _send_until_closed(stream, chunks)

    growth = await _peak_growth(send)
    assert growth < BOUND, f"{growth / MIB:.1f} MiB"


async def test_permessage_deflate_is_refused_and_a_deflate_bomb_never_inflates(
    backend: LocalBackend,
) -> None:
    stream, head = await _upgrade(backend, deflate=True)
    assert b"sec-websocket-extensions" not in head
    deflate, zeros = zlib.compressobj(wbits=-15), bytes(MIB)
    bomb = b"".join(deflate.compress(zeros) for _ in range(128))
    bomb += deflate.flush(zlib.Z_SYNC_FLUSH)[:-4]  # 128 KiB inflating to 128 MiB
    chunks = [_frame_head(len(bomb), compressed=True), bomb]

    async def send() -> None:
        async with stream:
            await _send_until_closed(stream, chunks)

    growth = await _peak_growth(send)
    assert growth < BOUND, f"{growth / MIB:.1f} MiB"
