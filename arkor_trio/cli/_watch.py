"""``arkor-trio jobs watch``: every running job of the project, live, over one job feed.

Lists the project's queued and running jobs, subscribes each on one feed socket and prints one
summary line per event: ``<job name>  step 120/300  loss 1.234  eta 0:42`` for a log, and a line
for a start, a checkpoint and the end (``--events``: every event with all its fields, as
``jobs events`` prints them; ``--json``: one JSON object per line). Every ``--poll`` seconds it
lists the jobs again and adds new ones.

It watches through backend restarts: when the backend cannot be reached it says
``reconnecting: ...`` once, keeps trying (the feed resubscribes every job from its cursor), and
says ``reconnected`` when it answers again, so a job that failed across the restart is shown.
With ``--once`` it exits (0) when every job it followed has ended, or at once, saying so, when
nothing runs; otherwise it runs until Ctrl-C.
"""

from __future__ import annotations

import json
import math
import sys
from functools import partial
from typing import TYPE_CHECKING, Any, TextIO

import trio

from .._errors import ApiError, ArkorError
from ..stream import ReconnectPolicy
from ..wire._models import (
    CheckpointSaved,
    TrainingCancelled,
    TrainingCompleted,
    TrainingFailed,
    TrainingLog,
    TrainingStarted,
    UnknownEvent,
)
from ._jobs import describe_event, event_json
from ._progress import format_elapsed
from ._text import CELL_LIMIT, VALUE_LIMIT, clip

if TYPE_CHECKING:
    import argparse

    from ..wire._client import ArkorClient
    from ..wire._feed import JobFeed
    from ..wire._models import JobEvent, TrainingJob

__all__ = ["JobLine", "add_watch_command", "jobs_watch"]

#: While the backend is unreachable, it is asked again after this long (at most ``--poll``).
RETRY_WHILE_DOWN = 1.0


def add_watch_command(jobs_commands: Any) -> None:
    """Register ``jobs watch`` on the ``jobs`` sub-command parser."""
    watch = jobs_commands.add_parser(
        "watch",
        help="every running job of the project, live, over one WebSocket",
        description="Every queued and running job of the project, live: one line per event "
        "(step, loss, eta for a log). Watches through backend restarts.",
    )
    watch.add_argument(
        "--once", action="store_true", help="exit when the followed jobs end (or none runs)"
    )
    watch.add_argument(
        "--poll", type=float, default=5.0, help="seconds between looks for new jobs (5)"
    )
    shown = watch.add_mutually_exclusive_group()
    shown.add_argument("--json", action="store_true", help="one JSON object per event and line")
    shown.add_argument(
        "--events", action="store_true", help="every event with all its fields, not a summary"
    )
    watch.set_defaults(handler=_cmd_watch)


def _cmd_watch(args: argparse.Namespace) -> int:
    if not args.poll > 0:
        raise ArkorError(f"--poll must be a positive number of seconds, got {args.poll}")

    async def main() -> int:
        from ..wire._client import ArkorClient

        async with ArkorClient() as client:
            return await jobs_watch(
                client,
                sys.stdout,
                once=args.once,
                poll=args.poll,
                as_json=args.json,
                events=args.events,
            )

    try:
        return trio.run(main)
    except KeyboardInterrupt:
        return 130


def _transient(exc: ApiError) -> bool:
    """An answer worth waiting out: unreachable (0), a timeout, rate limiting, a 5xx."""
    return exc.status in (0, 408, 429) or exc.status >= 500


class JobLine:
    """The summary line of one job's events (``step 120/300  loss 1.234  eta 0:42``)."""

    def __init__(self, job: TrainingJob) -> None:
        self.name = clip(job.name, CELL_LIMIT)
        max_steps = job.config.get("maxSteps")
        valid = isinstance(max_steps, int) and not isinstance(max_steps, bool) and max_steps > 0
        self.max_steps: int | None = max_steps if valid else None
        self._first: tuple[int, float] | None = None  # (step, time) of the first log seen

    def eta(self, step: int, now: float) -> float | None:
        """Seconds left at the rate seen since the first log, None when unknown."""
        if self._first is None:
            self._first = (step, now)
            return None
        first_step, first_time = self._first
        if self.max_steps is None or step <= first_step or now <= first_time:
            return None
        rate = (step - first_step) / (now - first_time)
        return max(0.0, (self.max_steps - step) / rate)

    def describe(self, event: JobEvent, now: float) -> str | None:
        """The line for ``event`` (None for an event type this client does not know)."""
        if isinstance(event, TrainingLog):
            total = f"/{self.max_steps}" if self.max_steps is not None else ""
            parts = [f"step {event.step}{total}"]
            if event.loss is not None and math.isfinite(event.loss):
                parts.append(f"loss {event.loss:.4f}")
            if event.eval_loss is not None and math.isfinite(event.eval_loss):
                parts.append(f"eval {event.eval_loss:.4f}")
            left = self.eta(event.step, now)
            if left is not None:
                parts.append(f"eta {format_elapsed(left)}")
            return "  ".join(parts)
        if isinstance(event, TrainingStarted):
            return "started"
        if isinstance(event, CheckpointSaved):
            return f"checkpoint at step {event.step}"
        if isinstance(event, TrainingCompleted):
            return "completed"
        if isinstance(event, TrainingFailed):
            return f"failed: {clip(event.error, VALUE_LIMIT)}"
        if isinstance(event, TrainingCancelled):
            return "cancelled"
        assert isinstance(event, UnknownEvent)
        return None


async def jobs_watch(
    client: ArkorClient,
    out: TextIO,
    *,
    once: bool = False,
    poll: float = 5.0,
    as_json: bool = False,
    events: bool = False,
) -> int:
    """Follow every queued or running job; see the module docstring. Returns the exit code."""
    followed: set[str] = set()
    active = 0
    all_done = trio.Event()

    def say(text: str) -> None:
        out.write(text + "\n")
        out.flush()

    async def follow(feed: JobFeed, job: TrainingJob) -> None:
        nonlocal active
        summary = JobLine(job)
        try:
            async with feed.subscribe(job.id) as stream:
                async for event in stream:
                    if as_json:
                        say(json.dumps({"job": job.id, "name": job.name, **event_json(event)}))
                    elif events:
                        say(f"{summary.name}  {describe_event(event)}")
                    else:
                        line = summary.describe(event, trio.current_time())
                        if line is not None:
                            say(f"{summary.name}  {line}")
        except ArkorError as exc:
            say(f"{summary.name}  ! {clip(str(exc), VALUE_LIMIT)}")
        finally:
            active -= 1
            if active == 0 and once:
                all_done.set()

    def note(text: str) -> None:
        if as_json:  # JSON Lines on stdout stay pure: the watcher's own state goes to stderr
            print(text, file=sys.stderr, flush=True)
        else:
            say(text)

    # The feed is told to come back quickly after an outage (not after up to 30 s of backoff).
    policy = ReconnectPolicy(max_delay=max(RETRY_WHILE_DOWN, min(poll, 5.0)))
    down = False
    first = True
    async with client.feed(policy=policy) as feed, trio.open_nursery() as nursery:
        while True:
            try:
                jobs = await client.list_jobs()
            except ApiError as exc:
                if not _transient(exc):
                    raise
                if not down:
                    note(
                        f"reconnecting: {clip(str(exc), VALUE_LIMIT)} (trying again every "
                        f"{min(poll, RETRY_WHILE_DOWN):g} s; Ctrl-C to stop)"
                    )
                    down = True
                await trio.sleep(min(poll, RETRY_WHILE_DOWN))
                continue
            if down:
                note("reconnected: the backend answers again")
                down = False
            new = [j for j in jobs if j.id not in followed and not j.is_terminal]
            for job in new:
                followed.add(job.id)
                active += 1
                if job.status == "queued":
                    note(f"{clip(job.name, CELL_LIMIT)}  queued ({job.id})")
                nursery.start_soon(partial(follow, feed, job))
            if first:
                first = False
                if not followed:
                    wait = "" if once else f"; waiting for one (looking every {poll:g} s)"
                    note(f"no queued or running jobs{wait}")
                else:
                    note(f"watching {len(followed)} job(s)")
            if once and active == 0:
                all_done.set()
            with trio.move_on_after(poll):
                await all_done.wait()
            if all_done.is_set():
                nursery.cancel_scope.cancel()
                break
    if followed:
        note(f"all {len(followed)} followed job(s) ended")
    return 0
