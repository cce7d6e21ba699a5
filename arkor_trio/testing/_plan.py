"""The fault model of the chaos proxy: fault classes, :class:`Plan`, and the per-connection cursor.

A *step* is what one accepted connection gets: a tuple of faults holding at most one *action*
(:class:`CutAfterEvents`, :class:`CutAfterBytes`, :class:`Stall`, :class:`Refuse`,
:class:`Status`, :class:`DropInHeaders`)
and at most one of each *shaping* fault (:class:`Latency`, :class:`Throttle`). A :class:`Plan` is an
ordered list of steps, one per connection, with a default step for the connections beyond it; or,
made with :meth:`Plan.random`, a seeded draw among steps for each connection. With ``only``, a
plan applies to the requests whose target matches (say, the event stream) and no others.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Sequence
from typing import Any, Literal, TypeAlias

import attrs

from .._errors import ConfigError

__all__ = [
    "CutAfterBytes",
    "CutAfterEvents",
    "CutMode",
    "DropInHeaders",
    "Fault",
    "Latency",
    "PassThrough",
    "Plan",
    "PlanCursor",
    "Refuse",
    "Stall",
    "Status",
    "Step",
    "Throttle",
    "action_of",
]

CutMode: TypeAlias = Literal["clean", "mid_frame", "reset", "after_id"]
_CUT_MODES = ("clean", "mid_frame", "reset", "after_id")


def _at_least(low: float) -> Any:
    def check(instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float) or not value >= low:
            name = f"{type(instance).__name__}.{attribute.name}"
            raise ConfigError(f"{name} must be a number >= {low}, got {value!r}", field=name)
        if not math.isfinite(value):
            name = f"{type(instance).__name__}.{attribute.name}"
            raise ConfigError(f"{name} must be finite, got {value!r}", field=name)

    return check


@attrs.frozen
class CutAfterEvents:
    """Forward ``k`` complete SSE frames, then cut the connection.

    Modes: ``"clean"`` closes right after frame ``k`` (with the terminating zero-length chunk when
    ``graceful``); ``"mid_frame"`` sends a strict prefix (half) of frame ``k + 1`` then closes;
    ``"reset"`` does the same but aborts with a TCP RST; ``"after_id"`` sends the next frame that
    carries an ``id`` field up to and including its ``id`` line, then closes (id-less frames such as
    pings before it are passed whole). A stream that ends before the cut point is passed unchanged.
    """

    k: int = attrs.field(validator=_at_least(0))
    mode: CutMode = attrs.field(default="clean", kw_only=True)
    graceful: bool = attrs.field(default=False, kw_only=True)

    def __attrs_post_init__(self) -> None:
        if self.mode not in _CUT_MODES:
            raise ConfigError(
                f"CutAfterEvents.mode must be one of {', '.join(_CUT_MODES)}; got {self.mode!r}",
                field="CutAfterEvents.mode",
            )


@attrs.frozen
class CutAfterBytes:
    """Forward ``low`` bytes of the response, then close the connection: a link that passes
    only so much per connection, wherever that falls (inside a frame or message, mostly).

    With ``high``, each connection draws its count uniformly in ``low..high`` from the
    connection's seeded generator (the proxy's ``seed`` and the connection's index: the same
    run gives the same cuts). The bytes counted are the body's (de-chunked; the cut sends no
    last chunk) or, for a WebSocket, everything after the ``101`` head (frames of any kind; no
    close frame is sent). A response shorter than that passes unchanged.
    """

    low: int = attrs.field(validator=_at_least(0))
    high: int | None = attrs.field(default=None, kw_only=True)

    def __attrs_post_init__(self) -> None:
        if self.high is not None:
            _at_least(self.low)(self, attrs.fields(CutAfterBytes).high, self.high)

    def draw(self, rng: random.Random) -> int:
        """The byte count for one connection."""
        return self.low if self.high is None else rng.randint(self.low, int(self.high))


@attrs.frozen(kw_only=True)
class Stall:
    """Forward ``after_events`` frames, send nothing (not closing) for ``seconds``, then close.

    The cut time recorded is when forwarding stopped; a client that disconnects during the stall
    ends it early.
    """

    after_events: int = attrs.field(default=0, validator=_at_least(0))
    seconds: float = attrs.field(default=30.0, validator=_at_least(0))


@attrs.frozen(kw_only=True)
class Refuse:
    """Close accepted connections at once (a TCP RST when ``reset``) for ``ms`` milliseconds.

    The window starts at the first connection refused; ``ms=0`` refuses exactly one connection.
    """

    ms: float = attrs.field(default=0.0, validator=_at_least(0))
    reset: bool = False


@attrs.frozen(kw_only=True)
class Status:
    """Answer the next ``count`` requests with ``code`` and a JSON ``{"error": ...}`` body.

    Upstream is not contacted. ``retry_after`` (seconds) adds a ``Retry-After`` header.
    """

    code: int = 503
    count: int = attrs.field(default=1, validator=_at_least(1))
    retry_after: float | None = attrs.field(default=None)
    message: str | None = None

    def __attrs_post_init__(self) -> None:
        if (
            isinstance(self.code, bool)
            or not isinstance(self.code, int)
            or not (200 <= self.code <= 599)
        ):
            raise ConfigError(
                f"Status.code must be 200..599, got {self.code!r}", field="Status.code"
            )
        if self.retry_after is not None:
            _at_least(0)(self, attrs.fields(Status).retry_after, self.retry_after)


@attrs.frozen(kw_only=True)
class Latency:
    """Delay each downstream write by ``ms`` plus a seeded uniform jitter in ``±jitter_ms``.

    Writes stay in order (each waits before it is sent), so a fast upstream is slowed down too.
    """

    ms: float = attrs.field(validator=_at_least(0))
    jitter_ms: float = attrs.field(default=0.0, validator=_at_least(0))


@attrs.frozen
class Throttle:
    """Limit the downstream bandwidth to ``bytes_per_s`` (head, framing and body bytes alike)."""

    bytes_per_s: float = attrs.field(validator=_at_least(1))


@attrs.frozen(kw_only=True)
class DropInHeaders:
    """Forward the first ``fraction`` of the upstream's response head, then close."""

    fraction: float = attrs.field(default=0.5, validator=_at_least(0))

    def __attrs_post_init__(self) -> None:
        if self.fraction >= 1:
            raise ConfigError(
                f"DropInHeaders.fraction must be below 1, got {self.fraction!r}",
                field="DropInHeaders.fraction",
            )


@attrs.frozen
class PassThrough:
    """No fault: the connection is proxied unchanged."""


Fault: TypeAlias = (
    CutAfterEvents
    | CutAfterBytes
    | Stall
    | Refuse
    | Status
    | Latency
    | Throttle
    | DropInHeaders
    | PassThrough
)
Action: TypeAlias = CutAfterEvents | CutAfterBytes | Stall | Refuse | Status | DropInHeaders
Step: TypeAlias = tuple[Fault, ...]
_ACTIONS = (CutAfterEvents, CutAfterBytes, Stall, Refuse, Status, DropInHeaders)
_FAULTS = (*_ACTIONS, Latency, Throttle, PassThrough)


def action_of(step: Step) -> Action | None:
    """Return the one action fault of ``step``, or None when it only shapes or passes."""
    for fault in step:
        if isinstance(fault, _ACTIONS):
            return fault
    return None


def _as_step(item: object, where: str) -> Step:
    faults: tuple[object, ...] = (
        tuple(item) if isinstance(item, Sequence) and not isinstance(item, str) else (item,)
    )
    for fault in faults:
        if not isinstance(fault, _FAULTS):
            raise ConfigError(f"{where}: {fault!r} is not a fault", field="plan")
    step: Step = faults  # type: ignore[assignment]  # every element was checked just above
    for kinds, what in ((_ACTIONS, "action"), ((Latency,), "Latency"), ((Throttle,), "Throttle")):
        if sum(isinstance(fault, kinds) for fault in step) > 1:
            raise ConfigError(f"{where}: a step holds at most one {what}: {step!r}", field="plan")
    return step


@attrs.frozen(kw_only=True)
class Plan:
    """Which faults each accepted connection gets, in accept order; deterministic for a seed.

    Steps are consumed one per connection, except that a :class:`Status` step covers ``count``
    connections and a :class:`Refuse` step covers every connection in its window. After the last
    step, connections get ``default`` (or the steps again, when ``cycle``). A plan made with
    :meth:`random` draws each step from ``steps`` with ``random.Random(seed)`` instead.

    Attributes:
        steps: One tuple of faults per step.
        default: The step for connections beyond ``steps`` (sequential plans).
        cycle: Start over at the first step after the last.
        seed: Set for random plans: the seed of the draw.
        weights: Relative weights of ``steps`` in a random plan (None: uniform).
        events: ``(low, high)``: in a random plan, draw each cut's and stall's ``k`` in this range.
        only: A regular expression searched in each request's target (path and query), e.g.
            ``"/events/stream"``: when set, only the matching requests take steps (in the order
            their heads arrive); the others are proxied unchanged and use up no step. None:
            every connection takes a step, in accept order.
    """

    steps: tuple[Step, ...] = ()
    default: Step = (PassThrough(),)
    cycle: bool = False
    seed: int | None = None
    weights: tuple[float, ...] | None = None
    events: tuple[int, int] | None = None
    only: str | None = None

    def targets(self, target: str) -> bool:
        """Whether a request for ``target`` (path and query) takes a step from this plan."""
        return self.only is None or re.search(self.only, target) is not None

    def __attrs_post_init__(self) -> None:
        if self.only is not None:
            try:
                re.compile(self.only)
            except (re.error, TypeError) as exc:
                message = f"plan only: not a regular expression: {self.only!r} ({exc})"
                raise ConfigError(message, field="only") from None
        for index, step in enumerate(self.steps):
            _as_step(step, f"plan step {index}")
        _as_step(self.default, "plan default")
        if self.seed is not None and not self.steps:
            raise ConfigError("a random plan needs at least one step to draw from", field="plan")
        if self.weights is not None and (
            len(self.weights) != len(self.steps) or any(w < 0 for w in self.weights)
        ):
            raise ConfigError("plan weights: one non-negative weight per step", field="weights")
        if self.events is not None and not 0 <= self.events[0] <= self.events[1]:
            raise ConfigError(
                f"plan events range must be 0 <= low <= high: {self.events}", field="events"
            )

    @classmethod
    def of(
        cls,
        *steps: Fault | Sequence[Fault],
        default: Fault | Sequence[Fault] = (),
        cycle: bool = False,
        only: str | None = None,
    ) -> Plan:
        """Build a sequential plan; a sequence of faults as one step composes them."""
        return cls(
            steps=tuple(_as_step(s, f"plan step {i}") for i, s in enumerate(steps)),
            default=_as_step(default, "plan default") or (PassThrough(),),
            cycle=cycle,
            only=only,
        )

    @classmethod
    def random(
        cls,
        kinds: Sequence[Fault | Sequence[Fault]],
        seed: int,
        *,
        weights: Sequence[float] | None = None,
        events: tuple[int, int] | None = None,
        only: str | None = None,
    ) -> Plan:
        """Build a plan drawing one of ``kinds`` per connection with ``random.Random(seed)``.

        The same seed and kinds give the same sequence of steps, whatever the timing.
        """
        return cls(
            steps=tuple(_as_step(s, f"plan kind {i}") for i, s in enumerate(kinds)),
            seed=seed,
            weights=None if weights is None else tuple(weights),
            events=events,
            only=only,
        )


def coerce_plan(plan: Plan | Sequence[Fault | Sequence[Fault]] | None) -> Plan:
    """Accept a :class:`Plan`, a sequence of per-connection faults, or None (pass everything)."""
    if plan is None:
        return Plan()
    if isinstance(plan, Plan):
        return plan
    if not isinstance(plan, list | tuple):
        message = f"plan must be a Plan or a list of per-connection faults, got {plan!r}"
        raise ConfigError(message, field="plan")
    return Plan.of(*plan)


class PlanCursor:
    """Hands out the step of each accepted connection, in accept order (see :class:`Plan`)."""

    def __init__(self, plan: Plan) -> None:
        self._plan = plan
        self._next = 0
        self._rng = random.Random(plan.seed) if plan.seed is not None else None
        self._current: Step | None = None
        self._remaining = 0
        self._until = 0.0

    def next_step(self, now: float) -> Step:
        """Return the step for a connection accepted at ``now`` (seconds on any monotonic clock)."""
        action = action_of(self._current) if self._current is not None else None
        if isinstance(action, Refuse) and now < self._until:
            return self._current  # type: ignore[return-value]  # action set implies current set
        if isinstance(action, Status) and self._remaining > 0:
            self._remaining -= 1
            return self._current  # type: ignore[return-value]  # action set implies current set
        step = self._draw()
        action = action_of(step)
        if isinstance(action, Refuse):
            self._until = now + action.ms / 1000
        elif isinstance(action, Status):
            self._remaining = action.count - 1
        self._current = step
        return step

    def _draw(self) -> Step:
        plan = self._plan
        if self._rng is None:
            if self._next >= len(plan.steps):
                if not (plan.cycle and plan.steps):
                    return plan.default
                self._next = 0
            self._next += 1
            return plan.steps[self._next - 1]
        step = self._rng.choices(plan.steps, weights=plan.weights)[0]
        if plan.events is not None:
            k = self._rng.randint(*plan.events)
            step = tuple(
                attrs.evolve(f, k=k)
                if isinstance(f, CutAfterEvents)
                else attrs.evolve(f, after_events=k)
                if isinstance(f, Stall)
                else f
                for f in step
            )
        return step
