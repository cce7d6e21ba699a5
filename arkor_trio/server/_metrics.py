"""``GET /metrics``: the local backend's Prometheus metrics (text format, behind the token).

One :class:`BackendMetrics` per backend, with its own registry (several backends can run in one
process, as the tests do). What it measures:

* ``arkor_backend_jobs{status}``: jobs by status, read from the store at each scrape;
* ``arkor_backend_events_appended_total``: events written to the log;
* ``arkor_backend_events_read_total``: events read from the log for SSE and WebSocket followers
  (replay and live tail alike); its rate is the replay rate while followers catch up;
* ``arkor_backend_stream_connections{transport}``: open SSE event streams and WebSocket feeds;
* ``arkor_backend_store_write_seconds``: how long one write transaction took (histogram);
* ``arkor_backend_store_refused_writes_total{reason}``: writes SQLite refused (``disk full``,
  ``database locked``, ...), each of which failed a request or a job with that reason.

The store reports through the :class:`~arkor_trio.server._store.StoreObserver` methods, from
whichever thread wrote; prometheus-client's metrics are thread-safe.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import generate_latest
from starlette.responses import Response
from starlette.routing import Route

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping

    from prometheus_client.registry import Collector
    from starlette.requests import Request
    from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["BackendMetrics", "ConnectionGauge", "metrics_route"]

#: Upper bounds (seconds) of the write-latency buckets: an append is ~70 us on a quiet disk;
#: a write that waited for another connection's lock takes up to ``busy_timeout``.
WRITE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 1.0, 5.0)
_SSE_PATH = re.compile(r"/v1/jobs/[^/]+/events/stream")
#: The statuses always reported (0 when no job has them), so a dashboard's series never vanish.
STATUSES = ("queued", "running", "completed", "failed", "cancelled")


class _JobsByStatus:
    """A collector reading the job counts from the store at scrape time."""

    def __init__(self, counts: Callable[[], Mapping[str, int]]) -> None:
        self._counts = counts

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("arkor_backend_jobs", "Jobs by status.", labels=["status"])
        counts = dict(self._counts())
        for status in sorted(set(STATUSES) | set(counts)):
            family.add_metric([status], counts.get(status, 0))
        yield family


class BackendMetrics:
    """The metrics of one local backend, in their own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        reg = self.registry
        self.events_appended = Counter(
            "arkor_backend_events_appended", "Events appended to the event log.", registry=reg
        )
        self.events_read = Counter(
            "arkor_backend_events_read",
            "Events read from the event log for SSE and WebSocket followers (replay and tail).",
            registry=reg,
        )
        self.connections = Gauge(
            "arkor_backend_stream_connections",
            "Open event-stream connections, by transport (sse, websocket).",
            ["transport"],
            registry=reg,
        )
        for transport in ("sse", "websocket"):
            self.connections.labels(transport)
        self.write_seconds = Histogram(
            "arkor_backend_store_write_seconds",
            "Duration of one write transaction of the store.",
            buckets=WRITE_BUCKETS,
            registry=reg,
        )
        self.refused_writes = Counter(
            "arkor_backend_store_refused_writes",
            "Writes the store refused (disk full, database locked, ...), by reason.",
            ["reason"],
            registry=reg,
        )
        self._jobs: Collector | None = None

    def watch_jobs(self, counts: Callable[[], Mapping[str, int]]) -> None:
        """Report ``arkor_backend_jobs`` from ``counts()`` (the store's job counts)."""
        if self._jobs is not None:
            self.registry.unregister(self._jobs)
        self._jobs = _JobsByStatus(counts)
        self.registry.register(self._jobs)

    # --- the store's observer --------------------------------------------------------------

    def on_write(self, seconds: float) -> None:
        """One write transaction committed after ``seconds``."""
        self.write_seconds.observe(seconds)

    def on_refused(self, reason: str) -> None:
        """SQLite refused a write for ``reason``."""
        self.refused_writes.labels(reason).inc()

    def on_appended(self, count: int) -> None:
        """``count`` events were appended in one transaction."""
        self.events_appended.inc(count)

    def on_read(self, count: int) -> None:
        """``count`` events were read for followers."""
        if count:
            self.events_read.inc(count)

    def exposition(self) -> bytes:
        """The metrics in Prometheus text format."""
        return generate_latest(self.registry)


class ConnectionGauge:
    """ASGI middleware counting open SSE event streams and WebSocket feed sockets."""

    def __init__(self, app: ASGIApp, metrics: BackendMetrics) -> None:
        self.app = app
        self._sse = metrics.connections.labels("sse")
        self._websocket = metrics.connections.labels("websocket")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Count the connection while the app serves it."""
        gauge = None
        if scope["type"] == "websocket":
            gauge = self._websocket
        elif scope["type"] == "http" and _SSE_PATH.fullmatch(scope.get("path", "")):
            gauge = self._sse
        if gauge is None:
            await self.app(scope, receive, send)
            return
        gauge.inc()
        try:
            await self.app(scope, receive, send)
        finally:
            gauge.dec()


def metrics_route(metrics: BackendMetrics) -> Route:
    """``GET /metrics`` (the gate in front of the app requires the bearer token)."""

    async def endpoint(request: Request) -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    return Route("/metrics", endpoint, methods=["GET"])
