"""Metrics through the OpenTelemetry API: a no-op until the application installs an SDK.

The library imports only ``opentelemetry-api``; an application that wants the figures installs
``opentelemetry-sdk`` and a reader/exporter (docs/observability.md). Two kinds of instrument:

* **Counts** (connections, failures, events, duplicates, bytes, frames, resets) are *observable*
  counters: every channel already keeps them in its :class:`~arkor_trio.stream.StreamCounters`,
  and the SDK reads them, summed by transport, when it collects. Recording them costs the hot
  path nothing, with or without an SDK. A channel registers its counters (:func:`track`) when it
  opens and folds their final values into the totals when it closes (:func:`release`), so the
  sums never go backwards.
* **Distributions and rare events** (the reconnect gap, reconnects by cause, dispatch lag,
  callback duration, lease acquisitions, takeovers and losses) are recorded as they happen
  through :data:`METRICS`; the per-event ones (dispatch lag, callback duration) only while an
  SDK is installed (:func:`recording`).

Attributes stay bounded: ``arkor.transport`` (``sse``, ``websocket``), ``arkor.reconnect.cause``
(:data:`CAUSES`) and ``arkor.lease.event``; never a job id or a URL.
"""

from __future__ import annotations

import threading
import weakref
from typing import TYPE_CHECKING, Any, Protocol

from opentelemetry import metrics as otel

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

__all__ = [
    "CAUSES",
    "COUNTED",
    "METRICS",
    "CounterSource",
    "Metrics",
    "recording",
    "release",
    "track",
]

#: The reconnect causes (``arkor.reconnect.cause``).
CAUSES = ("clean_end", "cut_mid_frame", "error", "idle_timeout", "status")
#: StreamCounters fields exported as observable counters: field -> (name, unit, description).
COUNTED: Mapping[str, tuple[str, str, str]] = {
    "connections": (
        "arkor.stream.connections",
        "{connection}",
        "Connections that got a 2xx answer (the first and every reconnect).",
    ),
    "failures": (
        "arkor.stream.failures",
        "{failure}",
        "Connection attempts or connections that counted as failures (backoff applies).",
    ),
    "events": (
        "messaging.client.consumed.messages",
        "{message}",
        "Events handed to the consumer (duplicates and pings excluded).",
    ),
    "duplicates": (
        "arkor.stream.duplicates",
        "{message}",
        "Frames dropped as already delivered (a replay after a reconnect).",
    ),
    "bytes": ("arkor.stream.received.bytes", "By", "Body bytes received."),
    "frames": ("arkor.stream.frames", "{frame}", "Frames decoded, pings and control included."),
    "resets": (
        "arkor.stream.resets",
        "{reset}",
        "History resets: the server could not replay from the cursor.",
    ),
}


class CounterSource(Protocol):
    """What :func:`track` reads: a channel's counters (attribute per :data:`COUNTED` field)."""

    transport: str


class _Tracker:
    """Live counter objects and the folded totals of released ones, summed by transport."""

    def __init__(self) -> None:
        # By id: counters are attrs classes with value equality, so not hashable.
        self._live: weakref.WeakValueDictionary[int, Any] = weakref.WeakValueDictionary()
        self._folded: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()  # the SDK may collect from its own thread

    def add(self, source: CounterSource) -> None:
        with self._lock:
            self._live[id(source)] = source

    def release(self, source: CounterSource) -> None:
        with self._lock:
            if self._live.pop(id(source), None) is not source:
                return
            for field in COUNTED:
                key = (field, source.transport)
                self._folded[key] = self._folded.get(key, 0) + int(getattr(source, field, 0))

    def totals(self, field: str) -> dict[str, int]:
        """``field`` summed over live and released sources, by transport."""
        with self._lock:
            sums = {t: n for (f, t), n in self._folded.items() if f == field}
            for source in list(self._live.values()):
                transport = source.transport
                sums[transport] = sums.get(transport, 0) + int(getattr(source, field, 0))
            return sums


_TRACKER = _Tracker()


def track(source: CounterSource) -> None:
    """Count ``source``'s fields in the observable counters from now on (see the module doc)."""
    _TRACKER.add(source)


def release(source: CounterSource) -> None:
    """``source`` is done (its channel closed): keep its final counts in the totals."""
    _TRACKER.release(source)


def _observer(field: str) -> Any:
    def observe(options: otel.CallbackOptions) -> Iterable[otel.Observation]:
        for transport, value in _TRACKER.totals(field).items():
            yield otel.Observation(value, {"arkor.transport": transport})

    return observe


class Metrics:
    """The instruments, created once from the ``arkor_trio`` meter (proxies until an SDK)."""

    def __init__(self, meter: otel.Meter) -> None:
        for field, (name, unit, description) in COUNTED.items():
            meter.create_observable_counter(
                name, callbacks=[_observer(field)], unit=unit, description=description
            )
        self.reconnects = meter.create_counter(
            "arkor.stream.reconnects",
            unit="{reconnect}",
            description="Connections that ended and were followed by a reconnect, by cause.",
        )
        self.gap = meter.create_histogram(
            "arkor.stream.reconnect.gap",
            unit="s",
            description="From a connection's end to the next successful open.",
        )
        self.dispatch_lag = meter.create_histogram(
            "arkor.dispatch.lag",
            unit="s",
            description="From the event's own time to the start of its callback.",
        )
        self.callback_duration = meter.create_histogram(
            "messaging.process.duration",
            unit="s",
            description="How long the callbacks of one event ran.",
        )
        self.leases = meter.create_counter(
            "arkor.lease.events",
            unit="{lease}",
            description="Lease acquisitions, takeovers and losses of cursor-store leases.",
        )

    def reconnect(self, transport: str, cause: str) -> None:
        """A connection ended for ``cause`` (one of :data:`CAUSES`) and the channel reconnects."""
        self.reconnects.add(1, {"arkor.transport": transport, "arkor.reconnect.cause": cause})

    def reopened(self, transport: str, gap: float) -> None:
        """A reconnect succeeded ``gap`` seconds after the previous connection ended."""
        self.gap.record(gap, {"arkor.transport": transport})

    def lease(self, event: str) -> None:
        """A lease was ``acquired``, ``taken_over`` (from a holder that lapsed) or ``lost``."""
        self.leases.add(1, {"arkor.lease.event": event})


METRICS = Metrics(otel.get_meter("arkor_trio"))


def recording() -> bool:
    """Whether an SDK is installed (per-event histograms are recorded only then)."""
    provider = otel.get_meter_provider()
    return type(provider).__name__ not in ("_ProxyMeterProvider", "NoOpMeterProvider")
