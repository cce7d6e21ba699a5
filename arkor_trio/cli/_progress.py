"""The command line's training display: a rich progress bar on a terminal, plain lines elsewhere.

:class:`ProgressDisplay` is a set of :class:`~arkor_trio.Callbacks` (merge them with a trainer's
own) plus a context manager owning the live bar. On a terminal it shows one bar with step/total,
loss, eval loss, samples/s and elapsed time, and prints eval results and checkpoint samples above
it. When the output is not a terminal (CI logs, pipes, ``TERM=dumb``) or rich is not installed,
it prints one plain line per event instead: rich itself would only print the bar's final frame
there. In a Jupyter kernel it prints plain lines too (each appears in the cell's output as it
happens). Every loss it sees is kept in :attr:`ProgressDisplay.history` for the final chart.
"""

from __future__ import annotations

import os
import sys
import time
from typing import TYPE_CHECKING, Any, Self, TextIO

import attrs

from .._errors import ArkorError
from ..trainer._callbacks import Callbacks
from ._text import printable

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from types import TracebackType

    from ..trainer._contexts import (
        CancelledContext,
        CheckpointContext,
        CompletedContext,
        FailedContext,
        LogContext,
        StartedContext,
    )

__all__ = ["LossHistory", "ProgressDisplay", "format_elapsed", "wants_live"]


@attrs.define
class LossHistory:
    """The metrics a display saw, in stream order.

    Attributes:
        train: ``(step, loss)`` of every log that carried a loss.
        eval: ``(step, eval_loss)`` of every log that carried one.
        samples: ``(step, prompt, answer)`` of every checkpoint sample.
    """

    train: list[tuple[int, float]] = attrs.field(factory=list)
    eval: list[tuple[int, float]] = attrs.field(factory=list)
    samples: list[tuple[int, str, str]] = attrs.field(factory=list)

    @property
    def first_loss(self) -> float | None:
        """The first training loss reported, None before any."""
        return self.train[0][1] if self.train else None

    @property
    def last_loss(self) -> float | None:
        """The latest training loss reported, None before any."""
        return self.train[-1][1] if self.train else None


def format_elapsed(seconds: float) -> str:
    """``h:mm:ss``, as rich's elapsed column shows it."""
    whole = max(0, int(seconds))
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


def wants_live(out: TextIO) -> bool:
    """True when ``out`` is a terminal that can show a live bar and rich is importable.

    Never in a Jupyter kernel: a redrawn bar would pile up frames in the cell's output.
    """
    if os.environ.get("TERM") == "dumb" or "ipykernel" in sys.modules:
        return False
    try:
        if not out.isatty():
            return False
        import rich  # noqa: F401  # only probing that the optional dependency is there
    except (ValueError, ImportError):  # a closed stream, or no rich
        return False
    return True


def _number(value: float | None, spec: str = ".4f") -> str:
    return "-" if value is None else format(value, spec)


class ProgressDisplay:
    """Shows a training run's progress; use as ``with display:`` around ``trainer.wait()``.

    Args:
        out: Where to write (a terminal gets the live bar).
        live: Force the live bar on or off; None decides from ``out`` (see :func:`wants_live`).
        samples: Prompts to run through ``ctx.infer`` at every checkpoint; answers are printed.
        max_tokens: ``max_tokens`` of those sample requests.
        temperature: ``temperature`` of those sample requests.
        clock: Monotonic seconds (tests pass a fake).
    """

    def __init__(
        self,
        out: TextIO,
        *,
        live: bool | None = None,
        samples: Sequence[str] = (),
        max_tokens: int = 80,
        temperature: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.out = out
        self.live = wants_live(out) if live is None else live
        self.samples = tuple(samples)
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.history = LossHistory()
        self.total: int | None = None
        self._clock = clock
        self._began = clock()
        self._eval: float | None = None
        self._progress: Any = None
        self._task: Any = None

    @property
    def elapsed(self) -> float:
        """Seconds since the display was created."""
        return self._clock() - self._began

    def callbacks(self) -> Callbacks:
        """The callbacks that feed this display (merge them with the trainer's own)."""
        return Callbacks(
            on_started=self._on_started,
            on_log=self._on_log,
            on_checkpoint=self._on_checkpoint,
            on_completed=self._on_completed,
            on_failed=self._on_failed,
            on_cancelled=self._on_cancelled,
        )

    # --- output --------------------------------------------------------------------------------

    def __enter__(self) -> Self:
        if self.live and self._progress is None:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                TextColumn("step {task.completed:>.0f}/{task.fields[total_text]}"),
                TextColumn("loss {task.fields[loss]}"),
                TextColumn("eval {task.fields[eval]}"),
                TextColumn("{task.fields[rate]} samples/s"),
                TimeElapsedColumn(),
                console=Console(file=self.out),
            )
            self._task = self._progress.add_task(
                "training", total=self.total, total_text="?", loss="-", eval="-", rate="-"
            )
            self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def line(self, text: str) -> None:
        """Print one line (above the live bar when there is one), control characters escaped."""
        text = printable(text, keep_newlines=True)  # job names, errors, answers: server text
        if self._progress is not None:
            self._progress.console.print(text, markup=False, highlight=False, soft_wrap=True)
        else:
            self.out.write(text + "\n")
            self.out.flush()

    def _update(self, **fields: Any) -> None:
        if self._progress is not None:
            self._progress.update(self._task, **fields)

    # --- callbacks -----------------------------------------------------------------------------

    def _on_started(self, ctx: StartedContext) -> None:
        steps = ctx.job.config.get("maxSteps")
        if isinstance(steps, int) and not isinstance(steps, bool) and steps > 0:
            self.total = steps
            self._update(total=steps, total_text=str(steps))
        model = ctx.job.config.get("model", "?")
        self.line(f"started job {ctx.job.id} ({ctx.job.name}, model {model})")

    def _on_log(self, ctx: LogContext) -> None:
        if ctx.loss is not None:
            self.history.train.append((ctx.step, ctx.loss))
        if ctx.eval_loss is not None:
            self.history.eval.append((ctx.step, ctx.eval_loss))
            self._eval = ctx.eval_loss
        if self.total is not None and ctx.step > self.total:
            self.total = ctx.step  # the backend ran longer than configured (epochs, ...)
            self._update(total=ctx.step, total_text=str(ctx.step))
        rate = _number(ctx.samples_per_second, ".1f")
        if self._progress is not None:
            self._update(
                completed=ctx.step, loss=_number(ctx.loss), eval=_number(self._eval), rate=rate
            )
            if ctx.eval_loss is not None:
                self.line(f"step {ctx.step}: eval loss {ctx.eval_loss:.4f}")
            return
        total = "?" if self.total is None else str(self.total)
        text = f"step {ctx.step:>{len(total)}}/{total}  loss {_number(ctx.loss)}"
        if ctx.eval_loss is not None:
            text += f"  eval loss {ctx.eval_loss:.4f}"
        self.line(f"{text}  {rate} samples/s  {format_elapsed(self.elapsed)}")

    async def _on_checkpoint(self, ctx: CheckpointContext) -> None:
        self.line(f"checkpoint at step {ctx.step}")
        for prompt in self.samples:
            messages = [{"role": "user", "content": prompt}]
            try:
                answer = await ctx.infer(
                    messages, max_tokens=self.max_tokens, temperature=self.temperature
                )
            except ArkorError as exc:
                self.line(f"  sample failed: {exc}")
                continue
            text = answer.text or ""
            self.history.samples.append((ctx.step, prompt, text))
            self.line(f"  > {prompt}")
            for part in text.splitlines() or [""]:
                self.line(f"  < {part}")

    def _on_completed(self, ctx: CompletedContext) -> None:
        if self.total is not None:
            self._update(completed=self.total)
        self.line(f"completed job {ctx.job.id} in {format_elapsed(self.elapsed)}")

    def _on_failed(self, ctx: FailedContext) -> None:
        self.line(f"failed job {ctx.job.id}: {ctx.error}")

    def _on_cancelled(self, ctx: CancelledContext) -> None:
        self.line(f"cancelled job {ctx.job.id}")
