"""``arkor-trio chaos``: the chaos proxy from the command line, with a small text syntax for plans.

Plan syntax: comma-separated steps, one per connection; ``+`` composes faults on one connection::

    pass                      no fault
    cut:K[:graceful]          close after K frames (graceful: with the terminating chunk)
    mid:K  reset:K  afterid:K half of frame K+1 then close / then RST; or up to its id line
    stall:K:S                 after K frames send nothing for S seconds, then close
    refuse:MS[:reset]         close (or RST) every connection for MS milliseconds
    status:CODE[:N[:RETRY]]   answer N requests with CODE (Retry-After: RETRY whole seconds)
    latency:MS[:JITTER]       delay each write by MS +- JITTER milliseconds
    throttle:BYTES_PER_S      limit bandwidth
    headers[:FRACTION]        send part of the response head, then close

and two whole-plan options: ``cycle`` (repeat the steps) and ``mix:seed=N[:events=LO-HI]`` (draw
a step per connection, seeded). Example: ``cut:3,mid:2,stall:1:5,status:503:2:1,mix:seed=1``.

Steps go to connections in accept order, and every request is a connection of its own (the proxy
closes after each response): ``GET /v1/me`` and ``POST /v1/jobs`` take steps too. ``only`` (the
CLI's ``--only REGEX``) aims the plan at the requests whose target matches, e.g.
``/events/stream``; the others pass unchanged and take no step.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs
import trio

from .._errors import ConfigError
from ._plan import (
    CutAfterEvents,
    CutMode,
    DropInHeaders,
    Fault,
    Latency,
    PassThrough,
    Plan,
    Refuse,
    Stall,
    Status,
    Step,
    Throttle,
)
from ._proxy import open_chaos_proxy, parse_upstream

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["chaos_main", "parse_plan", "serve_chaos"]

_CUTS: dict[str, CutMode] = {
    "cut": "clean",
    "mid": "mid_frame",
    "reset": "reset",
    "afterid": "after_id",
    "after_id": "after_id",
}
# name -> (least, most) number of arguments
_ARITY = {
    "pass": (0, 0),
    **dict.fromkeys(_CUTS, (1, 2)),
    "stall": (2, 2),
    "refuse": (1, 2),
    "status": (1, 3),
    "latency": (1, 2),
    "throttle": (1, 1),
    "headers": (0, 1),
}


class _TokenError(ConfigError):
    """A plan token that does not parse."""


def _bad(token: str, reason: str) -> ConfigError:
    return _TokenError(f"chaos plan: bad token {token!r}: {reason}", field="plan")


def _float(token: str, text: str, what: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise _bad(token, f"{what} must be a number, got {text!r}") from None


def _int(token: str, text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise _bad(token, f"{what} must be a whole number, got {text!r}") from None


def _fault(token: str) -> Fault:
    name, *args = token.strip().split(":")
    name = name.lower()
    if name not in _ARITY:
        raise _bad(token, f"unknown fault {name!r} (known: {', '.join(sorted(_ARITY))})")
    least, most = _ARITY[name]
    if not least <= len(args) <= most:
        raise _bad(token, f"{name} takes {least}..{most} arguments, got {len(args)}")
    try:
        return _build(token, name, args)
    except _TokenError:
        raise
    except ConfigError as exc:  # a fault's own validation, e.g. a negative K
        raise _bad(token, str(exc)) from None


def _build(token: str, name: str, args: list[str]) -> Fault:
    def flag(expected: str) -> bool:
        if args[1:] not in ([], [expected]):
            raise _bad(token, f"expected {expected!r}, got {args[1]!r}")
        return len(args) == 2

    if name in _CUTS:
        return CutAfterEvents(
            _int(token, args[0], "K"), mode=_CUTS[name], graceful=flag("graceful")
        )
    if name == "stall":
        k, seconds = _int(token, args[0], "K"), _float(token, args[1], "seconds")
        return Stall(after_events=k, seconds=seconds)
    if name == "refuse":
        return Refuse(ms=_float(token, args[0], "milliseconds"), reset=flag("reset"))
    if name == "status":
        code = _int(token, args[0], "code")
        count = _int(token, args[1], "count") if len(args) > 1 else 1
        # HTTP's Retry-After is delay-seconds, a whole number: 1.5 would be ignored by clients.
        retry = _int(token, args[2], "retry-after (seconds)") if len(args) > 2 else None
        return Status(code=code, count=count, retry_after=retry)
    if name == "latency":
        jitter = _float(token, args[1], "jitter") if len(args) > 1 else 0.0
        return Latency(ms=_float(token, args[0], "milliseconds"), jitter_ms=jitter)
    if name == "throttle":
        return Throttle(_float(token, args[0], "bytes per second"))
    if name == "headers":
        return DropInHeaders(fraction=_float(token, args[0], "fraction") if args else 0.5)
    return PassThrough()


def _mix_options(token: str) -> tuple[int, tuple[int, int] | None]:
    seed: int | None = None
    events = None
    for option in token.split(":")[1:]:
        key, _, value = option.partition("=")
        if key == "seed":
            seed = _int(token, value, "seed")
        elif key == "events":
            low, _, high = value.partition("-")
            events = (_int(token, low, "events low"), _int(token, high, "events high"))
        else:
            raise _bad(token, f"unknown mix option {key!r} (known: seed, events)")
    if seed is None:
        raise _bad(token, "mix needs seed=N")
    return seed, events


def parse_plan(text: str) -> Plan:
    """Parse the plan syntax above; an empty text passes everything through.

    Raises:
        ConfigError: Naming the bad token and why.
    """
    steps: list[Step] = []
    mix: tuple[int, tuple[int, int] | None] | None = None
    cycle = False
    for token in (t.strip() for t in text.split(",")):
        if not token:
            continue
        if token.lower() == "cycle":
            cycle = True
        elif token.lower().startswith("mix"):
            mix = _mix_options(token)
        else:
            steps.append(tuple(_fault(part) for part in token.split("+")))
    try:
        if mix is not None:
            return Plan.random(steps, seed=mix[0], events=mix[1])
        return Plan.of(*steps, cycle=cycle)
    except ConfigError as exc:
        raise ConfigError(f"chaos plan {text!r}: {exc}", field="plan") from None


async def serve_chaos(
    upstream: tuple[str, int] | str,
    listen: int,
    plan: Plan,
    *,
    host: str = "127.0.0.1",
    emit: Callable[[str], None] | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the proxy until cancelled; emit (default: print) a banner and a line per connection.

    ``task_status.started`` receives the bound port.
    """
    if emit is None:
        emit = _print
    async with open_chaos_proxy(
        upstream, plan=plan, host=host, port=listen, on_close=lambda r: emit(r.describe())
    ) as proxy:
        up_host, up_port = proxy.upstream
        emit(f"arkor-trio chaos: {proxy.url} -> {up_host}:{up_port} (Ctrl-C to stop)")
        task_status.started(proxy.port)
        await trio.sleep_forever()


def _print(line: str) -> None:
    print(line, flush=True)


def chaos_main(upstream: str, listen: int, plan: str, only: str | None = None) -> None:
    """Entry point of ``arkor-trio chaos``: run until Ctrl-C.

    ``only``: a regular expression; the plan then applies to the requests whose target matches.

    Raises:
        ConfigError: A bad ``upstream``, ``plan`` or ``only``, before anything listens.
    """
    parsed = attrs.evolve(parse_plan(plan), only=only)
    address = parse_upstream(upstream)
    try:
        trio.run(serve_chaos, address, listen, parsed)
    except KeyboardInterrupt:
        print("arkor-trio chaos: stopped", flush=True)
