"""When the job feed subscribes one job again: after its queue made room, after ``end``, after
an ``error`` for that job, each with the job's own backoff.

These are per-job tasks that outlive sockets. ``end`` without a terminal event makes the feed
fetch the job: a terminal job yields a synthesized terminal event, a running one is subscribed
again (at once after progress, else after a backoff). An ``error`` 404 is final unless the job
was created by this process within ``not_found_grace``; other statuses in
``ReconnectPolicy.permanent_statuses`` are final; anything else is retried with backoff.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import trio

from .._errors import ApiError, JobNotFound, ReconnectsExhausted
from ._models import terminal_event

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..stream import ReconnectPolicy
    from ._feed_job import FeedCounters, FeedJob
    from ._feed_socket import FeedClient

__all__ = ["JobRetry"]


class JobRetry:
    """The per-job tasks that decide when a waiting job is subscribed again."""

    def __init__(
        self,
        client: FeedClient,
        policy: ReconnectPolicy,
        counters: FeedCounters,
        resubscribe: Callable[[FeedJob], None],
    ) -> None:
        self._client = client
        self._policy = policy
        self._counters = counters
        self._resubscribe = resubscribe

    async def after_room(self, job: FeedJob) -> None:
        """The job's queue was full: subscribe it again once its consumer made room."""
        await job.queue.wait_not_full()
        job.backoff.after_progress(None)
        self._resubscribe(job)

    async def after_end(self, job: FeedJob) -> None:
        """``end`` without a terminal event: ask the job's status."""
        progress = job.progress
        try:
            current = await self._client.get_job(job.job_id)
        except ApiError as exc:
            if exc.status in self._policy.permanent_statuses:
                job.finish(exc)
                return
            await self._backoff(job, progress=False)
            return
        if current.is_terminal:
            if job.state == "waiting":
                job.accept(terminal_event(current, None))
                self._counters.events += 1
            return
        await self._backoff(job, progress=progress)

    async def after_error(self, job: FeedJob, message: dict[str, Any]) -> None:
        """The server refused the job's ``subscribe``."""
        status = message.get("status")
        status = status if isinstance(status, int) else 0
        text = str(message.get("error") or f"status {status}")
        grace = (
            job.created_at is not None
            and trio.current_time() - job.created_at < self._policy.not_found_grace
        )
        if status == 404 and not grace:
            job.finish(JobNotFound(404, text))
            return
        if status != 404 and status in self._policy.permanent_statuses:  # 404: the grace above
            job.finish(ApiError(status, text))
            return
        await self._backoff(job, progress=False)

    async def _backoff(self, job: FeedJob, *, progress: bool) -> None:
        if progress:
            delay = job.backoff.after_progress(None)
        else:
            if job.backoff.exhausted():
                job.finish(
                    ReconnectsExhausted(
                        f"job {job.job_id}: the feed could not follow it "
                        f"{job.backoff.attempt + 1} times in a row; giving up"
                    )
                )
                return
            delay = job.backoff.after_failure()
        if delay > 0:
            await trio.sleep(delay)
        self._resubscribe(job)
