"""``arkor-trio fleet``: one replica of a fleet as a process (design.md section 15).

``arkor-trio fleet --store redis://HOST:PORT/DB --namespace NAME --callbacks pkg.mod:attr
[--lease-ttl S] [--discovery-interval S] [--metrics-port PORT]`` follows every job of the
project (``ARKOR_*`` as the other client commands) with the callbacks named by ``--callbacks``
(a ``Callbacks``, a mapping of its keys, or a function returning one), sharing the jobs with
every replica of the same store and namespace. It prints a status line on stdout whenever a
figure changes (at most twice a second), saying so while it waits for Redis. SIGTERM (or
Ctrl-C) hands every job back between events and releases the leases at once, so a successor
needs no ttl wait; exit code 143 (130 for Ctrl-C). A bad ``--store`` or ``--callbacks`` is one
line on stderr and exit code 2. ``--metrics-port`` serves the replica's figures in Prometheus
text on 127.0.0.1 (:mod:`arkor_trio.cli._fleet_metrics`).
"""

from __future__ import annotations

import argparse
import importlib
import math
import signal
from typing import TYPE_CHECKING, Any

import trio

from .._errors import ConfigError
from ._signals import Terminated

if TYPE_CHECKING:
    from ..trainer._fleet import Fleet

__all__ = ["add_fleet_command"]

#: Seconds a stopping replica waits for running callbacks before it cancels them.
STOP_GRACE = 10.0


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number (0-65535), got {value}")
    return value


def add_fleet_command(commands: Any) -> None:
    """Register ``fleet`` on the top-level sub-command parser."""
    fleet = commands.add_parser(
        "fleet",
        help="follow every job of the project as one replica of a fleet (Redis)",
        description="Follow every job of the project as one replica of a fleet: jobs are "
        "shared with every replica of the same --store and --namespace, each followed by one.",
    )
    fleet.add_argument("--store", required=True, help="redis://HOST:PORT/DB")
    fleet.add_argument("--namespace", required=True, help="the fleet's name in the store")
    fleet.add_argument(
        "--callbacks", required=True, metavar="MODULE:ATTRIBUTE",
        help="a Callbacks (or a function returning one), e.g. mypkg.hooks:callbacks",
    )  # fmt: skip
    fleet.add_argument(
        "--lease-ttl", type=_seconds, default=10.0, help="seconds (default: %(default)s)"
    )
    fleet.add_argument(
        "--discovery-interval", type=_seconds, default=None,
        help="seconds between listings of the project's jobs (default: lease ttl / 2)",
    )  # fmt: skip
    fleet.add_argument(
        "--transport", choices=("auto", "feed", "sse"), default="auto",
        help="auto (default): the replica's jobs over one job feed where the backend offers "
        "it, else one stream per job; feed or sse: only that",
    )  # fmt: skip
    fleet.add_argument(
        "--metrics-port", type=_port, default=None, metavar="PORT",
        help="serve the replica's metrics (Prometheus text) on 127.0.0.1:PORT/metrics "
        "(0: a free port, printed); needs prometheus-client (the server extra)",
    )  # fmt: skip
    fleet.set_defaults(handler=_cmd_fleet)


def load_callbacks(spec: str) -> Any:
    """``package.module:attribute`` -> the callbacks it names (called if it is a function)."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise ConfigError(
            f"--callbacks must be package.module:attribute, got {spec!r}", field="callbacks"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"--callbacks: cannot import {module_name}: {exc}", field="callbacks"
        ) from None
    value = module
    for part in attribute.split("."):
        try:
            value = getattr(value, part)
        except AttributeError:
            raise ConfigError(
                f"--callbacks: {module_name} has no attribute {attribute}", field="callbacks"
            ) from None
    from ..trainer._callbacks import Callbacks

    if callable(value) and not isinstance(value, Callbacks):
        value = value()
    return value


def status_line(fleet: Fleet) -> str:
    """The replica's figures as one line."""
    s = fleet.stats
    waiting = f"waiting for Redis ({s.store_error}), " if s.store_error else ""
    return (
        f"fleet {fleet.name}: {waiting}members {s.members}, held {s.held}, assigned {s.assigned}, "
        f"takeovers {s.takeovers}, lease losses {s.lease_losses}, hand-offs {s.handoffs}, "
        f"dispatched {s.dispatched}, commits {s.commits}, lag {s.lag:.1f}s, "
        f"{'one feed' if fleet.feed is not None else 'a stream per job'}"
    )


def _cmd_fleet(args: argparse.Namespace) -> int:
    from ..stream import RedisCursorStore
    from ..trainer._fleet import Fleet
    from ..wire._client import ArkorClient

    callbacks = load_callbacks(args.callbacks)
    store = RedisCursorStore(args.store, namespace=args.namespace)
    signalled: list[int] = []
    stop_metrics = None
    if args.metrics_port is not None:
        from ._fleet_metrics import serve_metrics

        url, stop_metrics = serve_metrics(args.metrics_port)
        print(f"fleet metrics: {url}", flush=True)

    async def main() -> None:
        async with ArkorClient() as client:
            fleet = Fleet(
                client,
                store=store,
                callbacks=callbacks,
                lease_ttl=args.lease_ttl,
                discovery_interval=args.discovery_interval,
                transport=args.transport,
            )
            async with trio.open_nursery() as nursery:

                async def watch_signals() -> None:
                    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                        async for signum in signals:
                            signalled.append(signum)
                            fleet.stop()  # hand back between events, release the leases
                            nursery.cancel_scope.deadline = trio.current_time() + STOP_GRACE
                            return

                async def report() -> None:
                    last = ""
                    while True:
                        line = status_line(fleet)
                        if line != last:
                            print(line, flush=True)
                            last = line
                        await trio.sleep(0.5)

                nursery.start_soon(watch_signals)
                nursery.start_soon(report)
                await fleet.run()
                print(status_line(fleet), flush=True)
                nursery.cancel_scope.cancel()

    try:
        trio.run(main)
    finally:
        if stop_metrics is not None:
            stop_metrics()
    if signalled and signalled[0] == signal.SIGINT:
        raise KeyboardInterrupt
    if signalled:
        raise Terminated
    return 0
