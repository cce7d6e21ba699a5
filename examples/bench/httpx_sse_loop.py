"""A plain httpx-sse loop speaking the bench protocol.

``arkor-trio bench -- python examples/bench/httpx_sse_loop.py {url}``.

What a user writes in ten lines: remember the last id, send it as ``Last-Event-ID``, and on any
``httpx.HTTPError`` reconnect at once (no backoff, no ``retry:``, no ``Retry-After``). httpx's read
timeout (5 s) is what notices a silent connection.
"""

from __future__ import annotations

import json
import sys

import httpx
from httpx_sse import connect_sse


def main(url: str) -> None:
    last_id = None
    with httpx.Client(timeout=5.0) as http:
        while True:
            headers = {"Last-Event-ID": last_id} if last_id else {}
            try:
                with connect_sse(http, "GET", url, headers=headers) as source:
                    for sse in source.iter_sse():
                        last_id = sse.id or last_id
                        print(json.dumps({"id": sse.id, "event": sse.event, "data": sse.data}),
                              flush=True)  # fmt: skip
                        if sse.data == '{"final": true}':
                            return
            except httpx.HTTPError:
                pass


if __name__ == "__main__":
    main(sys.argv[1])
