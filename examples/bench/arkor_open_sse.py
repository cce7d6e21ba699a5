"""arkor-trio's ``open_sse`` speaking the bench protocol.

``arkor-trio bench -- python examples/bench/arkor_open_sse.py {url}``.

The default ``ReconnectPolicy``, except a short idle timeout (the bench's ``stall`` profile holds a
connection open and silent; the default 45 s would outlast the deadline).
"""

from __future__ import annotations

import json
import sys

import trio

from arkor_trio.stream import ReconnectPolicy, open_sse


async def main(url: str) -> None:
    policy = ReconnectPolicy(idle_timeout=0.5)
    async with open_sse(url, policy=policy, is_final=lambda f: f.data == '{"final": true}') as s:
        async for frame in s:
            print(
                json.dumps({"id": frame.id, "event": frame.event, "data": frame.data}), flush=True
            )


if __name__ == "__main__":
    trio.run(main, sys.argv[1])
