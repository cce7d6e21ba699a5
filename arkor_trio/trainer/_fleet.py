"""``Fleet``: every job of a project, each followed by exactly one replica (design.md section 15).

A replica is a :class:`Fleet` running in some process. Replicas share one cursor store that
speaks the lease protocol of section 14 plus two membership calls, ``heartbeat`` and ``leave``
(:class:`~arkor_trio.stream.RedisCursorStore` across machines, ``MemoryCursorStore`` in one
process). Each replica

* heartbeats every ``lease_ttl / 3`` (its name and the jobs it holds; a member that stops
  heartbeating drops out after ``lease_ttl``) and lists the project's jobs every
  ``discovery_interval``;
* computes who follows which job with :func:`~arkor_trio.trainer._fleet_assign.assign` (the
  same answer on every replica) and follows its own jobs with :meth:`Trainer.attach`, so the
  commit rule, dedupe and the lease check before every dispatch are the trainer's own (the
  Ledger's), not copied here;
* hands a job it should no longer follow to its new owner *between* events: if a callback is
  running, the hand-off waits for it to return (its event is committed), then stops before the
  next event; otherwise it stops at once. A healthy hand-off dispatches no event twice.

A replica that dies or pauses loses its leases after ``lease_ttl`` (Redis expires them; its own
clock stops it before that) and drops out of the membership; the others take its jobs at their
next heartbeat or discovery, resuming from the last committed event.
"""

from __future__ import annotations

import inspect
import json
import logging
import math
import os
import secrets
import socket
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

import attrs
import trio

from .._errors import ApiError, ArkorError, ConfigError
from ..stream import Lease, LeaseLost, as_cursor_store
from ..wire._client import ArkorClient
from . import _fleet_metrics as fleet_metrics
from ._callbacks import Callbacks, CallbacksLike, as_callbacks
from ._fleet_assign import assign
from ._fleet_metrics import FleetStats
from ._fleet_store import WatchedStore
from ._trainer import Trainer

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..stream import Cursor
    from ..wire._feed import JobFeed
    from ..wire._models import TrainingJob

__all__ = ["Fleet", "FleetStats"]

log = logging.getLogger("arkor_trio.fleet")

_CALLBACK_NAMES = ("on_started", "on_log", "on_checkpoint", "on_completed", "on_failed",
                   "on_cancelled")  # fmt: skip
#: The store key recording where the fleet of a namespace started following (job creation time).
SINCE_KEY = "fleet:since"
#: Seconds before a job whose follow ended with an error is tried again (doubling to 60).
RETRY_DELAY = 1.0
#: Seconds before a discovery that could not reach the store is tried again (doubling to the
#: discovery interval).
DISCOVERY_RETRY = 0.1
#: Statuses of a refused feed handshake that mean "this backend offers no feed" (the cloud).
_NO_FEED = (404, 405, 501)


@attrs.define(eq=False)
class _Follow:
    """One job being followed (or waited for) by this replica."""

    job_id: str
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    lease: Lease | None = None
    busy: bool = False
    handoff: bool = False
    lost: bool = False
    since: float = attrs.field(factory=trio.current_time)


class Fleet:
    """Follow every job of the client's project, each by exactly one replica at a time.

    Args:
        client: The Arkor client (its project is the one followed).
        store: The shared cursor store: the lease protocol plus ``heartbeat``/``leave``
            (:class:`~arkor_trio.stream.RedisCursorStore`; ``MemoryCursorStore`` in one process).
            A store that is an async context manager is entered by :meth:`run`.
        callbacks: The callbacks every job runs, serially per job, as a trainer's.
        lease_ttl: Seconds a job's lease (and this replica's membership) lasts without renewal.
        discovery_interval: Seconds between listings of the project's jobs (default
            ``lease_ttl / 2``).
        name: This replica's member name (default ``"pid N on host #random"``).
        transport: How the replica's jobs are followed: ``"auto"`` (default) over one job
            feed (one WebSocket for all of them) where the backend offers it, else one event
            stream per job; ``"feed"`` only over the feed; ``"sse"`` one stream per job.
    """

    def __init__(
        self,
        client: ArkorClient,
        *,
        store: Any,
        callbacks: CallbacksLike | None = None,
        lease_ttl: float = 10.0,
        discovery_interval: float | None = None,
        name: str | None = None,
        transport: str = "auto",
    ) -> None:
        if not isinstance(client, ArkorClient):
            raise ConfigError(f"client must be an ArkorClient, got {type(client).__name__}",
                              field="client")  # fmt: skip
        for method in ("heartbeat", "leave"):
            if not callable(getattr(store, method, None)):
                raise ConfigError(
                    f"a fleet's store needs {method}() (RedisCursorStore, MemoryCursorStore); "
                    f"{type(store).__name__} has none",
                    field="store",
                )
        if not (isinstance(lease_ttl, int | float) and math.isfinite(lease_ttl) and lease_ttl > 0):
            raise ConfigError(f"lease_ttl must be a positive number, got {lease_ttl!r}",
                              field="lease_ttl")  # fmt: skip
        interval = lease_ttl / 2 if discovery_interval is None else discovery_interval
        if not (isinstance(interval, int | float) and math.isfinite(interval) and interval > 0):
            raise ConfigError(f"discovery_interval must be a positive number, got {interval!r}",
                              field="discovery_interval")  # fmt: skip
        if transport not in ("auto", "feed", "sse"):
            raise ConfigError(f"transport must be 'auto', 'feed' or 'sse', got {transport!r}",
                              field="transport")  # fmt: skip
        self.transport = transport
        self._feed: JobFeed | None = None
        self.client = client
        self.store = store
        self._cursors = as_cursor_store(store)
        self.callbacks: Callbacks = as_callbacks(callbacks)
        self.lease_ttl = float(lease_ttl)
        self.discovery_interval = float(interval)
        self.name = name or f"pid {os.getpid()} on {socket.gethostname()} #{secrets.token_hex(3)}"
        self._follows: dict[str, _Follow] = {}
        self._tokens: dict[str, int] = {}  # job -> the last token this replica held
        self._done: set[str] = set()  # jobs finished in the store: never looked at again
        self._retry_at: dict[str, tuple[float, float]] = {}  # job -> (when, next delay)
        self._jobs: list[tuple[int, str]] = []  # the jobs to follow, (index, id)
        self._members: dict[str, str] = {}
        self._since: str | None = None
        self._stopping = False
        self._nursery: trio.Nursery | None = None
        self._wake = trio.Event()
        self._counts = dict.fromkeys(
            ("takeovers", "lease_losses", "handoffs", "dispatched", "commits", "commits_refused"), 0
        )
        self._store_error: str | None = None

    def __repr__(self) -> str:
        return f"Fleet(name={self.name!r}, held={self.stats.held})"

    @property
    def stats(self) -> FleetStats:
        """This replica's counters now."""
        now = trio.current_time()
        held = [f for f in self._follows.values() if _holds(f)]
        mine = [j for j, m in self._assignment().items() if m == self.name]
        waiting = [now - f.since for j in mine if (f := self._follows.get(j)) and f.lease is None]
        return FleetStats(
            held=len(held),
            assigned=len(mine),
            members=len(self._members),
            lag=max(waiting, default=0.0),
            store_error=self._store_error,
            **self._counts,
        )

    @property
    def feed(self) -> JobFeed | None:
        """The job feed this replica's jobs ride now (None: one event stream per job)."""
        return self._feed

    def stop(self) -> None:
        """Stop gracefully: hand every job back between events, leave, and return from run()."""
        self._stopping = True
        for follow in self._follows.values():
            self._hand_off(follow)
        self._wake.set()

    async def run(self) -> None:
        """Follow the project's jobs until cancelled (or :meth:`stop`)."""
        async with AsyncExitStack() as stack:
            if callable(getattr(self.store, "__aenter__", None)):
                await stack.enter_async_context(self.store)
            fleet_metrics.track(self)
            if self.transport != "sse":
                self._feed = await stack.enter_async_context(self.client.feed())
            try:
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    await self._beat()
                    nursery.start_soon(self._heartbeats)
                    retry = DISCOVERY_RETRY
                    while not self._stopping:
                        wait = self.discovery_interval
                        if await self._discover():
                            retry = DISCOVERY_RETRY
                        else:  # the store is unreachable: retry sooner, backing off
                            wait, retry = min(retry, wait), min(retry * 2, wait)
                        self._reconcile()
                        with trio.move_on_after(wait):
                            await self._wake.wait()
                        self._wake = trio.Event()
                    while self._follows:  # stopping: the follows end between events
                        await self._wake.wait()
                        self._wake = trio.Event()
                    nursery.cancel_scope.cancel()
            finally:
                self._nursery = None
                fleet_metrics.release(self)
                with trio.CancelScope(shield=True):
                    await self.store.leave(self.name)

    # --- membership and discovery ---------------------------------------------------------------

    async def _heartbeats(self) -> None:
        while True:
            await trio.sleep(self.lease_ttl / 3)
            await self._beat()
            self._reconcile()

    async def _beat(self) -> None:
        held = sorted(j for j, f in self._follows.items() if _holds(f))
        # An answer later than the ttl is worth nothing (a partition can hold a request open).
        with trio.move_on_after(self.lease_ttl):
            try:
                members = await self.store.heartbeat(
                    self.name, ttl=self.lease_ttl, info=json.dumps({"held": held})
                )
            except Exception as exc:  # the store is down (coredis has its own errors)
                self._unreachable(f"heartbeat failed: {exc!r}")
                return
            self._store_error = None
            self._members = dict(members)
            return
        self._unreachable(f"no answer to the heartbeat within {self.lease_ttl:g} s")

    def _unreachable(self, why: str) -> None:
        if self._store_error is None:  # the first reason stays until the store answers
            log.warning("fleet: the store is unreachable (%s); leases lapse, retrying", why)
            self._store_error = why

    async def _discover(self) -> bool:
        """List the jobs and decide which to follow; False when the store did not answer."""
        try:
            listed = await self.client.list_jobs()
        except ArkorError as exc:
            log.warning("fleet discovery failed: %s", exc)
            return True
        except (OSError, ConnectionError) as exc:
            log.warning("fleet discovery failed: %r", exc)
            return True
        # Bounded: an unreachable store must not hold the loop (the first discovery waits on a
        # lease, later ones load cursors); the loop retries with backoff and reports meanwhile.
        with trio.move_on_after(self.lease_ttl):
            try:
                if self._since is None:
                    self._since = await self._load_since(listed)
                self._jobs = await self._to_follow(listed)
            except ArkorError as exc:
                self._unreachable(f"discovery failed: {exc}")
                return False
            except Exception as exc:  # coredis' own connection errors
                self._unreachable(f"discovery failed: {exc!r}")
                return False
            return True
        self._unreachable(f"no answer to the discovery within {self.lease_ttl:g} s")
        return False

    async def _load_since(self, listed: list[TrainingJob]) -> str:
        """Where the namespace's fleet started: jobs that had ended before are history."""
        async with self._cursors.lease(SINCE_KEY, ttl=self.lease_ttl) as lease:
            since = (await self._cursors.load(SINCE_KEY)).id
            if since is None:
                since = max((j.created_at or "" for j in listed), default="") or "0"
                await self._cursors.commit(SINCE_KEY, since, lease=lease)
        return since

    async def _to_follow(self, listed: list[TrainingJob]) -> list[tuple[int, str]]:
        ordered = sorted(listed, key=lambda j: (j.created_at or "", j.id))
        since = self._since or ""
        out: list[tuple[int, str]] = []
        for index, job in enumerate(ordered):
            if job.id in self._done:
                continue
            if job.is_terminal and job.id not in self._follows:
                if (job.created_at or "") <= since:
                    continue  # ended before the fleet started: history
                state: Cursor = await self._cursors.load(job.id)
                if state.finished:
                    self._done.add(job.id)
                    continue
            out.append((index, job.id))
        return out

    def _assignment(self) -> dict[str, str]:
        holders: dict[str, str] = {}
        for member, info in self._members.items():
            try:
                held = json.loads(info).get("held", []) if info else []
            except (ValueError, AttributeError):
                held = []
            for job in held if isinstance(held, list) else []:
                holders.setdefault(str(job), member)
        for job, follow in self._follows.items():  # our own view is current
            if _holds(follow):
                holders[job] = self.name
            elif holders.get(job) == self.name:
                del holders[job]
        members = sorted(self._members) if self.name in self._members else []
        return assign(members, self._jobs, holders)

    def _reconcile(self) -> None:
        nursery = self._nursery
        if nursery is None or self._stopping:
            return
        mine = {j for j, m in self._assignment().items() if m == self.name}
        now = trio.current_time()
        for job_id in mine:
            if job_id in self._follows or self._retry_at.get(job_id, (0.0, 0.0))[0] > now:
                continue
            follow = self._follows[job_id] = _Follow(job_id)
            nursery.start_soon(self._follow, follow)
        for job_id, follow in list(self._follows.items()):
            if follow.lease is not None and not follow.lease.valid() and not follow.lost:
                follow.lost = True  # expired by our clock or taken over: stop waiting for events
                if not follow.busy:
                    follow.scope.cancel()
            elif job_id not in mine:
                self._hand_off(follow)

    def _hand_off(self, follow: _Follow) -> None:
        if follow.handoff:
            return
        follow.handoff = True
        if follow.lease is not None and not self._stopping:
            self._counts["handoffs"] += 1
        if not follow.busy:  # between events (or waiting): stop now; else after the callback
            follow.scope.cancel()

    # --- following one job ----------------------------------------------------------------------

    async def _follow(self, follow: _Follow) -> None:
        job_id = follow.job_id
        feed = self._feed
        trainer = Trainer.attach(
            job_id,
            callbacks=self._guarded(follow),
            client=self.client,
            cursor_store=WatchedStore(
                self._cursors, lambda lease: self._acquired(follow, lease), self._committed
            ),
            transport=feed if feed is not None else "sse",
        )
        trainer.lease_ttl = self.lease_ttl
        try:
            with follow.scope:
                await trainer.wait()
                self._done.add(job_id)
                self._retry_at.pop(job_id, None)
        except LeaseLost as exc:
            follow.lost = True
            log.warning("fleet: job %s: %s", job_id, exc)
        except ArkorError as exc:
            if feed is not None and self._no_feed(feed, exc):
                self._feed = None  # the cloud: one stream per job from now on, this job now
                log.warning("fleet: the backend offers no job feed (%s); one stream per job", exc)
            else:
                self._later(job_id)
                log.warning("fleet: job %s: %s", job_id, exc)
        except Exception:
            self._later(job_id)
            log.exception("fleet: job %s: a callback raised; the event is delivered again", job_id)
        finally:
            if follow.lost:
                self._counts["lease_losses"] += 1
            if follow.lease is not None:
                self._tokens[job_id] = follow.lease.token
            del self._follows[job_id]
            self._wake.set()  # reconsider at once (a successor may be waiting)

    def _committed(self, accepted: bool) -> None:
        self._counts["commits" if accepted else "commits_refused"] += 1

    def _no_feed(self, feed: JobFeed, exc: ArkorError) -> bool:
        """Whether ``exc`` says the backend has no feed at all: its handshake was refused as
        an unknown route before any socket opened, and ``transport`` allows a fallback."""
        return (
            self.transport == "auto"
            and isinstance(exc, ApiError)
            and exc.status in _NO_FEED
            and feed.stats.connections == 0
        )

    def _later(self, job_id: str) -> None:
        delay = self._retry_at.get(job_id, (0.0, RETRY_DELAY))[1]
        self._retry_at[job_id] = (trio.current_time() + delay, min(delay * 2, 60.0))

    def _acquired(self, follow: _Follow, lease: Lease) -> None:
        follow.lease = lease
        mine_before = self._tokens.get(follow.job_id)
        if lease.token > 1 and mine_before != lease.token - 1:
            self._counts["takeovers"] += 1
        if follow.handoff:
            follow.scope.cancel()

    def _guarded(self, follow: _Follow) -> Callbacks:
        """The user's callbacks behind a guard that lets a hand-off stop only between events."""
        wrapped: dict[str, Callable[[Any], Any]] = {}
        for name in _CALLBACK_NAMES:
            wrapped[name] = self._guard(follow, getattr(self.callbacks, name))
        return Callbacks(**wrapped)

    def _guard(self, follow: _Follow, fn: Callable[[Any], Any] | None) -> Callable[[Any], Any]:
        async def guarded(ctx: Any) -> None:
            if follow.handoff:  # stop before this event: it is not handled, not committed
                follow.scope.cancel()
                await trio.lowlevel.checkpoint()
            follow.busy = True
            try:
                if fn is not None:
                    result = fn(ctx)
                    if result is not None and inspect.isawaitable(result):
                        await result
            finally:
                follow.busy = False
            if fn is not None:  # a callback ran (not only the guard of an absent one)
                self._counts["dispatched"] += 1
            if follow.handoff:  # the event is committed next, then the follow stops
                follow.scope.cancel()

        return guarded


def _holds(follow: _Follow) -> bool:
    return follow.lease is not None and not follow.lost and follow.lease.valid()
