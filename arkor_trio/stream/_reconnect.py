"""``ReconnectPolicy`` and the backoff arithmetic of the event stream (pure, no I/O).

The rules (design.md section 3.7):

* a connection that made progress (a new event queued) and then ended for any reason is followed
  by an immediate reconnect, or one after the server's ``retry:`` if it sent one;
* a failure (connect error, 5xx, 408, 429, an end without progress) waits a full-jitter
  exponential backoff ``uniform(0, min(max_delay, initial_delay * 2**attempt))``; ``Retry-After``
  on 429/503 replaces it with its value (capped at ``max_delay``) plus up to 10 % jitter;
* ``max_attempts`` counts retries: at most ``max_attempts + 1`` opens in a row without progress;
* progress resets the attempt counter;
* a wait after a connect error ends early once another stream of the run reaches the same
  origin (:mod:`._gate`: the streams of a restart's herd resume together);
* progress that did not move the resume point (frames without an ``id:``, which a reconnect
  would be sent again) earns an immediate reconnect once; while it repeats, each reconnect waits
  the failure backoff of its own counter (and at least the server's ``retry:``), so a server
  that answers one id-less frame and closes is not reconnected to in a tight loop. Progress
  that moves the resume point resets that counter.
"""

from __future__ import annotations

import datetime
import email.utils
import math
import random
import time

import attrs

from .._errors import ConfigError

__all__ = ["PERMANENT_STATUSES", "Backoff", "ReconnectPolicy", "parse_retry_after"]

#: Statuses that end a channel at once with ``ApiError`` (``ReconnectPolicy.permanent_statuses``;
#: the job stream retries a 404 for a while after creating the job: its not-found grace).
PERMANENT_STATUSES: frozenset[int] = frozenset({400, 401, 403, 404, 410, 422, 426})


# (name, zero allowed, infinity allowed)
_NUMERIC_FIELDS = (
    ("initial_delay", False, False),
    ("max_delay", False, False),
    ("idle_timeout", False, True),
    ("not_found_grace", True, False),
    ("connect_timeout", False, True),
    ("max_frame_bytes", False, False),
    ("buffer_size", False, False),
)


def _check_number(name: str, value: object, *, allow_zero: bool, allow_inf: bool) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and not math.isnan(value)
    if ok:
        assert isinstance(value, int | float)
        ok = (value >= 0 if allow_zero else value > 0) and (allow_inf or not math.isinf(value))
    if not ok:
        need = "a non-negative" if allow_zero else "a positive"
        raise ConfigError(
            f"ReconnectPolicy.{name} must be {need} number, got {value!r}", field=name
        )


@attrs.frozen(kw_only=True)
class ReconnectPolicy:
    """How an event stream reconnects; every duration is in seconds.

    Args:
        initial_delay: Base of the exponential backoff after a failure.
        max_delay: Cap of any backoff delay, ``Retry-After`` included.
        max_attempts: None for unlimited, else the number of retries without progress before
            ``ReconnectsExhausted`` (0 = never retry).
        idle_timeout: A connection that delivers no byte (pings included) for this long is dead.
        not_found_grace: How long a 404 is retried after this trainer created the job.
        connect_timeout: Bound on opening a connection (TCP, TLS and response headers).
        max_frame_bytes: Largest SSE frame accepted; a larger one drops the connection.
        buffer_size: Capacity of the channel between the reader and the consumer.
        permanent_statuses: HTTP statuses that stop the stream at once with ``ApiError``
            instead of being retried (any other non-2xx status is a failure with backoff).
    """

    initial_delay: float = 0.1
    max_delay: float = 30.0
    max_attempts: int | None = None
    idle_timeout: float = 45.0
    not_found_grace: float = 10.0
    connect_timeout: float = 10.0
    max_frame_bytes: int = 1 << 20
    buffer_size: int = 1024
    permanent_statuses: frozenset[int] = attrs.field(
        default=PERMANENT_STATUSES, converter=frozenset
    )

    def __attrs_post_init__(self) -> None:
        for status in self.permanent_statuses:
            if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599:
                raise ConfigError(
                    "ReconnectPolicy.permanent_statuses must hold HTTP error statuses "
                    f"(400-599), got {status!r}",
                    field="permanent_statuses",
                )
        for name, allow_zero, allow_inf in _NUMERIC_FIELDS:
            _check_number(name, getattr(self, name), allow_zero=allow_zero, allow_inf=allow_inf)
        limit = self.max_attempts
        if limit is not None and (
            not isinstance(limit, int) or isinstance(limit, bool) or limit < 0
        ):
            raise ConfigError(
                f"ReconnectPolicy.max_attempts must be None or an int >= 0, got {limit!r}",
                field="max_attempts",
            )

    def failure_delay(self, attempt: int, rng: random.Random) -> float:
        """Full-jitter backoff for the ``attempt``-th consecutive failure (0-based)."""
        ceiling = min(self.max_delay, self.initial_delay * 2.0 ** min(attempt, 64))
        return rng.uniform(0.0, ceiling)

    def retry_after_delay(self, retry_after: float, rng: random.Random) -> float:
        """The delay for a server-given ``Retry-After``: capped, plus up to 10 % jitter."""
        base = min(max(retry_after, 0.0), self.max_delay)
        return base + rng.uniform(0.0, base * 0.1)


#: A delta-seconds value longer than this is absurd (over 30 years): it becomes infinity, which
#: every delay rule caps at ``max_delay`` (int() would refuse 4300+ digits, float() overflow).
_MAX_DELTA_DIGITS = 9


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Parse ``Retry-After``: delta-seconds or an HTTP date; None when absent or invalid.

    The three date forms of RFC 9110 are accepted (IMF-fixdate, RFC 850, asctime); the asctime
    form carries no zone and is read as GMT, as the RFC says. A delta of absurd length is
    ``math.inf`` (callers cap it at ``ReconnectPolicy.max_delay``).
    """
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        digits = value.lstrip("0")
        return math.inf if len(digits) > _MAX_DELTA_DIGITS else float(int(digits or "0"))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # asctime: no zone, GMT by definition
        when = when.replace(tzinfo=datetime.UTC)
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


@attrs.define
class Backoff:
    """The attempt counter of one stream and the delay before its next connection."""

    policy: ReconnectPolicy
    rng: random.Random
    attempt: int = 0
    #: Connections in a row whose progress did not move the resume point.
    stalled: int = 0

    def after_progress(self, server_retry_ms: int | None, *, moved: bool = True) -> float:
        """A connection made progress and ended: reset the counter; wait ``retry:`` or nothing.

        With ``moved=False`` (its frames had no ``id:``, the resume point stayed), only the
        first such connection in a row is followed by an immediate reconnect; the next ones
        wait the failure backoff of the :attr:`stalled` count (capped at ``max_delay``).
        """
        self.attempt = 0
        retry = 0.0
        if server_retry_ms is not None:
            # Compare as int first: a retry: of hundreds of digits does not fit a float.
            if server_retry_ms >= self.policy.max_delay * 1000.0:
                retry = self.policy.max_delay
            else:
                retry = server_retry_ms / 1000.0
        if moved:
            self.stalled = 0
            return retry
        stalled, self.stalled = self.stalled, self.stalled + 1
        if stalled == 0:
            return retry
        return max(retry, self.policy.failure_delay(stalled - 1, self.rng))

    def exhausted(self) -> bool:
        """True when one more failure may not be retried."""
        limit = self.policy.max_attempts
        return limit is not None and self.attempt >= limit

    def after_failure(self, retry_after: float | None = None) -> float:
        """A connection failed: the delay before the next one; counts one attempt."""
        if retry_after is not None:
            delay = self.policy.retry_after_delay(retry_after, self.rng)
        else:
            delay = self.policy.failure_delay(self.attempt, self.rng)
        self.attempt += 1
        return delay
