"""The handlers of the ``arkor-trio`` commands: each runs one ``trio.run`` and returns an exit code.

They raise :class:`~arkor_trio.ArkorError` for :func:`arkor_trio.cli.main` to print as one line,
and let ``KeyboardInterrupt`` through (exit code 130), except the servers (``serve``, ``chaos``),
for which Ctrl-C is the normal way to stop (exit code 0). Optional dependencies (NumPy,
Starlette, hypercorn, rich) are imported only by the commands that need them.
"""

from __future__ import annotations

import contextlib
import signal
import sys
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import trio

from .._errors import ConfigError
from .._groups import collapse_groups

if TYPE_CHECKING:
    import argparse
    from collections.abc import Awaitable, Callable
    from typing import TextIO

    from ..trainer._trainer import Trainer

__all__ = [
    "DEFAULT_DATA_DIR",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "cmd_chaos",
    "cmd_demo",
    "cmd_infer",
    "cmd_jobs",
    "cmd_run",
    "cmd_serve",
]

#: Where ``arkor-trio serve`` keeps its state unless ``--data-dir`` says otherwise.
DEFAULT_DATA_DIR = Path("~/.arkor-trio/local")

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
_SERVER_EXTRA = "pip install 'arkor-trio[server]'"


def _trio_run(fn: Callable[[], Awaitable[int]]) -> int:
    """``trio.run(fn)``, raising a nursery group's lone error as itself."""
    with collapse_groups():
        return trio.run(fn)


async def _with_client(fn: Callable[..., Awaitable[int]], *args: Any, **kwargs: Any) -> int:
    """``fn(client, stdout, *args, **kwargs)`` with a client configured from the environment."""
    from ..wire._client import ArkorClient

    async with ArkorClient() as client:
        return await fn(client, sys.stdout, *args, **kwargs)


# --- the commands --------------------------------------------------------------------------------


def _need_server_extra(command: str) -> None:
    try:
        import hypercorn  # noqa: F401  # probing the optional dependencies only
        import numpy  # noqa: F401
        import starlette  # noqa: F401
    except ImportError as exc:
        raise ConfigError(
            f"`arkor-trio {command}` needs the server extra ({exc}): {_SERVER_EXTRA}"
        ) from None


def cmd_demo(args: argparse.Namespace) -> int:
    _need_server_extra("demo")
    from ._train import demo

    return _trio_run(partial(demo, sys.stdout, steps=args.steps, data_dir=args.data_dir))


def cmd_serve(args: argparse.Namespace) -> int:
    _need_server_extra("serve")
    data_dir = args.data_dir
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how a server stops: exit 0
        _trio_run(partial(_serve, args.host, args.port, data_dir, args.ping_interval,
                          allow_anonymous=args.allow_anonymous,
                          retain_events=args.retain_events,
                          max_concurrent_jobs=args.max_concurrent_jobs,
                          backlog=args.backlog, ws_limits=_ws_limits(args)))  # fmt: skip
    print("arkor-trio serve: stopped", flush=True)
    return EXIT_OK


def _ws_limits(args: argparse.Namespace) -> Any:
    """The feed's limits from ``--feed-max-*`` (None: the defaults)."""
    per_socket = getattr(args, "feed_max_subscriptions", None)
    total = getattr(args, "feed_max_total_subscriptions", None)
    if per_socket is None and total is None:
        return None
    from ..server import WsLimits

    changes = {"max_subscriptions": per_socket, "max_total_subscriptions": total}
    return attrs.evolve(WsLimits(), **{k: v for k, v in changes.items() if v is not None})


async def _serve(
    host: str,
    port: int,
    data_dir: Path,
    ping_interval: float,
    *,
    allow_anonymous: bool = False,
    retain_events: int | None = None,
    max_concurrent_jobs: int = 1,
    backlog: int | None = None,
    ws_limits: Any = None,
) -> int:
    """Serve until Ctrl-C (KeyboardInterrupt) or SIGTERM, shutting down cleanly on either."""
    from ..server import DEFAULT_BACKLOG, serve

    with trio.open_signal_receiver(signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            try:
                with collapse_groups():
                    run = partial(
                        serve, allow_anonymous=allow_anonymous, retain_events=retain_events,
                        max_concurrent_jobs=max_concurrent_jobs, ws_limits=ws_limits,
                        backlog=DEFAULT_BACKLOG if backlog is None else backlog,
                    )  # fmt: skip
                    await nursery.start(run, host, port, data_dir, ping_interval)
            except OSError as exc:  # the port is taken, the data dir cannot be made or written
                raise ConfigError(_startup_error(host, port, data_dir, exc)) from None
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break
    return EXIT_OK


def _startup_error(host: str, port: int, data_dir: Path, exc: OSError) -> str:
    reason = exc.strerror or str(exc)
    if exc.filename is not None:
        where = f"{reason}: {exc.filename}"
        return f"cannot use data dir {data_dir}: {where} (choose one with --data-dir)"
    return f"cannot listen on {host}:{port}: {reason} (choose another with --port, 0 for any)"


def cmd_run(args: argparse.Namespace) -> int:
    from ._train import load_trainer

    result_out = sys.stdout
    # With --json, stdout carries the result only: progress and whatever the trainer file
    # prints (at import or in its callbacks) go to stderr.
    with contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext():
        trainer = load_trainer(args.path)
        if args.settings or args.name is not None:
            trainer.configure(name=args.name, **dict(args.settings))
        if args.detach:
            from ._train import submit_trainer

            return _trio_run(partial(submit_trainer, trainer, result_out, as_json=args.json))
        try:
            return _run_file_trainer(args, trainer, result_out)
        except SystemExit as exc:  # from a callback of the file: reported, not a silent exit
            running = (
                ""
                if trainer.job_id is None
                else (
                    f"; job {trainer.job_id} keeps running on the backend (`arkor-trio jobs cancel "
                    f"{trainer.job_id}` stops it)"
                )
            )
            print(
                f"arkor-trio: error: {args.path} called sys.exit({exc.code!r}) during the run"
                + running,
                file=sys.stderr,
                flush=True,
            )
            return EXIT_FAILED


def _run_file_trainer(args: argparse.Namespace, trainer: Trainer, result_out: TextIO) -> int:
    from ._train import run_trainer

    return _trio_run(
        partial(
            run_trainer,
            trainer,
            sys.stdout,
            as_json=args.json,
            result_out=result_out,
            samples=tuple(args.sample),
        )
    )


def cmd_jobs(args: argparse.Namespace) -> int:
    from . import _jobs as jobs

    if args.jobs_command == "list":
        call = partial(_with_client, jobs.jobs_list, as_json=args.json)
    elif args.jobs_command == "show":
        call = partial(_with_client, jobs.jobs_show, args.id, as_json=args.json)
    elif args.jobs_command == "cancel":
        call = partial(_with_client, jobs.jobs_cancel, args.id, as_json=args.json)
    else:
        call = partial(
            _with_client,
            jobs.jobs_events,
            args.id,
            follow=args.follow,
            after=args.after,
            as_json=args.json,
        )
    return _trio_run(call)


def cmd_infer(args: argparse.Namespace) -> int:
    from ._jobs import infer

    return _trio_run(
        partial(
            _with_client,
            infer,
            job_id=args.job,
            prompt=args.prompt,
            step=args.step,
            system=args.system,
            max_tokens=args.max_tokens,
            temperature=args.temperature,
            as_json=args.json,
        )
    )


def cmd_chaos(args: argparse.Namespace) -> int:
    from ..testing import chaos_main

    chaos_main(args.upstream, args.listen, args.plan, args.only)
    return EXIT_OK
