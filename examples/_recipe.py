"""What every recipe shares: where it trains (local backend or cloud) and on which dataset.

Each recipe is a module with ``async def main(client)``. Run as a script, it goes through
:func:`run`: with ``ARKOR_CLOUD_API_URL`` set, the client comes from the environment (the cloud,
or an ``arkor-trio serve`` you started); otherwise an in-process local backend is started for the
duration of the script. Tests import the recipe and call ``main`` with a client of their own.
"""

from __future__ import annotations

import ipaddress
import os
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import urlsplit

import trio

from arkor_trio import ArkorClient, BlobDataset, DatasetSource, HuggingfaceDataset

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

__all__ = ["MODEL", "demo_dataset", "is_local", "run"]

T = TypeVar("T")

#: The cloud's model name; the local backend trains its stand-in for it.
MODEL = "unsloth/gemma-4-E4B-it"


def is_local(client: ArkorClient) -> bool:
    """True when the client talks to a backend on this machine (the local backend)."""
    host = urlsplit(client.base_url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def demo_dataset(client: ArkorClient) -> DatasetSource:
    """The support-triage demo data: bundled file locally, the hub copy on the cloud."""
    if is_local(client):
        return BlobDataset.demo()
    return HuggingfaceDataset("arkorlab/triage-demo")


def run(main: Callable[[ArkorClient], Awaitable[T]]) -> T:
    """Run ``main(client)`` in a new trio run, against the environment's backend or a local one."""

    async def runner() -> T:
        if os.environ.get("ARKOR_CLOUD_API_URL"):
            async with ArkorClient() as client:
                return await main(client)
        from arkor_trio.server import open_local_backend

        async with open_local_backend() as backend, backend.client() as client:
            print(f"(started a local backend at {backend.base_url})")
            return await main(client)

    return trio.run(runner)
