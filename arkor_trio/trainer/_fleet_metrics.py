"""A fleet's figures (:class:`FleetStats`) as OpenTelemetry instruments, read at collection.

As for streams (:mod:`arkor_trio.stream._metrics`), the figures a replica already keeps (its
:class:`~arkor_trio.trainer._fleet.FleetStats`) are *observable* instruments: the SDK reads them
when it collects, so keeping them costs the fleet nothing, with or without an SDK. Per-event
distributions are the trainer's: every job a fleet follows is a trainer's ``wait()``, whose
dispatch lag and callback duration are recorded (sampled) as ``arkor.dispatch.lag`` and
``messaging.process.duration``.

:data:`FIGURES` is the one list of what a fleet reports: the instruments here, and the
Prometheus text of ``arkor-trio fleet --metrics-port`` (``arkor_trio.cli._fleet_metrics``),
are made from it. No attribute: a process's fleets are summed (counts, jobs), or their maximum
(members, lag) or minimum (store up) is taken.

The SDK may collect from its own thread: a fleet's stats are then read in the fleet's trio
thread (``trio.from_thread``), so they are always one consistent snapshot.
"""

from __future__ import annotations

import threading
import weakref
from typing import TYPE_CHECKING, Any, Protocol

import attrs
import trio
from opentelemetry import metrics as otel

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

__all__ = ["FIGURES", "FleetFigure", "FleetStats", "figures", "register", "release", "track"]


@attrs.frozen
class FleetStats:
    """A replica's counters (a snapshot).

    Attributes:
        held: Jobs whose lease this replica holds now.
        assigned: Jobs the assignment gives this replica now (held or being acquired).
        members: Live replicas, this one included.
        takeovers: Leases acquired on jobs another holder had (token > 1, not our own).
        lease_losses: Follows that stopped because the lease was lost (expired, taken over,
            the store unreachable past the ttl).
        handoffs: Jobs handed to another replica between events.
        dispatched: Callbacks this replica ran to completion.
        commits: Cursor commits (one per handled event) the store accepted.
        commits_refused: Commits the store refused because the lease was lost (fencing).
        lag: Seconds the longest-waiting job assigned to this replica has gone without being
            held here (0 when every assigned job is held): the follow lag after a takeover.
        store_error: Why the shared store cannot be reached: the first failure (a heartbeat
            or discovery that failed or went unanswered within the ttl) since it last
            answered; None while it answers.
    """

    held: int = 0
    assigned: int = 0
    members: int = 0
    takeovers: int = 0
    lease_losses: int = 0
    handoffs: int = 0
    dispatched: int = 0
    commits: int = 0
    commits_refused: int = 0
    lag: float = 0.0
    store_error: str | None = None


class FleetFigure(Protocol):
    """What a figure is read from: a fleet (its ``stats``; see :class:`Fleet`)."""

    @property
    def stats(self) -> Any: ...


#: field -> (instrument name, kind, unit, description, how a process's fleets combine).
FIGURES: Mapping[str, tuple[str, str, str, str, str]] = {
    "held": ("arkor.fleet.jobs.held", "gauge", "{job}",
             "Jobs whose lease this replica holds.", "sum"),
    "assigned": ("arkor.fleet.jobs.assigned", "gauge", "{job}",
                 "Jobs the assignment gives this replica (held or being acquired).", "sum"),
    "members": ("arkor.fleet.members", "gauge", "{replica}",
                "Live replicas of the fleet as this replica sees them, itself included.", "max"),
    "lag": ("arkor.fleet.lag", "gauge", "s",
            "Seconds the longest-waiting job assigned here has gone without being held here "
            "(the follow lag after a takeover).", "max"),
    "store_up": ("arkor.fleet.store.up", "gauge", "1",
                 "1 while the shared store answers, 0 while the replica waits for it.", "min"),
    "takeovers": ("arkor.fleet.takeovers", "counter", "{takeover}",
                  "Leases acquired on jobs another replica held.", "sum"),
    "lease_losses": ("arkor.fleet.lease.losses", "counter", "{loss}",
                     "Follows stopped because the lease was lost (expired, taken over, the "
                     "store unreachable past the ttl).", "sum"),
    "handoffs": ("arkor.fleet.handoffs", "counter", "{handoff}",
                 "Jobs handed to another replica between events.", "sum"),
    "dispatched": ("arkor.fleet.dispatched", "counter", "{callback}",
                   "Callbacks this replica ran to completion.", "sum"),
    "commits": ("arkor.fleet.commits", "counter", "{commit}",
                "Cursor commits the store accepted.", "sum"),
    "commits_refused": ("arkor.fleet.commits.refused", "counter", "{commit}",
                        "Commits refused because the lease was lost (fencing: the event is "
                        "not recorded as handled here; the job's new holder delivers it).",
                        "sum"),
}  # fmt: skip
_COMBINE: dict[str, Callable[[Iterable[float]], float]] = {"sum": sum, "max": max, "min": min}


def _values(stats: Any) -> dict[str, float]:
    values = {field: float(getattr(stats, field, 0)) for field in FIGURES if field != "store_up"}
    values["store_up"] = 0.0 if stats.store_error else 1.0
    return values


class _Fleets:
    """Live fleets (with their trio token) and the folded counts of ended ones."""

    def __init__(self) -> None:
        self._live: weakref.WeakKeyDictionary[Any, trio.lowlevel.TrioToken] = (
            weakref.WeakKeyDictionary()
        )
        self._folded: dict[str, float] = {}
        # The counts of each fleet already folded (a fleet may run again: they are cumulative).
        self._base: weakref.WeakKeyDictionary[Any, dict[str, float]] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def add(self, fleet: FleetFigure, token: trio.lowlevel.TrioToken) -> None:
        with self._lock:
            self._live[fleet] = token

    def release(self, fleet: FleetFigure) -> None:
        values = _values(fleet.stats)  # called in the fleet's trio thread
        with self._lock:
            if self._live.pop(fleet, None) is None:
                return
            base = self._base.setdefault(fleet, {})
            for field, (_, kind, *_rest) in FIGURES.items():
                if kind == "counter":
                    new = values[field] - base.get(field, 0.0)
                    self._folded[field] = self._folded.get(field, 0.0) + new
                    base[field] = values[field]

    def totals(self) -> dict[str, float]:
        """Every figure over this process's fleets (counters: ended fleets' counts included)."""
        with self._lock:
            live = [(fleet, token, dict(self._base.get(fleet, {}))) for fleet, token in
                    self._live.items()]  # fmt: skip
            folded = dict(self._folded)
        each = []
        for fleet, token, base in live:
            values = _read(fleet, token)
            if values is not None:
                each.append({k: v - base.get(k, 0.0) for k, v in values.items()})
        out: dict[str, float] = {}
        for field, (_, kind, _unit, _doc, combine) in FIGURES.items():
            seen = [v[field] for v in each]
            if kind == "counter":
                out[field] = folded.get(field, 0.0) + sum(seen)
            elif seen:
                out[field] = _COMBINE[combine](seen)
        return out


def _read(fleet: FleetFigure, token: trio.lowlevel.TrioToken) -> dict[str, float] | None:
    """The fleet's figures, read in its own trio thread; None once its run has ended."""
    try:
        here = trio.lowlevel.current_trio_token()
    except RuntimeError:
        here = None
    if here is token:
        return _values(fleet.stats)
    try:
        return trio.from_thread.run_sync(lambda: _values(fleet.stats), trio_token=token)
    except (trio.RunFinishedError, RuntimeError):
        return None


_FLEETS = _Fleets()


def track(fleet: FleetFigure) -> None:
    """Report ``fleet``'s figures from now on (called in its run, in its trio thread)."""
    _FLEETS.add(fleet, trio.lowlevel.current_trio_token())


def release(fleet: FleetFigure) -> None:
    """``fleet``'s run ended: keep its final counts in the totals."""
    _FLEETS.release(fleet)


def figures() -> dict[str, float]:
    """Every figure of :data:`FIGURES` over this process's fleets (gauges only while one runs)."""
    return _FLEETS.totals()


def _observer(field: str) -> Any:
    def observe(options: otel.CallbackOptions) -> Iterable[otel.Observation]:
        value = _FLEETS.totals().get(field)
        if value is not None:
            yield otel.Observation(value)

    return observe


def register(meter: otel.Meter) -> None:
    """Create the fleet instruments on ``meter`` (done once on the ``arkor_trio`` meter)."""
    for field, (name, kind, unit, description, _combine) in FIGURES.items():
        create = (
            meter.create_observable_counter if kind == "counter" else meter.create_observable_gauge
        )
        create(name, callbacks=[_observer(field)], unit=unit, description=description)


register(otel.get_meter("arkor_trio"))
