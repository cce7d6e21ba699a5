"""Recipe: stop a run whose loss diverges.

``on_log`` feeds each loss to :class:`EarlyStopping` (a NaN guard, a hard ceiling, and a rolling
mean that may not get worse than its best for ``patience`` logs in a row). When it trips, the
callback cancels the scope around ``wait()``: control comes back at once, while the job still runs
on the backend. ``trainer.cancel()`` then stops it there, and a second ``wait()`` follows the job
to its terminal ``training.cancelled`` (``on_cancelled`` fires once), resuming after the last event
already dispatched.

The recipe makes the loss diverge on purpose with a learning rate far too high for the local
engine (its default is 1e-2). Run it: ``python examples/early_stopping.py``.
"""

from __future__ import annotations

import math
from collections import deque

import attrs
import trio
from _recipe import MODEL, demo_dataset, run

from arkor_trio import ArkorClient, CancelledContext, LogContext, create_trainer


class EarlyStopping:
    """Decides, one ``training.log`` at a time, whether the loss is diverging.

    Args:
        ceiling: Any loss above this stops the run at once.
        window: How many recent losses the rolling mean covers.
        patience: How many logs in a row the rolling mean may exceed its best by more than
            ``tolerance`` (relative) before the run is stopped.
        tolerance: Relative slack over the best rolling mean.
    """

    def __init__(
        self,
        *,
        ceiling: float = 20.0,
        window: int = 5,
        patience: int = 3,
        tolerance: float = 0.05,
    ) -> None:
        self.ceiling, self.patience, self.tolerance = ceiling, patience, tolerance
        self.recent: deque[float] = deque(maxlen=window)
        self.best = math.inf
        self.strikes = 0
        self.reason: str | None = None
        self.step: int | None = None

    def observe(self, step: int, loss: float | None) -> bool:
        """Record one loss; True once the run should stop (and from then on)."""
        if self.reason is not None or loss is None:  # some logs carry no loss
            return self.reason is not None
        if not math.isfinite(loss):
            return self._stop(step, f"loss is {loss}")
        if loss > self.ceiling:
            return self._stop(step, f"loss {loss:.4g} is above the ceiling {self.ceiling:g}")
        self.recent.append(loss)
        mean = sum(self.recent) / len(self.recent)
        if mean < self.best:
            self.best, self.strikes = mean, 0
        elif mean > self.best * (1 + self.tolerance):
            self.strikes += 1
            if self.strikes >= self.patience:
                return self._stop(
                    step, f"rolling mean {mean:.4g} above its best {self.best:.4g} "
                    f"for {self.strikes} logs",
                )  # fmt: skip
        return False

    def _stop(self, step: int, reason: str) -> bool:
        self.step, self.reason = step, reason
        return True


@attrs.frozen
class Report:
    """What happened: why and when the run was stopped, and how the job ended."""

    reason: str | None
    stopped_at: int | None
    last_step_seen: int
    status: str
    cancelled_callbacks: int


async def main(client: ArkorClient, *, max_steps: int = 300, learning_rate: float = 50.0) -> Report:
    """Train with a diverging learning rate; stop and cancel the job when the loss blows up."""
    stopper = EarlyStopping()
    scope = trio.CancelScope()
    seen: list[int] = []
    cancelled: list[CancelledContext] = []

    def on_log(ctx: LogContext) -> None:
        seen.append(ctx.step)
        if stopper.reason is None and stopper.observe(ctx.step, ctx.loss):
            print(f"step {ctx.step}: stopping: {stopper.reason}")
            scope.cancel()  # leave the wait() below; the job keeps running on the backend
        elif stopper.reason is None:
            print(f"step {ctx.step}: loss {ctx.loss}")

    trainer = create_trainer(
        name="early-stopping",
        model=MODEL,
        dataset=demo_dataset(client),
        max_steps=max_steps,
        learning_rate=learning_rate,
        logging_steps=1,
        callbacks={"on_log": on_log, "on_cancelled": cancelled.append},
        client=client,
    )
    with scope:
        await trainer.wait()  # returns only if the run ends before the stopper trips
    if scope.cancelled_caught:
        await trainer.cancel()  # POST /v1/jobs/:id/cancel: stop the run on the backend
        # Follow the job to its end: the logs it emitted before the cancel took effect (the
        # stopper ignores them now), then training.cancelled. Nothing is dispatched twice.
        result = await trainer.wait()
    else:
        result = trainer.result
        assert result is not None
    print(f"job {result.job.id} ended {result.job.status}")
    return Report(
        reason=stopper.reason,
        stopped_at=stopper.step,
        last_step_seen=max(seen, default=0),
        status=result.job.status,
        cancelled_callbacks=len(cancelled),
    )


if __name__ == "__main__":
    run(main)
