"""No single connection ends the backend, whatever it sends (issue 18, item 1).

The packet of hypercorn issue #225 (an upgrade request with bytes after it in the same write)
used to raise ``h11.LocalProtocolError`` out of the server; here it and a seeded, bounded family
of pipelined upgrade requests are sent, and the backend must keep answering.
"""

from __future__ import annotations

import random
import struct
from typing import TYPE_CHECKING

import trio

from tests.server.conftest import SCOPE

if TYPE_CHECKING:
    from arkor_trio.server import LocalBackend

#: The red team's packet: an unauthenticated upgrade request, junk in the same write.
KILLER = (
    b"GET /x HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\nJUNK"
)
_PATHS = ["/", "/x", "/login", "/v1/me", "/v1/events/ws?orgSlug=local&projectSlug=default"]


def _junk(rng: random.Random) -> bytes:
    kind = rng.randrange(6)
    if kind == 0:
        return rng.randbytes(rng.randrange(1, 64))
    if kind == 1:
        return b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    if kind == 2:  # a masked WebSocket text frame, maybe compressed (RSV1) or truncated
        payload = rng.randbytes(rng.randrange(0, 40))
        first = 0x81 | (0x40 if rng.random() < 0.5 else 0)
        frame = bytes([first, 0x80 | len(payload)]) + struct.pack("!I", 0) + payload
        return frame[: rng.randrange(1, len(frame) + 1)]
    if kind == 3:
        return b"\r\n" * rng.randrange(1, 4)
    if kind == 4:
        return b"POST /login HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"
    return b"\x88\x80\x00\x00\x00\x00"  # a masked close frame


def upgrade_packets(seed: int, count: int) -> list[bytes]:
    """``count`` pipelined upgrade requests with junk, deterministic for ``seed``."""
    rng = random.Random(seed)
    packets = []
    for _ in range(count):
        parts = []
        for _ in range(rng.randrange(1, 4)):
            headers = [b"Host: 127.0.0.1", b"Upgrade: websocket", b"Connection: Upgrade"]
            if rng.random() < 0.7:
                headers += [b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
                            b"Sec-WebSocket-Version: 13"]  # fmt: skip
            if rng.random() < 0.3:
                headers.append(b"Sec-WebSocket-Extensions: permessage-deflate")
            if rng.random() < 0.2:
                headers.append(b"Content-Length: %d" % rng.randrange(0, 8))
            rng.shuffle(headers)
            path = rng.choice(_PATHS).encode()
            parts.append(b"GET " + path + b" HTTP/1.1\r\n" + b"\r\n".join(headers) + b"\r\n\r\n")
            parts.append(_junk(rng))
        packets.append(b"".join(parts))
    return packets


async def _send_raw(backend: LocalBackend, packet: bytes) -> None:
    host, port = backend.base_url.removeprefix("http://").rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(packet)
        with trio.move_on_after(2):  # read until the server closes (or gives up on us)
            while await stream.receive_some(65536):
                pass


async def _still_serving(backend: LocalBackend) -> None:
    async with backend.client() as client:
        with trio.fail_after(10):
            me = await client.me()
    assert me["defaultProject"] == {"orgSlug": "local", "projectSlug": SCOPE["projectSlug"]}


async def test_the_upgrade_packet_with_junk_does_not_end_the_backend(
    backend: LocalBackend,
) -> None:
    for _ in range(3):
        await _send_raw(backend, KILLER)
        await _still_serving(backend)


async def test_a_fuzzed_family_of_pipelined_upgrade_requests_does_not_end_the_backend(
    backend: LocalBackend,
) -> None:
    packets = upgrade_packets(seed=18, count=60)
    async with trio.open_nursery() as nursery:
        for packet in packets:
            nursery.start_soon(_send_raw, backend, packet)
    await _still_serving(backend)
