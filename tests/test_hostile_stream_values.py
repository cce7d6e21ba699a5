"""Stream values that must never end ``wait()``: absurd delays clamp, undecodable payloads skip.

Each value arrives over a real socket from the scripted server (design.md section 3, rules 7
and 8): a ``retry:`` of hundreds of digits, ``Retry-After`` of 400 and 5000 digits or in the
asctime form, a ``data:`` line nested 100,000 arrays deep, a ``loss`` of 400 digits. Time is
trio's MockClock, so a 5 s ``max_delay`` takes no wall time.
"""

from __future__ import annotations

import email.utils
import itertools
import random
import time

import pytest
import trio

from arkor_trio import HuggingfaceDataset, ReconnectPolicy, create_trainer
from arkor_trio.sse import SSEDecoder
from arkor_trio.stream._reconnect import Backoff, parse_retry_after
from arkor_trio.wire._codec import MalformedPayload, decode_event_json
from tests.sse_script_server import COMPLETED, JOB_ID, STARTED, Conn, frame, log_event

MAX_DELAY = 5.0
FULL = [("started", "running"), ("log", 1), ("log", 2), ("log", 3), ("completed", 1)]
ASCTIME = "Sun Nov  6 08:49:37 1994"
ASCTIME_EPOCH = 784111777.0  # 1994-11-06 08:49:37 GMT


def frames(*ids: int) -> bytes:
    payloads = {1: STARTED, 2: log_event(1), 3: log_event(2), 4: log_event(3), 5: COMPLETED}
    return b"".join(frame(i, payloads[i]) for i in ids)


def trainer(client, recorder):
    return create_trainer(
        name="t",
        model="unsloth/gemma-4-E4B-it",
        dataset=HuggingfaceDataset("arkorlab/triage-demo"),
        callbacks=recorder.callbacks(),
        client=client,
        reconnect=ReconnectPolicy(max_delay=MAX_DELAY, idle_timeout=60.0),
    )


def gaps(server) -> list[float]:
    opens = [r.at for r in server.stream_requests()]
    return [b - a for a, b in itertools.pairwise(opens)]


# --- delays --------------------------------------------------------------------------------------


@pytest.mark.parametrize("digits", [400, 4300, 5000])
async def test_a_retry_field_of_hundreds_of_digits_waits_max_delay(
    autojump_clock, client, server, recorder, digits
):
    retry = b"retry: " + b"9" * digits + b"\n\n"
    server.conns.extend([Conn(body=[retry + frames(1, 2)]), Conn(body=[frames(3, 4, 5)])])
    await trainer(client, recorder).wait()
    assert recorder.calls == FULL
    assert gaps(server) == [pytest.approx(MAX_DELAY)]


@pytest.mark.parametrize("value", ["9" * 400, "9" * 5000, "0" * 4000 + "9" * 400])
async def test_a_retry_after_of_hundreds_of_digits_waits_max_delay(
    autojump_clock, client, server, recorder, value
):
    server.conns.extend(
        [Conn(status=503, headers={"Retry-After": value}), Conn(body=[frames(1, 2, 3, 4, 5)])]
    )
    await trainer(client, recorder).wait()
    assert recorder.calls == FULL
    (gap,) = gaps(server)
    assert MAX_DELAY <= gap <= MAX_DELAY * 1.1 + 1e-6


async def test_a_retry_after_in_asctime_form_is_honoured(autojump_clock, client, server, recorder):
    # A date three days ahead of the wall clock: the delay is capped at max_delay. Ignoring the
    # header (the old behaviour) would wait the first backoff, at most initial_delay = 0.1 s.
    ahead = time.gmtime(time.time() + 3 * 86400)
    day = f"{ahead.tm_mday:>2}"  # asctime pads the day with a space: "Nov  6"
    asctime = time.strftime(f"%a %b {day} %H:%M:%S %Y", ahead)
    server.conns.extend(
        [Conn(status=429, headers={"Retry-After": asctime}), Conn(body=[frames(1, 2, 3, 4, 5)])]
    )
    await trainer(client, recorder).wait()
    assert recorder.calls == FULL
    (gap,) = gaps(server)
    assert MAX_DELAY <= gap <= MAX_DELAY * 1.1 + 1e-6


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (ASCTIME, 10.0),
        ("Sunday, 06-Nov-94 08:49:37 GMT", 10.0),  # RFC 850
        ("Sun, 06 Nov 1994 08:49:37 GMT", 10.0),  # IMF-fixdate
        ("9" * 400, float("inf")),
        ("9" * 5000, float("inf")),
        ("000000000000000000000012", 12.0),
        ("Sun Nov 99 08:49:37 1994", None),
    ],
)
def test_parse_retry_after_forms_and_sizes(header, expected):
    assert parse_retry_after(header, now=ASCTIME_EPOCH - 10.0) == expected


def test_asctime_epoch_constant_is_right():
    assert email.utils.formatdate(ASCTIME_EPOCH, usegmt=True) == "Sun, 06 Nov 1994 08:49:37 GMT"


def test_backoff_clamps_any_server_delay():
    policy = ReconnectPolicy(max_delay=MAX_DELAY)
    backoff = Backoff(policy, random.Random(0))
    assert backoff.after_progress(10**400) == MAX_DELAY
    assert backoff.after_progress(int(MAX_DELAY * 1000)) == MAX_DELAY
    assert backoff.after_progress(1500) == 1.5
    assert MAX_DELAY <= backoff.after_failure(float("inf")) <= MAX_DELAY * 1.1


def test_the_decoder_saturates_a_retry_beyond_int_limits():
    decoder = SSEDecoder()
    decoder.feed(b"retry: " + b"7" * 5000 + b"\n")
    assert decoder.retry is not None
    assert decoder.retry > 10**4000
    decoder.feed(b"retry: 250\n")
    assert decoder.retry == 250


# --- payloads --------------------------------------------------------------------------------

DEEP = "[" * 100_000 + "]" * 100_000
HUGE_LOSS = f'{{"type": "training.log", "jobId": "{JOB_ID}", "step": 9, "loss": {"9" * 400}}}'
HUGE_EVAL = f'{{"type": "training.log", "jobId": "{JOB_ID}", "step": "9", "evalLoss": {"9" * 400}}}'


@pytest.mark.parametrize("text", [DEEP, HUGE_LOSS, HUGE_EVAL, "1" * 5000, "nope"])
def test_undecodable_payloads_are_malformed_never_another_error(text):
    with pytest.raises(MalformedPayload):
        decode_event_json(text, "1")


async def test_undecodable_frames_are_skipped_and_counted(autojump_clock, client, server, recorder):
    body = (
        frames(1, 2)
        + frame(10, DEEP, event="training.log")
        + frame(11, HUGE_LOSS, event="training.log")
        + frame(12, HUGE_EVAL, event="training.log")
        + frames(3, 4, 5)
    )
    server.conns.append(Conn(body=[body]))
    async with client.events(JOB_ID, policy=ReconnectPolicy()) as stream:
        events = [e async for e in stream]
    assert [e.event_id for e in events] == ["1", "2", "3", "4", "5"]
    assert (stream.stats.skipped, stream.stats.events) == (3, 5)


async def test_undecodable_frames_never_end_wait(autojump_clock, client, server, recorder):
    body = frames(1, 2) + frame(10, DEEP, event="x") + frame(11, HUGE_LOSS) + frames(3, 4, 5)
    server.conns.append(Conn(body=[body]))
    with trio.fail_after(30):
        result = await trainer(client, recorder).wait()
    assert result.job.status == "completed"
    assert recorder.calls == FULL
