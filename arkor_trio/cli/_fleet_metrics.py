"""``arkor-trio fleet --metrics-port PORT``: the replica's figures in Prometheus text format.

The figures are those of :data:`~arkor_trio.trainer._fleet_metrics.FIGURES` (the fleet's
OpenTelemetry instruments), read at each scrape by a prometheus-client collector, served on
``http://127.0.0.1:PORT/metrics`` by prometheus-client's own server thread (``PORT`` 0 picks a
free port; the command prints the URL). Names are the instruments' as an OpenTelemetry
Prometheus exporter writes them: dots to underscores, ``_seconds`` for a unit of seconds,
``_total`` on counters (``arkor.fleet.takeovers`` -> ``arkor_fleet_takeovers_total``).
prometheus-client ships with the ``server`` extra.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._errors import ConfigError
from ..trainer._fleet_metrics import FIGURES, figures

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

__all__ = ["prometheus_name", "serve_metrics"]


def prometheus_name(instrument: str, unit: str) -> str:
    """The Prometheus name of a fleet instrument (without the ``_total`` of a counter)."""
    name = instrument.replace(".", "_")
    return f"{name}_seconds" if unit == "s" else name


class _FleetCollector:
    """Reads the fleet figures at each scrape."""

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        values = figures()
        for field, (instrument, kind, unit, description, _combine) in FIGURES.items():
            if field not in values:
                continue  # a gauge while no fleet runs
            family = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
            yield family(prometheus_name(instrument, unit), description, value=values[field])


def serve_metrics(port: int) -> tuple[str, Callable[[], None]]:
    """Serve the figures on 127.0.0.1:``port``; returns the URL and a function stopping it.

    Raises:
        ConfigError: prometheus-client is missing, or the port cannot be bound.
    """
    try:
        from prometheus_client import CollectorRegistry, start_http_server
    except ImportError:
        raise ConfigError(
            "--metrics-port needs prometheus-client: pip install 'arkor-trio[server]'",
            field="metrics_port",
        ) from None
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_FleetCollector())
    try:
        server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    except OSError as exc:
        raise ConfigError(
            f"--metrics-port {port}: cannot listen on 127.0.0.1: {exc.strerror or exc}",
            field="metrics_port",
        ) from None

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(5)

    return f"http://127.0.0.1:{server.server_port}/metrics", stop
