"""The ``arkor-trio`` command line: demo, serve, run, jobs, infer, chaos.

``main(argv)`` parses the arguments, runs one command in its own ``trio.run`` and returns the exit
code: 0 ok, 1 a job failed or was cancelled / an API or stream error, 2 a usage or configuration
error, 130 interrupted (Ctrl-C; the job being followed is cancelled on the backend first).
Library errors (:class:`~arkor_trio.ArkorError`) are printed as one line on stderr, without a
traceback. ``--help``, ``jobs`` and ``infer`` need only the core dependencies: NumPy, hypercorn
and rich are imported by the commands that use them. See docs/cli.md.
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING

from ._cli_commands import (
    DEFAULT_DATA_DIR,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    cmd_chaos,
    cmd_demo,
    cmd_infer,
    cmd_jobs,
    cmd_run,
    cmd_serve,
)
from ._cli_watch import add_watch_command
from ._errors import ArkorError, ConfigError
from ._version import __version__

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["DEFAULT_DATA_DIR", "build_parser", "main"]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


# --- parser ------------------------------------------------------------------------------------


_ENV_HELP = (
    "The client commands (run, jobs, infer) connect to ARKOR_CLOUD_API_URL with ARKOR_TOKEN "
    "(or ~/.arkor/credentials.json); `arkor-trio serve` prints the exports for the local backend."
)


def _add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``arkor-trio`` (each subcommand sets ``handler``)."""
    parser = argparse.ArgumentParser(
        prog="arkor-trio",
        description="Fine-tune with Arkor from the terminal, or locally with the NumPy backend.",
        epilog=_ENV_HELP + " Exit codes: 0 ok, 1 job failed or API error, 2 usage or "
        "configuration error, 130 interrupted.",
    )
    parser.add_argument("--version", action="version", version=f"arkor-trio {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser(
        "demo", help="train the bundled support-triage demo on an in-process local backend"
    )
    demo.add_argument("--steps", type=_positive_int, default=300, help="training steps (300)")
    demo.add_argument(
        "--data-dir", type=Path, help="keep the backend's state here (default: a temporary dir)"
    )
    demo.set_defaults(handler=cmd_demo)

    serve = commands.add_parser("serve", help="run the local backend until Ctrl-C")
    serve.add_argument("--host", default="127.0.0.1", help="interface to bind (127.0.0.1)")
    serve.add_argument("--port", type=int, default=8787, help="TCP port, 0 for any (8787)")
    serve.add_argument(
        "--data-dir", type=Path, help=f"database, token and checkpoints ({DEFAULT_DATA_DIR})"
    )
    serve.add_argument(
        "--ping-interval", type=float, default=15.0, help="seconds between stream pings (15)"
    )
    serve.add_argument("--retain-events", type=_positive_int, help="keep the last N events per job")
    serve.set_defaults(handler=cmd_serve)

    run = commands.add_parser(
        "run", help="run the Trainer a Python file defines (start + wait, with progress)"
    )
    run.add_argument("path", type=Path, help="a .py file defining `trainer = create_trainer(...)`")
    run.add_argument(
        "--sample", action="append", default=[], metavar="PROMPT",
        help="run PROMPT on every checkpoint and print the answer (repeatable)",
    )  # fmt: skip
    _add_json(run)
    run.set_defaults(handler=cmd_run)

    jobs = commands.add_parser("jobs", help="list, show, cancel jobs, print their events")
    jobs_commands = jobs.add_subparsers(dest="jobs_command", required=True, metavar="ACTION")
    jobs_list = jobs_commands.add_parser("list", help="the project's jobs")
    _add_json(jobs_list)
    for name, text in (("show", "one job"), ("cancel", "stop a job on the backend")):
        sub = jobs_commands.add_parser(name, help=text)
        sub.add_argument("id", help="the job id")
        _add_json(sub)
    events = jobs_commands.add_parser(
        "events", help="a job's events; without --follow, the backlog until the stream idles"
    )
    events.add_argument("id", help="the job id")
    events.add_argument("--follow", "-f", action="store_true", help="until the job ends")
    events.add_argument("--after", metavar="EVENT_ID", help="start after this event id")
    _add_json(events)
    jobs.set_defaults(handler=cmd_jobs)
    add_watch_command(jobs_commands)

    infer = commands.add_parser("infer", help="chat with a job's adapter")
    infer.add_argument("--job", required=True, help="the job whose adapter answers")
    infer.add_argument("--step", type=int, help="use the checkpoint of this step, not the final")
    infer.add_argument("--system", help="a system message to send first")
    infer.add_argument("--max-tokens", type=_positive_int, help="upper bound on the answer")
    infer.add_argument("--temperature", type=float, help="sampling temperature (0: greedy)")
    infer.add_argument("prompt", help="the user message")
    _add_json(infer)
    infer.set_defaults(handler=cmd_infer)

    chaos = commands.add_parser("chaos", help="a fault-injecting proxy in front of a backend")
    chaos.add_argument("--upstream", required=True, metavar="HOST:PORT", help="the backend")
    chaos.add_argument("--listen", type=int, default=0, metavar="PORT", help="port (0: any)")
    chaos.add_argument(
        "--plan", default="", help="fault plan, e.g. 'cut:3,mid:2,status:503:2' (docs/cli.md)"
    )
    chaos.set_defaults(handler=cmd_chaos)
    return parser


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    notes = [" ".join(n.split()) for n in getattr(exc, "__notes__", ())]
    return "; ".join([text, *notes])


def main(argv: list[str] | None = None) -> int:
    """Run ``arkor-trio`` with ``argv`` (default ``sys.argv[1:]``); return the exit code.

    Returns:
        0 ok; 1 a job failed or was cancelled, or an API/stream error; 2 bad usage or
        configuration (including a bad chaos plan); 130 interrupted by Ctrl-C.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error (argparse printed it)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="arkor-trio: %(levelname)s %(name)s: %(message)s",
    )
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except KeyboardInterrupt:
        print("arkor-trio: interrupted", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    except ConfigError as exc:
        print(f"arkor-trio: error: {_one_line(exc)}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    except ArkorError as exc:
        print(f"arkor-trio: error: {_one_line(exc)}", file=sys.stderr, flush=True)
        return EXIT_FAILED
    except Exception:
        traceback.print_exc()
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
