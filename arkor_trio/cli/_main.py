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
import json
import logging
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._errors import ArkorError, ConfigError
from .._version import __version__
from ._bench import add_bench_command
from ._commands import (
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
from ._credentials import add_parser as add_credentials_parser
from ._fleet import add_fleet_command
from ._sessions import add_parser as add_sessions_parser
from ._signals import EXIT_TERMINATED, Terminated
from ._text import printable
from ._watch import add_watch_command

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


def _setting(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected SETTING=VALUE, got {text!r}")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw  # text: --set optim=adamw_8bit
    return key.strip(), value


# --- parser ------------------------------------------------------------------------------------


_ENV_HELP = (
    "The client commands (run, jobs, infer) connect to ARKOR_CLOUD_API_URL with ARKOR_TOKEN "
    "(or ~/.arkor/credentials.json); `arkor-trio serve` prints the exports for the local backend."
)


def _command(commands: Any, name: str, text: str, description: str | None = None) -> Any:
    """A subcommand whose ``--help`` starts with a description (its options show their defaults)."""
    return commands.add_parser(
        name, help=text, description=description or text[:1].upper() + text[1:] + "."
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
    parser.add_argument(
        "-v", "--verbose", action="count", default=0,
        help="-v: log arkor-trio's debug messages; -vv: also those of httpx and httpcore",
    )  # fmt: skip
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = _command(
        commands, "demo", "train the bundled support-triage demo on an in-process local backend"
    )
    demo.add_argument(
        "--steps", type=_positive_int, default=300, help="training steps (default: %(default)s)"
    )
    demo.add_argument(
        "--data-dir", type=Path,
        help="keep the backend's state (database, checkpoints, adapter) here; by default a "
        "temporary dir, deleted when the demo exits",
    )  # fmt: skip
    demo.set_defaults(handler=cmd_demo)

    serve = _command(
        commands, "serve", "run the local backend until Ctrl-C or SIGTERM",
        "Run the local backend until Ctrl-C or SIGTERM; it prints the two exports that point a "
        "client at it.",
    )  # fmt: skip
    serve.add_argument(
        "--host", default="127.0.0.1", help="interface to bind (default: %(default)s)"
    )
    serve.add_argument(
        "--port", type=int, default=8787, help="TCP port, 0 for any (default: %(default)s)"
    )
    serve.add_argument(
        "--data-dir", type=Path, default=DEFAULT_DATA_DIR,
        help="database, token and checkpoints (default: %(default)s)",
    )  # fmt: skip
    serve.add_argument(
        "--ping-interval", type=float, default=15.0,
        help="seconds between stream pings (default: %(default)s)",
    )  # fmt: skip
    serve.add_argument(
        "--allow-anonymous", action="store_true",
        help="answer POST /v1/auth/anonymous for the TypeScript SDK (loopback, no Origin)",
    )  # fmt: skip
    serve.add_argument(
        "--retain-events", type=_positive_int,
        help="keep only the last N events per job (default: all)",
    )  # fmt: skip
    serve.add_argument(
        "--max-concurrent-jobs", type=_positive_int, default=1, metavar="N",
        help="train at most N jobs at once; later ones wait queued, first come first served "
        "(default: %(default)s)",
    )  # fmt: skip
    serve.add_argument(
        "--backlog", type=_positive_int, metavar="N",
        help="listen backlog: connections queued until accepted, e.g. streams reconnecting "
        "after a restart (default: 2048, capped by net.core.somaxconn)",
    )  # fmt: skip
    serve.add_argument(
        "--feed-max-subscriptions", type=_positive_int, metavar="N",
        help="jobs one WebSocket feed may follow at once (default: 10000)",
    )  # fmt: skip
    serve.add_argument(
        "--feed-max-total-subscriptions", type=_positive_int, metavar="N",
        help="jobs all WebSocket feeds together may follow at once (default: 20000)",
    )  # fmt: skip
    serve.set_defaults(handler=cmd_serve)
    add_credentials_parser(commands, DEFAULT_DATA_DIR)
    add_sessions_parser(commands, DEFAULT_DATA_DIR)

    run = _command(
        commands, "run", "run the Trainer a Python file defines (start + wait, with progress)",
        "Run the Trainer a Python file defines: start it, follow it with a progress display, "
        "print a summary. Ctrl-C or SIGTERM cancels the job on the backend.",
    )  # fmt: skip
    run.add_argument("path", type=Path, help="a .py file defining `trainer = create_trainer(...)`")
    run.add_argument(
        "--sample", action="append", default=[], metavar="PROMPT",
        help="run PROMPT on every checkpoint and print the answer (repeatable)",
    )  # fmt: skip
    run.add_argument(
        "--set", action="append", default=[], metavar="SETTING=VALUE", dest="settings",
        type=_setting,
        help="override one of create_trainer's training arguments, e.g. --set max_steps=500 "
        "--set learning_rate=3e-4 (VALUE is read as JSON when it is JSON, else as text; "
        "repeatable)",
    )  # fmt: skip
    run.add_argument("--name", help="the job name (default: the file's)")
    run.add_argument(
        "--detach", action="store_true",
        help="submit the job, print its id and exit 0 without following it (it keeps training; "
        "`jobs watch` follows every job)",
    )  # fmt: skip
    _add_json(run)
    run.set_defaults(handler=cmd_run)

    jobs = _command(commands, "jobs", "list, show, cancel jobs, print their events")
    jobs_commands = jobs.add_subparsers(dest="jobs_command", required=True, metavar="ACTION")
    jobs_list = _command(jobs_commands, "list", "the project's jobs")
    _add_json(jobs_list)
    for name, text in (
        ("show", "one job: status, times, config, checkpoints, artifacts"),
        ("cancel", "stop a job on the backend"),
    ):
        sub = _command(jobs_commands, name, text)
        sub.add_argument("id", help="the job id")
        _add_json(sub)
    events = _command(
        jobs_commands, "events", "a job's events; without --follow, the backlog until it idles"
    )
    events.add_argument("id", help="the job id")
    events.add_argument("--follow", "-f", action="store_true", help="until the job ends")
    events.add_argument("--after", metavar="EVENT_ID", help="start after this event id")
    _add_json(events)
    jobs.set_defaults(handler=cmd_jobs)
    add_watch_command(jobs_commands)
    add_fleet_command(commands)

    infer = _command(
        commands, "infer", "chat with a job's adapter",
        "Chat with a job's final adapter, or a checkpoint's (--step). A job without a final "
        "adapter (cancelled, failed, running) answers with its last checkpoint.",
    )  # fmt: skip
    infer.add_argument("--job", required=True, help="the job whose adapter answers")
    infer.add_argument(
        "--step", type=int, help="use the checkpoint of this step (default: the final adapter)"
    )
    infer.add_argument("--system", help="a system message to send first")
    infer.add_argument(
        "--max-tokens", type=_positive_int, default=80,
        help="upper bound on the answer, in tokens (characters on the local backend; "
        "default: %(default)s)",
    )  # fmt: skip
    infer.add_argument(
        "--temperature", type=float, default=0.0,
        help="sampling temperature: 0 is greedy, the model's most likely answer, its best on "
        "the local backend; higher values sample more freely (default: %(default)s)",
    )  # fmt: skip
    infer.add_argument("prompt", help="the user message")
    _add_json(infer)
    infer.set_defaults(handler=cmd_infer)

    chaos = _command(commands, "chaos", "a fault-injecting proxy in front of a backend")
    chaos.add_argument("--upstream", required=True, metavar="HOST:PORT", help="the backend")
    chaos.add_argument(
        "--listen", type=int, default=0, metavar="PORT", help="port, 0 for any (default: 0)"
    )
    chaos.add_argument(
        "--plan", default="", help="fault plan, e.g. 'cut:3,mid:2,status:503:2' (docs/cli.md)"
    )
    chaos.add_argument(
        "--only", metavar="REGEX",
        help="apply the plan only to requests whose path matches, e.g. /events/stream (default: "
        "every request, each its own connection, takes the next step)",
    )  # fmt: skip
    chaos.set_defaults(handler=cmd_chaos)
    add_bench_command(commands)
    return parser


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    notes = [" ".join(n.split()) for n in getattr(exc, "__notes__", ())]
    return printable("; ".join([text, *notes]))  # the message may quote the server


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
        level=logging.DEBUG if args.verbose >= 2 else logging.WARNING,
        format="arkor-trio: %(levelname)s %(name)s: %(message)s",
    )
    if args.verbose:  # our loggers only: httpcore alone logs dozens of lines per request
        logging.getLogger("arkor_trio").setLevel(logging.DEBUG)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except KeyboardInterrupt:
        print("arkor-trio: interrupted", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    except Terminated:
        print("arkor-trio: terminated (SIGTERM)", file=sys.stderr, flush=True)
        return EXIT_TERMINATED
    except ConfigError as exc:
        print(f"arkor-trio: error: {_one_line(exc)}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    except ArkorError as exc:
        print(f"arkor-trio: error: {_one_line(exc)}", file=sys.stderr, flush=True)
        return EXIT_FAILED
    except Exception:
        traceback.print_exc()
        return EXIT_FAILED
