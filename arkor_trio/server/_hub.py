"""Wake-ups for the followers of a job's event log (SSE streams and feed subscriptions).

The store calls :meth:`EventHub.notify` after each committed append, from whichever thread
appended. Off the loop it adds the job to a pending set and schedules one ``run_sync_soon``
callback for the whole set at a time (coalesced across jobs, never blocking the training thread):
appends to many jobs cost one wake-up of the loop, not one each (each is a write to trio's
wake-up socket and a callback). A follower holds :meth:`EventHub.watching` while it follows
a job; the hub keeps a job's wake-up event only while someone watches it, so its memory is
bounded by the jobs followed right now, not by every job ever followed.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

__all__ = ["EventHub"]


class EventHub:
    """Wakes the streams following a job when an event is appended to it.

    Create it inside the trio run that serves the streams. ``closing`` is set when the backend
    shuts down; every open stream then ends.
    """

    def __init__(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._loop_thread = threading.get_ident()
        self._changed: dict[str, trio.Event] = {}
        self._tails: dict[str, list[Callable[[], bool]]] = {}
        self._watchers: dict[str, int] = {}
        self._pending: dict[str, None] = {}  # jobs to wake, in the order they were notified
        self._scheduled = False  # a ``_fire_pending`` callback is scheduled and has not run
        self._lock = threading.Lock()
        self.closing = trio.Event()
        #: How many event streams are following a job right now.
        self.followers = 0
        self._followers_changed = trio.Event()

    def _count_follower(self, delta: int) -> None:
        self.followers += delta
        self._followers_changed.set()
        self._followers_changed = trio.Event()

    async def wait_followers(self, count: int) -> None:
        """Return once exactly ``count`` streams are following jobs (statistics and tests)."""
        while self.followers != count:
            await self._followers_changed.wait()

    @contextmanager
    def watching(self, job_id: str) -> Iterator[None]:
        """Hold while following ``job_id`` (on the loop); :meth:`changed` is used inside it.

        When the last watcher of a job leaves, the hub forgets the job.
        """
        self._watchers[job_id] = self._watchers.get(job_id, 0) + 1
        try:
            yield
        finally:
            left = self._watchers[job_id] - 1
            if left:
                self._watchers[job_id] = left
            else:
                del self._watchers[job_id]
                self._changed.pop(job_id, None)

    def changed(self, job_id: str) -> trio.Event:
        """An event set by the next append to ``job_id``.

        Call it on the loop, inside :meth:`watching`, before reading the log: no append can
        slip between.
        """
        event = self._changed.get(job_id)
        if event is None:
            event = self._changed[job_id] = trio.Event()
        return event

    async def tail(self, job_id: str, step: Callable[[], bool]) -> None:
        """Run ``step()`` on the loop after each append to ``job_id``, until it returns False.

        For a caught-up follower: the hub reads and delivers the new events itself (``step``
        must not block), so an append costs no task switch and no wake-up event. Returns once
        ``step`` returned False or raised (the caller then carries on itself), or when cancelled;
        ``step`` is not run again after that. Call it on the loop, inside :meth:`watching`, with
        no checkpoint since the caller's last read (no append can slip between).
        """
        task = trio.lowlevel.current_task()
        active = True  # until step() said False or raised, or the wait was cancelled

        def run() -> bool:
            nonlocal active
            if not active:
                return False
            try:
                keep = step()
            except Exception:  # the caller's own read raises it again, in its task
                keep = False
            if not keep:
                active = False
                trio.lowlevel.reschedule(task)
            return keep

        def abort(_: object) -> trio.lowlevel.Abort:
            nonlocal active
            active = False
            return trio.lowlevel.Abort.SUCCEEDED

        # (Parked by hand, not on a trio.Event: an idle subscription holds no event and no
        # parking lot, only these two closures.)
        self.attach(job_id, run)
        try:
            await trio.lowlevel.wait_task_rescheduled(abort)
        finally:
            self.detach(job_id, run)

    def attach(self, job_id: str, run: Callable[[], bool]) -> None:
        """Call ``run()`` on the loop after each append to ``job_id`` until it returns False
        (or :meth:`detach`): a follower with no task of its own (a caught-up feed subscription).

        ``run`` must not block nor raise. Call it with no checkpoint since the follower's last
        read of the log: no append can slip between.
        """
        self._tails.setdefault(job_id, []).append(run)

    def detach(self, job_id: str, run: Callable[[], bool]) -> None:
        """Stop calling ``run`` (no-op when it is not attached)."""
        tails = self._tails.get(job_id)
        if tails is None:
            return
        with suppress(ValueError):
            tails.remove(run)
        if not tails:
            del self._tails[job_id]

    def notify(self, job_id: str) -> None:
        """Record that ``job_id`` has a new event; callable from any thread, never blocks."""
        if threading.get_ident() == self._loop_thread:
            self._fire(job_id)
            return
        with self._lock:
            self._pending[job_id] = None
            if self._scheduled:
                return  # the scheduled callback takes the set after this commit: it wakes us
            self._scheduled = True
        with suppress(trio.RunFinishedError):  # the loop is gone: nobody is listening
            self._token.run_sync_soon(self._fire_pending)

    def _fire_pending(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, {}
            self._scheduled = False
        for job_id in pending:
            self._fire(job_id)

    def _fire(self, job_id: str) -> None:
        event = self._changed.pop(job_id, None)
        if event is not None:
            event.set()
        tails = self._tails.get(job_id)
        if tails:
            for run in tuple(tails):
                if not run():
                    self.detach(job_id, run)
