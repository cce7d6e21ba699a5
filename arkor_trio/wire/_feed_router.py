"""The job feed's per-job state machine: each server message moves one job.

A job is ``active`` (subscribed, or to subscribe on the next socket), ``paused`` (its queue was
full: unsubscribed, keeping the events already in flight, to subscribe again once the consumer
made room), ``waiting`` (a task of :class:`~._feed_retry.JobRetry` decides when to subscribe it
again: ``end``, an ``error`` for it, a paused job whose events in flight overflowed) or
``done``. Events are accepted only once every ``subscribe`` sent for the job id on this socket
was answered (``subscribed`` or ``error``) and while it is active or paused. Dedupe and the
replay guard are the job's ledger's (a ``reset`` leaves them: a replay of handled ids is
dropped, design.md section 3 rule 10).

The unanswered ``subscribe`` messages are counted per job *id*, not per followed job: after
``remove(job)`` and a new ``subscribe(job, after=...)``, the old subscription's answer (and the
events that follow it) still belongs to the old one, so nothing of it is taken for the new.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ._codec import MalformedPayload, decode_event
from ._feed_messages import decode_messages, subscribe_message, unsubscribe_message
from ._feed_retry import JobRetry

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..stream import ReconnectPolicy
    from ._feed_job import FeedCounters, FeedJob
    from ._feed_outbox import Outbox
    from ._feed_socket import FeedClient

__all__ = ["FeedRouter"]

log = logging.getLogger("arkor_trio.feed")


class FeedRouter:
    """Routes incoming messages to their jobs and sends each job's ``subscribe``.

    With ``single_job`` (a feed that follows one job only, as ``client.events(job,
    transport="websocket")``), an event for a full queue is not a reason to pause the job: the
    router stops where it is (:attr:`blocked`) and the socket loop reads nothing more until the
    consumer made room (:meth:`wait_room`), so TCP slows the server down as on SSE and nothing
    in flight is dropped and replayed. A shared feed cannot stop reading for one job (the
    others would wait), so there the job is *paused*: unsubscribed, and subscribed again after
    its last queued event once its consumer made room. The events of its subscription already
    in flight still arrive in order, so a paused job keeps them (``kept``), up to
    ``buffer_size`` beyond its full queue; past that, that event and every later one of the
    subscription are dropped (``stale``) and come again after the resubscribe. The jobs of a
    ``subscribe_many`` share one queue: its consumer being behind is the whole merged stream
    being behind, so a full shared queue stops the router as on a single-job feed.

    Attributes:
        jobs: The jobs followed, by id (shared with the feed).
        socket_progress: Set when an event was queued on the current socket.
        single_job: Wait for the consumer instead of pausing (see above).
        blocked: The job whose full queue stopped the router (``single_job``, or a job of a
            ``subscribe_many``), else None.
    """

    def __init__(
        self,
        client: FeedClient,
        policy: ReconnectPolicy,
        jobs: dict[str, FeedJob],
        counters: FeedCounters,
        outbox: Outbox,
        spawn: Callable[..., None],
        *,
        single_job: bool = False,
    ) -> None:
        self.jobs = jobs
        self.socket_progress = False
        self.single_job = single_job
        self.blocked: FeedJob | None = None
        #: The messages left of the text message the router stopped in, and where it stopped.
        self._rest: tuple[list[Any], int] | None = None
        #: ``subscribe`` messages sent on the current socket and not yet answered, by job id.
        self._pending: dict[str, int] = {}
        self._counters = counters
        self._outbox = outbox
        self._spawn = spawn
        self._retry = JobRetry(client, policy, counters, self.resubscribe)
        #: Events a paused job keeps beyond its full queue (those already in flight).
        self._keep = policy.buffer_size

    # --- outgoing ------------------------------------------------------------------------------

    def send_subscribe(self, job: FeedJob) -> None:
        """Make ``job`` active and subscribe it now if a socket is open."""
        job.state = "active"
        job.progress = False
        job.subscribing()
        if self._outbox.connected:
            self._pending[job.job_id] = self._pending.get(job.job_id, 0) + 1
            self._outbox.send(subscribe_message(job.job_id, job.resume))

    def socket_opened(self) -> None:
        """A new socket: every active job is subscribed again from its resume point."""
        self._pending.clear()
        self.blocked = None  # what the last socket left unhandled comes again on this one
        self._rest = None
        for job in self.jobs.values():
            if job.state == "active":
                self.send_subscribe(job)

    def resubscribe(self, job: FeedJob) -> None:
        """Subscribe a waiting job again (unless it was removed or finished meanwhile)."""
        if job.state in ("waiting", "paused") and self.jobs.get(job.job_id) is job:
            self.send_subscribe(job)

    # --- incoming ------------------------------------------------------------------------------

    def handle_raw(self, raw: str | bytes) -> None:
        """One text message from the server (a message or a batch)."""
        messages = decode_messages(raw)
        if messages is None:
            self._counters.skipped += 1
            log.debug("feed: skipped a message that is not JSON")
            return
        self._handle_from(messages, 0)

    def _handle_from(self, messages: list[Any], start: int) -> None:
        for index in range(start, len(messages)):
            self.handle(messages[index])
            if self.blocked is not None:
                self._rest = (messages, index)  # message ``index`` is handled again
                return

    async def wait_room(self) -> None:
        """Wait until the :attr:`blocked` job's consumer made room, then handle the rest of the
        text message it stopped in (which may block again: loop while :attr:`blocked`)."""
        job, rest = self.blocked, self._rest
        assert job is not None
        assert rest is not None
        await job.queue.wait_not_full()
        self.blocked = self._rest = None
        messages, index = rest
        self._counters.messages -= 1  # counted when it was first handled
        self._handle_from(messages, index)

    def handle(self, message: Any) -> None:
        """One decoded message."""
        counters = self._counters
        counters.messages += 1
        if type(message) is dict and message.get("type") == "event":  # the hot path first
            key = message.get("job")
            job = self.jobs.get(key) if type(key) is str else None
            if job is not None:
                self._on_event(job, message)
            return
        kind = message.get("type") if isinstance(message, dict) else None
        if not isinstance(kind, str):
            counters.skipped += 1
            log.debug("feed: skipped a malformed message")
            return
        if kind == "ping":
            counters.pings += 1
            return
        key = message.get("job")
        if not isinstance(key, str):
            key = None
        answered = key is not None and kind in ("subscribed", "error") and self._answered(key)
        job = self.jobs.get(key) if key is not None else None
        if job is None:
            if kind == "error" and not answered:
                log.warning("feed: the server refused a message: %s", message.get("error"))
            return
        if kind == "event":
            self._on_event(job, message)
        elif kind == "reset" and self._latest(job):  # else: an older subscription's
            counters.resets += 1  # dedupe stays: the ledger's rule drops a replay of handled ids
            job.reset(str(message.get("reason")))
            log.warning("feed: job %s: %s", job.job_id, message.get("reason"))
        elif kind in ("end", "error") and self._latest(job):
            # The latest subscription ended or was refused: JobRetry decides what comes next.
            job.state = "waiting"
            if kind == "end":
                self._spawn(self._retry.after_end, job)
            else:
                self._spawn(self._retry.after_error, job, message)

    def _latest(self, job: FeedJob) -> bool:
        """True when every subscribe of ``job`` on this socket was answered and it is active."""
        return job.job_id not in self._pending and job.state == "active"

    def _answered(self, job_id: str) -> bool:
        """Count one answer to a ``subscribe`` of ``job_id``; False when none was pending."""
        left = self._pending.get(job_id, 0) - 1
        if left > 0:
            self._pending[job_id] = left
        elif left == 0:
            del self._pending[job_id]
        return left >= 0

    def _on_event(self, job: FeedJob, message: dict[str, Any]) -> None:
        counters = self._counters
        state = job.state
        if job.job_id in self._pending or (state != "active" and state != "paused"):
            counters.stale += 1
            return
        event_id = message.get("id")
        if type(event_id) is not str or job.duplicates.seen(event_id):
            counters.duplicates += 1
            return
        queue = job.queue
        if queue.full:  # before decoding
            if self.single_job or job.holds_socket:  # the socket loop waits for room, then
                # this event comes again
                self.blocked = job
                return
            if state == "active":  # pause: unsubscribe, subscribe again once there is room
                counters.pauses += 1
                job.state = "paused"
                self._outbox.send(unsubscribe_message(job.job_id))
                self._spawn(self._retry.after_room, job)
            elif -queue.room >= self._keep:
                # The events in flight filled the allowance: drop this one and every later
                # one of this subscription (no hole), they come again after the resubscribe.
                job.state = "waiting"
                counters.stale += 1
                return
            counters.kept += 1  # in flight when the job was paused: kept, not replayed
        try:
            event = decode_event(message.get("data"), event_id)
        except (MalformedPayload, RecursionError):
            counters.skipped += 1
            return
        job.accept(event)
        counters.events += 1
        self.socket_progress = True
