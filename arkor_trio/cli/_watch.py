"""``arkor-trio jobs watch``: every running job of the project, live, over one job feed.

Lists the project's queued and running jobs, subscribes each on one feed socket and prints
every event as ``<job name> <event line>``; every ``--poll`` seconds it lists the jobs again and
adds new ones. With ``--once`` it exits (0) when every job it followed has ended; otherwise it
runs until Ctrl-C.
"""

from __future__ import annotations

import json
import sys
from functools import partial
from typing import TYPE_CHECKING, Any, TextIO

import trio

from .._errors import ArkorError
from ._jobs import describe_event, event_json

if TYPE_CHECKING:
    import argparse

    from ..wire._client import ArkorClient
    from ..wire._feed import JobFeed

__all__ = ["add_watch_command", "jobs_watch"]


def add_watch_command(jobs_commands: Any) -> None:
    """Register ``jobs watch`` on the ``jobs`` sub-command parser."""
    watch = jobs_commands.add_parser(
        "watch", help="every running job of the project, live, over one WebSocket"
    )
    watch.add_argument("--once", action="store_true", help="exit when the followed jobs end")
    watch.add_argument(
        "--poll", type=float, default=5.0, help="seconds between looks for new jobs (5)"
    )
    watch.add_argument("--json", action="store_true", help="one JSON object per line")
    watch.set_defaults(handler=_cmd_watch)


def _cmd_watch(args: argparse.Namespace) -> int:
    if not args.poll > 0:
        raise ArkorError(f"--poll must be a positive number of seconds, got {args.poll}")

    async def main() -> int:
        from ..wire._client import ArkorClient

        async with ArkorClient() as client:
            return await jobs_watch(
                client, sys.stdout, once=args.once, poll=args.poll, as_json=args.json
            )

    try:
        return trio.run(main)
    except KeyboardInterrupt:
        return 130


async def jobs_watch(
    client: ArkorClient,
    out: TextIO,
    *,
    once: bool = False,
    poll: float = 5.0,
    as_json: bool = False,
) -> int:
    """Follow every queued or running job; see the module docstring. Returns the exit code."""
    followed: set[str] = set()
    active = 0
    all_done = trio.Event()

    async def follow(feed: JobFeed, job_id: str, name: str) -> None:
        nonlocal active
        try:
            async with feed.subscribe(job_id) as events:
                async for event in events:
                    if as_json:
                        line = json.dumps({"job": job_id, "name": name, **event_json(event)})
                    else:
                        line = f"{name}  {describe_event(event)}"
                    out.write(line + "\n")
                    out.flush()
        except ArkorError as exc:
            out.write(f"{name}  ! {exc}\n")
            out.flush()
        finally:
            active -= 1
            if active == 0 and once:
                all_done.set()

    async with client.feed() as feed, trio.open_nursery() as nursery:
        while True:
            for job in await client.list_jobs():
                if job.id not in followed and not job.is_terminal:
                    followed.add(job.id)
                    active += 1
                    nursery.start_soon(partial(follow, feed, job.id, job.name))
            if once and active == 0:
                all_done.set()
            with trio.move_on_after(poll):
                await all_done.wait()
            if all_done.is_set():
                nursery.cancel_scope.cancel()
                break
    return 0
