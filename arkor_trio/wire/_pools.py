"""Connection pools for event streams: many long-lived streams without a pool limit to meet.

An ``httpx.AsyncClient`` caps its pool at 100 connections by default, so the 101st stream of
one client waits for a free connection (forever: streams do not end), and httpcore's pool scans
every connection it holds for each new request, so one pool holding 1,000 open streams makes each
(re)connection cost O(streams). Event streams therefore get their own clients, apart from the
one for plain requests: ``SHARDS`` clients without a connection limit, assigned round-robin, so
each pool holds a fraction of the streams. They share one TLS context (building one per client
would cost milliseconds and memory each). A user who passes ``ArkorClient(http=...)`` keeps full
control: streams then use that client.
"""

from __future__ import annotations

import ssl
from itertools import count

import certifi
import httpx
import trio

__all__ = ["SHARDS", "StreamPools"]

#: How many stream clients one ArkorClient spreads its streams over.
SHARDS = 16
_TIMEOUT = httpx.Timeout(60.0, connect=10.0)
_LIMITS = httpx.Limits(max_connections=None, max_keepalive_connections=8)


class StreamPools:
    """Lazily created, round-robin httpx clients for event streams."""

    def __init__(self, shards: int = SHARDS) -> None:
        self._shards = shards
        self._clients: list[httpx.AsyncClient] = []
        self._turn = count()
        self._tls: ssl.SSLContext | None = None

    def pick(self) -> httpx.AsyncClient:
        """The client for the next stream (created on first use)."""
        turn = next(self._turn) % self._shards
        if turn < len(self._clients):
            return self._clients[turn]
        if self._tls is None:
            self._tls = ssl.create_default_context(cafile=certifi.where())
        client = httpx.AsyncClient(timeout=_TIMEOUT, limits=_LIMITS, verify=self._tls)
        self._clients.append(client)
        return client

    async def aclose(self) -> None:
        """Close every client; later streams create new ones."""
        clients, self._clients = self._clients, []
        self._turn = count()
        for client in clients:
            await client.aclose()
        await trio.lowlevel.checkpoint()
