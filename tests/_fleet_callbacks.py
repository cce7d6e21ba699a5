"""Callbacks for the replica processes of the fleet tests (``tests._fleet_callbacks:callbacks``).

Every callback appends one JSON line to ``$FLEET_RECORD`` on entry (one ``write`` of an
``O_APPEND`` file: lines of concurrent processes never interleave): the event's type and its
``ctx.delivery`` (job, event id, lease token, holder) and this process's pid. With
``$FLEET_SLOW`` set, ``on_checkpoint`` then sleeps that many seconds, so a test can stop the
process inside a callback.
"""

from __future__ import annotations

import json
import os
from typing import Any

import trio

from arkor_trio import Callbacks


def _recorder(kind: str) -> Any:
    async def record(ctx: Any) -> None:
        d = ctx.delivery
        line = {"type": kind, "job": d.job_id, "event": d.event_id, "token": d.token,
                "holder": d.holder, "pid": os.getpid()}  # fmt: skip
        fd = os.open(os.environ["FLEET_RECORD"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, (json.dumps(line) + "\n").encode())
        finally:
            os.close(fd)
        slow = os.environ.get("FLEET_SLOW")
        if slow and kind == "checkpoint":
            await trio.sleep(float(slow))

    return record


callbacks = Callbacks(
    on_started=_recorder("started"),
    on_log=_recorder("log"),
    on_checkpoint=_recorder("checkpoint"),
    on_completed=_recorder("completed"),
    on_failed=_recorder("failed"),
    on_cancelled=_recorder("cancelled"),
)
