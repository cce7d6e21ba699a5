"""Unit tests of the command line's pieces: the loss chart, the progress display, event lines."""

from __future__ import annotations

import io
import math
from pathlib import Path

import pytest

from arkor_trio import (
    Adapter,
    ChatCompletion,
    CheckpointContext,
    CompletedContext,
    FailedContext,
    LogContext,
    StartedContext,
    TrainingJob,
    TrainingLog,
    TrainingResult,
    UnknownEvent,
)
from arkor_trio._errors import ApiError
from arkor_trio.cli._chart import can_draw_unicode, loss_chart
from arkor_trio.cli._jobs import describe_event, event_json
from arkor_trio.cli._progress import ProgressDisplay, format_elapsed, wants_live
from arkor_trio.cli._train import print_summary

JOB = TrainingJob(id="job_1", name="demo", status="running", config={"maxSteps": 30, "model": "m"})


# --- chart -----------------------------------------------------------------------------------


def test_chart_puts_the_highest_point_top_left_and_the_lowest_bottom_right():
    lines = loss_chart([("train", [(1, 4.0), (15, 2.0), (30, 1.0)])], width=20, height=5)
    rows = lines[:5]
    assert rows[0].startswith("4.00 ┤•")
    assert rows[-1].startswith("1.00 ┤")
    assert rows[-1].endswith("•")
    assert "2.50 ┤" in rows[2]  # the middle label
    assert lines[5].strip().startswith("└")
    assert lines[6].split() == ["1", "30", "step"]
    assert lines[7].strip() == "• train"


def test_chart_joins_points_with_faint_dots_and_draws_later_series_on_top():
    lines = loss_chart(
        [("train", [(0, 2.0), (10, 2.0)]), ("eval", [(10, 2.0)])], width=11, height=3
    )
    middle = [line for line in lines if "·" in line]
    assert middle, lines
    row = middle[0]
    assert row.endswith("◆")  # the eval marker replaced the train point at step 10
    assert row.count("·") == 9
    assert "◆ eval" in lines[-1]
    assert "• train" in lines[-1]


def test_chart_in_ascii_uses_only_ascii():
    points = [(s, 5.0 / s) for s in range(1, 50)]
    lines = loss_chart([("train", points), ("eval", points[::10])], unicode=False)
    text = "\n".join(lines)
    assert text.isascii()
    assert "*" in text
    assert "o" in text


def test_chart_averages_points_sharing_a_column_and_skips_non_finite_values():
    points = [(1, 1.0), (1, 3.0), (2, math.nan), (3, 0.0)]
    lines = loss_chart([("loss", points)], width=8, height=3)
    assert lines[0].startswith("2.00 ┤•")  # the mean of 1.0 and 3.0 at step 1
    assert lines[2].startswith("0.00 ┤")
    assert lines[2].endswith("•")


@pytest.mark.parametrize(
    "series",
    [[], [("train", [])], [("train", [(1, math.nan), (2, math.inf)])]],
)
def test_chart_without_finite_points_is_empty(series):
    assert loss_chart(series) == []


def test_chart_of_a_constant_series_does_not_divide_by_zero():
    lines = loss_chart([("flat", [(1, 2.0), (5, 2.0)])], width=8, height=3)
    assert "•" in lines[1]


def test_can_draw_unicode():
    assert can_draw_unicode("utf-8")
    assert can_draw_unicode(None)
    assert not can_draw_unicode("ascii")
    assert not can_draw_unicode("no-such-codec")


# --- progress display -------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def log(step, loss=None, eval_loss=None, rate=None) -> LogContext:
    return LogContext(
        step=step,
        loss=loss,
        eval_loss=eval_loss,
        learning_rate=None,
        epoch=None,
        samples_per_second=rate,
        job=JOB,
    )


class FakeInfer:
    def __init__(self, *answers: str | Exception) -> None:
        self.answers = list(answers)
        self.calls: list[tuple[list, dict]] = []

    async def __call__(self, messages, **options) -> ChatCompletion:
        self.calls.append((messages, options))
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return ChatCompletion(text=answer)


def checkpoint(step: int, infer: FakeInfer) -> CheckpointContext:
    adapter = Adapter(kind="checkpoint", job_id="job_1", step=step)
    return CheckpointContext(step=step, adapter=adapter, job=JOB, infer=infer, artifacts=[])


def test_format_elapsed():
    assert format_elapsed(0) == "0:00:00"
    assert format_elapsed(3723.9) == "1:02:03"
    assert format_elapsed(-5) == "0:00:00"


def test_wants_live_is_false_for_files_and_dumb_terminals(monkeypatch):
    assert not wants_live(io.StringIO())

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setenv("TERM", "xterm")
    assert wants_live(Tty())
    monkeypatch.setenv("TERM", "dumb")
    assert not wants_live(Tty())


async def test_plain_display_prints_one_line_per_event_and_keeps_the_history():
    out, clock = io.StringIO(), FakeClock()
    display = ProgressDisplay(out, live=False, samples=["ticket?"], clock=clock)
    callbacks = display.callbacks()
    infer = FakeInfer("billing\nNext step: refund", ApiError(500, "boom"))
    with display:
        callbacks.on_started(StartedContext(job=JOB))
        callbacks.on_log(log(1, loss=4.5, rate=100.0))
        clock.now += 65
        callbacks.on_log(log(10, loss=2.25, eval_loss=2.5, rate=250.0))
        await callbacks.on_checkpoint(checkpoint(10, infer))
        await callbacks.on_checkpoint(checkpoint(20, infer))
        callbacks.on_log(log(40, loss=1.0))  # beyond maxSteps: the total follows
        callbacks.on_completed(CompletedContext(job=JOB, artifacts=[]))
        callbacks.on_failed(FailedContext(job=JOB, error="dataset: line 3"))
    lines = out.getvalue().splitlines()
    assert lines == [
        "started job job_1 (demo, model m)",
        "step  1/30  loss 4.5000  100.0 samples/s  0:00:00",
        "step 10/30  loss 2.2500  eval loss 2.5000  250.0 samples/s  0:01:05",
        "checkpoint at step 10",
        "  > ticket?",
        "  < billing",
        "  < Next step: refund",
        "checkpoint at step 20",
        "  sample failed: boom (HTTP 500)",
        "step 40/40  loss 1.0000  - samples/s  0:01:05",
        "completed job job_1 in 0:01:05",
        "failed job job_1: dataset: line 3",
    ]
    assert infer.calls[0] == (
        [{"role": "user", "content": "ticket?"}],
        {"max_tokens": 80, "temperature": 0.0},
    )
    history = display.history
    assert history.train == [(1, 4.5), (10, 2.25), (40, 1.0)]
    assert history.eval == [(10, 2.5)]
    assert history.samples == [(10, "ticket?", "billing\nNext step: refund")]
    assert (history.first_loss, history.last_loss) == (4.5, 1.0)
    assert display.elapsed == 65


async def test_live_display_prints_evals_and_samples_above_the_bar():
    out = io.StringIO()
    display = ProgressDisplay(out, live=True, samples=["hi"])
    callbacks = display.callbacks()
    with display:
        callbacks.on_started(StartedContext(job=JOB))
        callbacks.on_log(log(5, loss=3.0))
        callbacks.on_log(log(10, loss=2.0, eval_loss=2.5, rate=12.5))
        await callbacks.on_checkpoint(checkpoint(10, FakeInfer("answer")))
        callbacks.on_completed(CompletedContext(job=JOB, artifacts=[]))
    text = out.getvalue()
    assert "step 10: eval loss 2.5000" in text
    assert "  < answer" in text
    assert "step  5/30" not in text  # plain step lines are the bar's job here
    assert "step 30/30" in text  # the bar's final frame, completed
    assert display.history.train == [(5, 3.0), (10, 2.0)]


# --- event lines -------------------------------------------------------------------------------


def test_event_json_and_line_carry_the_sse_id_and_the_wire_names():
    event = TrainingLog(step=10, loss=1.23456789, eval_loss=None, event_id="7", job_id="job_1")
    assert event_json(event) == {"id": "7", "type": "training.log", "jobId": "job_1", "step": 10,
                                 "loss": 1.23456789}  # fmt: skip
    assert describe_event(event) == "    7  training.log  step=10 loss=1.23457"


def test_unknown_events_keep_their_own_type_and_data():
    event = UnknownEvent(type="x.new", data={"type": "x.new", "note": "two words"})
    assert event_json(event) == {"id": None, "type": "x.new", "note": "two words"}
    assert describe_event(event) == '    -  x.new  note="two words"'


@pytest.mark.parametrize(
    ("data_dir", "kept", "header", "path"),
    [
        (None, True, "artifacts (paths in the backend's data dir):", "models/j/final.npz"),
        ("/d", True, "artifacts:", "/d/models/j/final.npz"),
        (
            "/tmp/x",
            False,
            "artifacts (deleted when the demo exits: pass --data-dir DIR to keep them):",
            "/tmp/x/models/j/final.npz",
        ),
    ],
)
def test_the_summary_says_where_artifacts_are(data_dir, kept, header, path):
    out = io.StringIO()
    job = TrainingJob(id="j", name="n", status="completed")
    artifacts = [{"pathname": "models/j/final.npz", "bytes": 2_000_000}]
    display = ProgressDisplay(io.StringIO(), live=False)
    where = None if data_dir is None else Path(data_dir)
    print_summary(
        out, TrainingResult(job=job, artifacts=artifacts), display, data_dir=where, kept=kept
    )
    lines = out.getvalue().splitlines()
    assert lines[lines.index(header) + 1] == f"  {path} (2.0 MB)"
