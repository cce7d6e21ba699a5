"""``arkor-trio bench``: benchmark the resilience of any SSE client (design.md section 16).

``arkor-trio bench [--profiles ...] [--events N] [--seed S] [--deadline S] [--json FILE]
[--html FILE] [--fail-on lost,dup,corrupt] -- CLIENT_CMD ... {url} ...``: the engine lives in
``arkor_trio.testing.bench``; this module parses the options, prints the table and writes the
reports. Exit codes: 0 ok, 1 a ``--fail-on`` count is not zero, 2 bad usage (a client command
that does not exist included).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import trio

from .._errors import ConfigError

__all__ = ["add_bench_command"]

_EXIT_OK, _EXIT_FAILED, _EXIT_USAGE = 0, 1, 2
_DESCRIPTION = (
    "Run an SSE client against a scripted source through a fault-injecting proxy, one fault "
    "profile at a time, and report its reconnect gaps, lost, duplicated, corrupt and reordered "
    "events. The client prints one JSON line per event it hands to its application, "
    '{"id": ..., "event": ..., "data": ...}, and exits after the event whose data is '
    '{"final": true}. {url} in the command (and $ARKOR_BENCH_URL) is the stream URL. '
    "See docs/bench.md."
)


def _positive(kind: type, most: float) -> Any:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not 0 < value <= most:
            raise argparse.ArgumentTypeError(f"must be above 0 and at most {most:g}, got {text}")
        return value

    return parse


def add_bench_command(commands: Any) -> None:
    """Register ``bench`` on the ``arkor-trio`` sub-command parser."""
    from ..testing.bench import DEFAULT_PROFILES, FAIL_ON, PROFILES

    bench = commands.add_parser(
        "bench", help="benchmark the resilience of any SSE client", description=_DESCRIPTION
    )
    bench.add_argument(
        "--profiles", default=",".join(DEFAULT_PROFILES),
        help=f"comma-separated, of {', '.join(PROFILES)} (default: %(default)s)",
    )  # fmt: skip
    bench.add_argument(
        "--events", type=_positive(int, 1_000_000), default=200,
        help="events the source sends before the final one (default: %(default)s)",
    )  # fmt: skip
    bench.add_argument("--seed", type=int, default=1, help="seeds the faults (default: 1)")
    bench.add_argument(
        "--deadline", type=_positive(float, 86_400), default=60.0,
        help="seconds the client gets per profile before it is stopped (default: %(default)s)",
    )  # fmt: skip
    bench.add_argument("--json", metavar="FILE", help="write every figure as JSON")
    bench.add_argument("--html", metavar="FILE", help="write a self-contained HTML report")
    bench.add_argument(
        "--fail-on", default="", metavar="COUNTS",
        help=f"exit 1 when one of these counts is not zero in any profile: {', '.join(FAIL_ON)}",
    )  # fmt: skip
    bench.add_argument("command", nargs=argparse.REMAINDER, help="-- CLIENT_CMD ... {url} ...")
    bench.set_defaults(handler=_cmd_bench)


def _fail_on(text: str) -> list[str]:
    from ..testing.bench import FAIL_ON

    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    for name in names:
        if name not in FAIL_ON:
            message = f"--fail-on: unknown count {name!r} (known: {', '.join(FAIL_ON)})"
            raise ConfigError(message, field="fail-on")
    return names


def _cmd_bench(args: argparse.Namespace) -> int:
    from ..testing.bench import (
        BenchConfig,
        become_subreaper,
        check_command,
        parse_profiles,
        render_html,
        render_table,
        run_bench,
        to_json,
    )

    command = list(args.command)
    if command[:1] == ["--"]:
        command = command[1:]
    if (why := check_command(command)) is not None:
        print(f"arkor-trio bench: {why}", file=sys.stderr, flush=True)
        return _EXIT_USAGE
    fail_on = _fail_on(args.fail_on)
    config = BenchConfig(
        command=tuple(command),
        profiles=tuple(parse_profiles(args.profiles)),
        events=args.events,
        seed=args.seed,
        deadline=args.deadline,
    )
    become_subreaper()

    def progress(result: Any) -> None:
        print(f"  {result.profile}: {result.ended}", file=sys.stderr, flush=True)

    try:
        report = trio.run(lambda: run_bench(config, on_result=progress))
    except OSError as exc:  # started but failed to execute (e.g. a script with a bad #! line)
        print(f"arkor-trio bench: cannot run the client command: {exc}", file=sys.stderr)
        return _EXIT_USAGE
    print(render_table(report), flush=True)
    data = to_json(report)
    try:
        if args.json:
            Path(args.json).write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
        if args.html:
            Path(args.html).write_text(render_html(data), encoding="utf-8")
    except OSError as exc:
        print(f"arkor-trio bench: cannot write the report: {exc}", file=sys.stderr, flush=True)
        return _EXIT_USAGE
    failed = [
        f"{name} in {result.profile}"
        for result in report.results
        for name in fail_on
        if report.count(result, name)
    ]
    if failed:
        print(f"arkor-trio bench: failing on {', '.join(failed)}", file=sys.stderr, flush=True)
        return _EXIT_FAILED
    return _EXIT_OK
