"""``GET /v1/events/ws``: many jobs' event streams over one WebSocket (the job feed).

The protocol (messages, close codes, limits) is in :mod:`._ws_protocol` and docs/websocket.md.
One socket is one :class:`_Session`: a reader task parses client messages, and a sender task
writes the bounded send queue to the socket, adding a ``ping`` whenever nothing was sent for
``ping_interval`` seconds. The ``subscribe`` messages of one client message (a reconnect sends
about a thousand per message) are read in a few queries (:func:`~._ws_batch.prepare`: the jobs,
their event bounds, the events after cursors close to the end). A subscription whose answer
was read so is queued at once and, unless it ended, followed by the
:class:`~._hub.EventHub` without a task (:meth:`~._hub.EventHub.attach`, a
:class:`~._replay.TailStep` run right after each append); any other subscription gets a task
that replays the job's log in pages and then tails it the same way (:meth:`~._hub.EventHub.tail`).
Whatever a tail cannot queue at once (a full queue, a full page, the job's end) goes to a task
that reads it again from the tail's cursor, so each event is queued once and in order.

Ordering: a subscription's messages are ``subscribed``, maybe ``reset``, events in id order,
then ``end``. Re-subscribing or unsubscribing a job cancels its old subscription before
anything of the new one is queued, and a cancelled subscription never queues another message,
so a client that waits for ``subscribed`` never sees an event of an older subscription after it.

Batching: when several messages are queued, the sender writes them as one text message holding
a JSON array of message objects (at most ``BATCH_MESSAGES`` / ``BATCH_BYTES``), in queue order.
The socket's first batch holds at most the client's ``max_batch`` messages, and each batch may
hold twice as many as the one before (up to ``BATCH_MESSAGES``): a client on a link that cuts
every connection after a few KiB asks for small first batches, so something complete gets
through (a batch larger than what gets through would never be), while a healthy socket reaches
full batches after a handful of writes.
"""

from __future__ import annotations

import json
import logging
from contextlib import suppress
from typing import TYPE_CHECKING

import trio
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocketDisconnect

from ._auth import credential_problem
from ._http import LOCAL_ORG, ProjectScopes
from ._replay import TERMINAL_TYPES, Rows, Start, TailStep, follow_log
from ._store import TERMINAL_STATUSES
from ._ws_batch import Prepared, prepare
from ._ws_protocol import (
    CLOSE_BAD_SCOPE,
    CLOSE_GOING_AWAY,
    CLOSE_NO_SCOPE,
    CLOSE_POLICY,
    CLOSE_TOO_SLOW,
    BadMessage,
    Subscribe,
    WsLimits,
    encode,
    error_message,
    event_message,
    parse_client_messages,
    parse_max_batch,
)
from ._ws_queue import SendQueue as _SendQueue

if TYPE_CHECKING:
    from starlette.websockets import WebSocket

    from ._hub import EventHub
    from ._store import Store

__all__ = ["WS_PATH", "ws_route"]

log = logging.getLogger("arkor_trio.server")

WS_PATH = "/v1/events/ws"
PING = encode({"type": "ping"})
#: Queued messages are sent together, as one JSON array, up to these bounds: one WebSocket
#: message (and one write) per message costs ~10x the throughput of SSE's coalesced chunks.
BATCH_MESSAGES = 512
BATCH_BYTES = 256 * 1024
_CLOSE_ERRORS = (WebSocketDisconnect, RuntimeError, OSError, trio.BrokenResourceError)


class _Sub(TailStep):
    """One subscription: its task's cancel scope, or (caught up) the hub's tail itself, reading
    and queueing the job's new events after each append until that needs a task. One object
    per followed job: 100,000 of them cost the garbage collector 10x less than closures did."""

    __slots__ = ("cancelled", "job_json", "scope", "session", "tailing")

    def __init__(self, session: _Session, job: str, cursor: int) -> None:
        super().__init__(session.store, job, cursor)
        self.session = session
        self.job_json = json.dumps(job)
        self.cancelled = self.tailing = False
        self.scope: trio.CancelScope | None = None

    def deliver_now(self, rows: Rows) -> bool:
        job_json = self.job_json
        return self.session.out.offer_many(
            [event_message(job_json, s, t, data) for s, t, data in rows]
        )

    def __call__(self) -> bool:
        """The hub's tail (:meth:`~._hub.EventHub.attach`): False hands over to a task."""
        if self.cancelled or not self.tailing:
            return False
        try:
            keep = super().__call__()
        except Exception:  # the task's own read raises it again
            keep = False
        if not keep:  # more than a read: a task takes over from the cursor
            self.tailing = False
            self.session._start_task(self, None, self.cursor)
        return keep


class _Census:
    """Subscriptions open across all of one backend's sockets (``max_total_subscriptions``).

    ``open`` counts the entries of every session's ``subs``: it changes where they do.
    """

    def __init__(self) -> None:
        self.open = 0


class _Session:
    def __init__(
        self,
        ws: WebSocket,
        store: Store,
        hub: EventHub,
        limits: WsLimits,
        ping_interval: float,
        project_id: str,
        census: _Census,
        max_batch: int = BATCH_MESSAGES,
    ) -> None:
        self.ws = ws
        self.max_batch = max_batch
        self.project_id = project_id
        self.store = store
        self.hub = hub
        self.limits = limits
        self.ping_interval = ping_interval
        self.out = _SendQueue(limits.send_queue)
        self.subs: dict[str, _Sub] = {}
        self.close_code: int | None = None
        self.census = census
        self.errors = 0
        self.nursery: trio.Nursery | None = None

    async def run(self) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self.nursery = nursery  # (the subscriptions' tasks)
                nursery.start_soon(self._sender, nursery.cancel_scope)
                nursery.start_soon(self._watch_closing, nursery.cancel_scope)
                await self._reader()
                nursery.cancel_scope.cancel()
        finally:
            for job, sub in self.subs.items():
                self._cancel(job, sub)
            self.census.open -= len(self.subs)
            self.subs.clear()
        if self.close_code is not None:
            with trio.move_on_after(1.0), suppress(*_CLOSE_ERRORS):
                await self.ws.close(self.close_code)

    async def _watch_closing(self, cancel: trio.CancelScope) -> None:
        await self.hub.closing.wait()
        self.close_code = CLOSE_GOING_AWAY
        cancel.cancel()

    async def _sender(self, cancel: trio.CancelScope) -> None:
        out, timeout = self.out, self.limits.send_timeout
        full_since: float | None = None
        limit = self.max_batch  # doubles with every batch sent, up to BATCH_MESSAGES
        while True:
            if not out.items:
                with trio.move_on_after(self.ping_interval):
                    await out.not_empty.park()
            if out.items:
                message = _batch(out, limit)
                limit = min(BATCH_MESSAGES, limit * 2)
            else:
                message = PING
            try:
                # (hypercorn shields the socket write: a reader that reads nothing at all holds
                # this send until it goes away; one that reads too slowly is closed below.)
                await self.ws.send_text(message)
            except _CLOSE_ERRORS:
                cancel.cancel()
                return
            if len(out.items) < out.capacity:
                full_since = None
                continue
            now = trio.current_time()
            if full_since is None:
                full_since = now
            elif now - full_since >= timeout:
                log.info("closing a feed socket whose send queue stayed full %s s (4408)", timeout)
                self.close_code = CLOSE_TOO_SLOW
                cancel.cancel()
                return

    async def _reader(self) -> None:
        while True:
            try:
                message = await self.ws.receive()
            except _CLOSE_ERRORS:
                return
            if message["type"] == "websocket.disconnect":
                return
            try:
                batch = parse_client_messages(message.get("text", message.get("bytes")))
            except BadMessage as exc:
                batch = [exc]
            errors: list[str] = []
            # (One read of every job, bounds and near events of the batch, then no checkpoint
            # until each subscription is answered or follows the hub: no append slips between.)
            subscribes = [parsed for parsed in batch if isinstance(parsed, Subscribe)]
            known = prepare(self.store, self.project_id, subscribes) if subscribes else {}
            for parsed in batch:
                if isinstance(parsed, BadMessage):
                    errors.append(error_message(parsed.job, 400, str(parsed)))
                    continue
                old = self.subs.pop(parsed.job, None)
                if old is not None:
                    self._cancel(parsed.job, old)
                    self.census.open -= 1
                if isinstance(parsed, Subscribe):
                    found = known.get((parsed.job, parsed.after))
                    refused = self._subscribe(parsed, found)
                    if refused is not None:
                        errors.append(refused)
            if errors and not await self._answer_errors(errors):
                return

    async def _answer_errors(self, errors: list[str]) -> bool:
        """Queue a message's error answers, bounded; False when the socket must close."""
        limits = self.limits
        for error in errors[: limits.max_errors_per_message]:
            await self.out.put(error)
        if len(errors) > limits.max_errors_per_message:
            more = len(errors) - limits.max_errors_per_message
            await self.out.put(error_message(None, 400, f"{more} more messages of this batch "
                                             "were refused (not answered one by one)"))  # fmt: skip
        self.errors += min(len(errors), limits.max_errors_per_message + 1)
        if self.errors <= limits.max_errors_per_socket:
            return True
        log.info("closing a feed socket after %d error answers (1008)", self.errors)
        self.close_code = CLOSE_POLICY
        return False

    def _cancel(self, job: str, sub: _Sub) -> None:
        """End a subscription: it queues nothing more (its task is cancelled, or its tail)."""
        sub.cancelled = True
        if sub.scope is not None:
            sub.scope.cancel()
        if sub.tailing:
            self.hub.detach(job, sub)
            sub.tailing = False

    def _subscribe(self, sub: Subscribe, found: Prepared | None) -> str | None:
        """Start following a job; the ``error`` message instead when it cannot be."""
        if found is None:  # (missing, or of another project: as unknown, no existence leak)
            return error_message(sub.job, 404, f"job {sub.job} not found")
        limits = self.limits
        if len(self.subs) >= limits.max_subscriptions:
            return error_message(sub.job, 429, f"this socket already follows "
                                 f"{limits.max_subscriptions} jobs (the limit); unsubscribe one "
                                 "or open another socket")  # fmt: skip
        if self.census.open >= limits.max_total_subscriptions:
            return error_message(sub.job, 429, f"the backend's sockets already follow "
                                 f"{limits.max_total_subscriptions} jobs (the limit); "
                                 "unsubscribe one")  # fmt: skip
        state = self.subs[sub.job] = _Sub(self, sub.job, found.start.after)
        self.census.open += 1
        if found.rows is None or not self._answer_now(state, found):
            self._start_task(state, found.start, found.start.after)
        return None

    def _answer_now(self, sub: _Sub, found: Prepared) -> bool:
        """Queue a subscription's answer read in the batch, and leave it to the hub's tail (no
        task) unless it ended; False (nothing queued) when the queue has no room for it."""
        rows, start, job_json = found.rows or [], found.start, sub.job_json
        messages = _opening(job_json, start)
        messages += [event_message(job_json, s, t, data) for s, t, data in rows]
        ended = bool(rows) and rows[-1][1] in TERMINAL_TYPES
        ended = ended or (not rows and found.status in TERMINAL_STATUSES)
        if ended:
            messages.append(f'{{"type":"end","job":{job_json}}}')
        if not self.out.offer_many(messages):
            return False
        if ended:
            del self.subs[sub.job_id]
            self.census.open -= 1
            return True
        if rows:
            sub.cursor = rows[-1][0]
        sub.tailing = True
        self.hub.attach(sub.job_id, sub)
        return True

    def _start_task(self, sub: _Sub, start: Start | None, cursor: int) -> None:
        sub.scope = trio.CancelScope()
        assert self.nursery is not None  # (set before the reader runs)
        with suppress(RuntimeError):  # the session's nursery is closed: the socket is gone
            self.nursery.start_soon(self._follow, sub, start, cursor)

    async def _follow(self, sub: _Sub, start: Start | None, cursor: int) -> None:
        assert sub.scope is not None
        job = sub.job_id
        with sub.scope:
            await self._replay_and_tail(job, sub.scope, start, cursor)
        if self.subs.get(job) is sub:
            del self.subs[job]
            self.census.open -= 1

    async def _replay_and_tail(
        self, job: str, scope: trio.CancelScope, start: Start | None, cursor: int
    ) -> None:
        """Queue the opening (``start``: a new subscription), the events after ``cursor``
        (the resolved cursor, or where the hub's tail stopped), then ``end``."""
        out, job_json = self.out, json.dumps(job)
        if start is not None:
            await out.put_many(_opening(job_json, start))

        async def deliver(rows: Rows) -> None:
            await out.put_many([event_message(job_json, s, t, data) for s, t, data in rows])

        def deliver_now(rows: Rows) -> bool:
            # Run by the hub, outside this task: an unsubscribed job queues nothing more.
            if scope.cancel_called:
                return False
            return out.offer_many([event_message(job_json, s, t, data) for s, t, data in rows])

        await follow_log(self.store, self.hub, job, cursor, deliver, deliver_now=deliver_now)
        await out.put(f'{{"type":"end","job":{job_json}}}')


def _opening(job_json: str, start: Start) -> list[str]:
    """A subscription's first messages: ``subscribed``, and ``reset`` when its cursor has one."""
    recovered = "true" if start.recovered else "false"
    messages = [f'{{"type":"subscribed","job":{job_json},"recovered":{recovered}}}']
    if start.reset is not None:
        messages.append(encode({"type": "reset", "job": json.loads(job_json),
                                "reason": start.reset}))  # fmt: skip
    return messages


def _batch(out: _SendQueue, limit: int) -> str:
    """The next text message: one queued message, or a JSON array of as many as fit a batch
    (at most ``limit`` messages and ``BATCH_BYTES``)."""
    parts = out.take_batch(limit, BATCH_BYTES)
    return parts[0] if len(parts) == 1 else "[" + ",".join(parts) + "]"


def _max_batch(ws: WebSocket) -> int | str:
    """The socket's first-batch bound (``max_batch``, capped at ``BATCH_MESSAGES``), or why not."""
    try:
        asked = parse_max_batch(ws.query_params.get("max_batch"))
    except BadMessage as exc:
        return str(exc)
    return BATCH_MESSAGES if asked is None else min(asked, BATCH_MESSAGES)


def _scope(ws: WebSocket) -> str | tuple[int, str]:
    """The id of the socket's project (the same lookup as every HTTP route), or why not."""
    org, project = ws.query_params.get("orgSlug"), ws.query_params.get("projectSlug")
    if not org or not project:
        return CLOSE_BAD_SCOPE, "missing query parameters 'orgSlug' and 'projectSlug'"
    scopes: ProjectScopes = ws.app.state.projects
    project_id = scopes.id_of(project) if org == LOCAL_ORG["slug"] else None
    if project_id is None:
        return CLOSE_NO_SCOPE, f"org {org!r} / project {project!r} not found"
    return project_id


def ws_route(
    store: Store, hub: EventHub, token: str, ping_interval: float, limits: WsLimits
) -> WebSocketRoute:
    """The ``GET /v1/events/ws`` route (gate, scope, then the session)."""
    census = _Census()

    async def endpoint(ws: WebSocket) -> None:
        await ws.accept()
        refused = credential_problem(dict(ws.scope["headers"]), token)
        scope = _scope(ws) if refused is None else (4000 + refused[0], refused[1])
        max_batch = _max_batch(ws)
        if isinstance(scope, str) and isinstance(max_batch, str):
            scope = (CLOSE_BAD_SCOPE, max_batch)
        if not isinstance(scope, str):
            code, reason = scope
            with trio.move_on_after(1.0), suppress(*_CLOSE_ERRORS):
                await ws.close(code, reason[:120])  # a close reason is at most 123 bytes
            return
        assert isinstance(max_batch, int)  # a bad one is a refusal, just above
        try:
            await _Session(ws, store, hub, limits, ping_interval, scope, census, max_batch).run()
        except Exception:
            log.exception("job feed socket failed")
            with trio.move_on_after(1.0), suppress(*_CLOSE_ERRORS):
                await ws.close(1011)

    return WebSocketRoute(WS_PATH, endpoint)
