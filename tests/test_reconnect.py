from __future__ import annotations

import random

import pytest

from arkor_trio import ConfigError, ReconnectPolicy
from arkor_trio.stream._reconnect import Backoff, parse_retry_after


def test_defaults_match_the_design():
    p = ReconnectPolicy()
    assert (p.initial_delay, p.max_delay, p.max_attempts) == (0.1, 30.0, None)
    assert (p.idle_timeout, p.not_found_grace, p.max_frame_bytes) == (45.0, 10.0, 1 << 20)
    assert p.buffer_size == 1024


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("initial_delay", 0),
        ("initial_delay", -1),
        ("max_delay", float("nan")),
        ("max_delay", float("inf")),
        ("idle_timeout", 0),
        ("not_found_grace", -0.1),
        ("buffer_size", 0),
        ("max_frame_bytes", True),
        ("max_attempts", -1),
        ("max_attempts", 1.5),
        ("connect_timeout", "10"),
    ],
)
def test_bad_values_name_the_field(field, value):
    with pytest.raises(ConfigError) as info:
        ReconnectPolicy(**{field: value})
    assert info.value.field == field
    assert field in str(info.value)


def test_infinite_idle_timeout_and_zero_grace_are_allowed():
    p = ReconnectPolicy(idle_timeout=float("inf"), not_found_grace=0, max_attempts=0)
    assert p.max_attempts == 0


def test_full_jitter_stays_within_the_exponential_ceiling():
    p = ReconnectPolicy(initial_delay=0.1, max_delay=2.0)
    rng = random.Random(1)
    for attempt in range(12):
        ceiling = min(2.0, 0.1 * 2**attempt)
        delays = [p.failure_delay(attempt, rng) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling * 0.8  # it is spread over the whole range
    assert p.failure_delay(10_000, rng) <= 2.0  # no overflow for huge attempts


def test_retry_after_is_capped_with_at_most_ten_percent_jitter():
    p = ReconnectPolicy(max_delay=5.0)
    rng = random.Random(2)
    assert all(3.0 <= p.retry_after_delay(3, rng) <= 3.3 for _ in range(100))
    assert all(5.0 <= p.retry_after_delay(120, rng) <= 5.5 for _ in range(100))
    assert p.retry_after_delay(-3, rng) == 0.0


def test_backoff_counts_failures_and_progress_resets():
    b = Backoff(ReconnectPolicy(max_attempts=2), random.Random(0))
    assert not b.exhausted()
    b.after_failure()
    b.after_failure()
    assert b.attempt == 2
    assert b.exhausted()
    assert b.after_progress(None) == 0.0
    assert b.attempt == 0
    assert not b.exhausted()


def test_progress_waits_the_server_retry_capped():
    b = Backoff(ReconnectPolicy(max_delay=2.0), random.Random(0))
    assert b.after_progress(250) == 0.25
    assert b.after_progress(60_000) == 2.0


def test_unlimited_attempts_never_exhaust():
    b = Backoff(ReconnectPolicy(), random.Random(0))
    for _ in range(100):
        b.after_failure()
    assert not b.exhausted()


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("7", 7.0),
        (" 0 ", 0.0),
        ("-1", None),
        ("1.5", None),
        ("soon", None),
        ("Wed, 21 Oct 2015 07:28:10 GMT", 10.0),
        ("Wed, 21 Oct 2015 07:27:00 GMT", 0.0),
    ],
)
def test_parse_retry_after(header, expected):
    now = 1445412480.0  # 2015-10-21 07:28:00 UTC
    assert parse_retry_after(header, now=now) == expected
