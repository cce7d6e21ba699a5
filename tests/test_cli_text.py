"""Server-provided text in the CLI's output: control characters escaped, long values cut."""

from __future__ import annotations

import contextlib
import io
import re

from arkor_trio import ApiError, TrainingFailed, TrainingJob, UnknownEvent
from arkor_trio.cli._jobs import describe_event, jobs_list, jobs_show
from arkor_trio.cli._main import _one_line
from arkor_trio.cli._progress import ProgressDisplay
from arkor_trio.cli._text import CELL_LIMIT, VALUE_LIMIT, clip, printable

CLEAR = "\x1b[2J"  # erase the screen
TITLE = "\x1b]0;owned\x07"  # an OSC sequence: set the window title
CSI8 = "\x9b31m"  # the 8-bit CSI (C1), which some terminals honour
BIDI = "\u202e"  # right-to-left override
HOSTILE = f"a{CLEAR}b{TITLE}c{CSI8}d{BIDI}e\r\n\x00\x7f"


def assert_inert(text: str) -> None:
    """No control or format character that a terminal would act on is left, except newlines."""
    for char in text:
        assert char == "\n" or (char.isprintable() and char != BIDI), repr(char)


def test_printable_escapes_controls_and_keeps_ordinary_text():
    assert printable("support-bot v1 é 😀") == "support-bot v1 é 😀"
    escaped = printable(HOSTILE)
    assert_inert(escaped)
    assert "\n" not in escaped
    assert escaped == ("a\\x1b[2Jb\\x1b]0;owned\\x07c\\x9b31md\\u202ee\\x0d\\x0a\\x00\\x7f")
    assert printable("line 1\n\tline 2\x1b", keep_newlines=True) == "line 1\n\tline 2\\x1b"


def test_clip_bounds_the_length_and_marks_the_cut():
    assert clip("short", 10) == "short"
    assert clip("x" * 10, 10) == "x" * 10
    assert clip("x" * 11, 10) == "x" * 7 + "..."
    huge = clip("\x1b" * 4_000_000, 40)  # megabytes are cut before they are escaped
    assert len(huge) == 40
    assert huge.endswith("...")
    assert_inert(huge)


class FakeClient:
    def __init__(self, job: TrainingJob) -> None:
        self.job = job

    async def list_jobs(self) -> list[TrainingJob]:
        return [self.job]

    async def get_job(self, job_id: str) -> TrainingJob:
        return self.job

    @contextlib.asynccontextmanager
    async def events(self, job_id: str, after: str | None = None):
        async def no_events():
            return
            yield

        yield no_events()


HOSTILE_JOB = TrainingJob(
    id="job_1",
    name=HOSTILE + "n" * 4_000_000,  # a 4 MB name
    status="failed",
    error=f"boom{CLEAR}",
    config={"model": f"m{TITLE}", f"k{CLEAR}": "v" * 10_000},
    artifacts=[{"pathname": f"p{CLEAR}", "bytes": 1}],
)


async def test_jobs_list_cuts_and_escapes_every_cell():
    out = io.StringIO()
    assert await jobs_list(FakeClient(HOSTILE_JOB), out) == 0  # type: ignore[arg-type]
    text = out.getvalue()
    assert_inert(text)
    _header, row = text.splitlines()
    assert len(row) < 4 * CELL_LIMIT
    assert row.startswith("job_1  failed  a\\x1b[2Jb")
    assert re.search(r"\.\.\.\s+-$", row)


async def test_jobs_show_escapes_and_bounds_every_value():
    out = io.StringIO()
    assert await jobs_show(FakeClient(HOSTILE_JOB), out, "job_1") == 0  # type: ignore[arg-type]
    text = out.getvalue()
    assert_inert(text)
    lines = text.splitlines()
    assert all(len(line) <= VALUE_LIMIT + 12 for line in lines)
    assert "error       boom\\x1b[2J" in lines
    assert "model       m\\x1b]0;owned\\x07" in lines


def test_event_lines_escape_types_keys_and_values():
    failed = TrainingFailed(error=f"disk{CLEAR}full", event_id=f"7{TITLE}")
    line = describe_event(failed)
    assert_inert(line)
    assert "error=disk\\x1b[2Jfull" in line
    unknown = UnknownEvent(type=f"x{CLEAR}", data={f"k{TITLE}": "v" * 10_000}, event_id="8")
    line = describe_event(unknown)
    assert_inert(line)
    assert len(line) < VALUE_LIMIT + 2 * CELL_LIMIT + 10


def test_progress_lines_and_error_lines_are_escaped():
    out = io.StringIO()
    ProgressDisplay(out, live=False).line(f"failed job job_1: {HOSTILE}")
    assert_inert(out.getvalue())
    message = _one_line(ApiError(500, f"server said {CLEAR}"))
    assert_inert(message)
    assert "\\x1b[2J" in message
