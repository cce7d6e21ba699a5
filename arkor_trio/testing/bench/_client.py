"""Running the client command under test: its own process group, bounded reading, always reaped.

The client starts in a new session (its pid is its process group), stdin from /dev/null. Its
stdout is read line by line into a :class:`~._score.Tally` (a line longer than ``MAX_LINE`` is
dropped, whatever its length); of stderr only the last ``STDERR_KEEP`` bytes are kept. The client
ends on its own, or is stopped: ``GRACE`` seconds after it delivered the final event, or when its
scope is cancelled (the deadline). Stopping sends SIGTERM to the whole group, then SIGKILL
``TERM_WAIT`` seconds later; once the client is gone the group is killed again (children it forked
and left behind) and, when this process is their subreaper, reaped.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import attrs
import trio

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from ._score import Tally

__all__ = ["ClientRun", "become_subreaper", "run_client"]

MAX_LINE = 1 << 20
STDERR_KEEP = 4096
GRACE = 2.0
TERM_WAIT = 1.0
_DRAIN = 0.5


@attrs.define
class ClientRun:
    """What happened to one run of the client command."""

    returncode: int | None = None
    stopped: str | None = None  # "deadline" or "after final"
    ignored_sigterm: bool = False
    started: float = 0.0
    ended: float = 0.0
    final_wall: float | None = None
    stderr: str = ""
    oversized: int = 0
    stdout_bytes: int = 0


def become_subreaper() -> bool:
    """Make this process the reaper of its orphaned descendants (Linux); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(36, 1, 0, 0, 0)) == 0  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        return False


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


#: How long the bench waits for the SIGKILLed members of a client's group to exit.
REAP_WAIT = 2.0


async def _reap_group(pgid: int) -> None:
    """Collect the group's orphans that were handed to this process (when it is a subreaper).

    They were just sent SIGKILL, and a killed process takes a moment to exit: waiting only for
    the ones already gone left the others to outlive the bench as zombies (until init reaped
    them). So wait until none is left, within ``REAP_WAIT`` (a process stuck in the kernel
    cannot hold the bench).
    """
    with trio.move_on_after(REAP_WAIT):
        while True:
            try:
                pid, _ = os.waitpid(-pgid, os.WNOHANG)  # noqa: ASYNC222  # never blocks
            except ChildProcessError:
                return  # none of the group is (or is any longer) this process's child
            if pid == 0:
                await trio.sleep(0.005)


async def run_client(
    argv: Sequence[str], env: Mapping[str, str], tally: Tally, *, deadline: float
) -> ClientRun:
    """Run ``argv`` until it exits, is stopped after its final event, or ``deadline`` seconds pass.

    Raises:
        OSError: The command could not be started (not found, not executable).
    """
    run = ClientRun(started=time.perf_counter())
    process = await trio.lowlevel.open_process(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(env),
        start_new_session=True,
    )
    pgid = process.pid
    final = trio.Event()
    done = (trio.Event(), trio.Event())
    stderr_tail = bytearray()
    try:
        async with trio.open_nursery() as readers:
            readers.start_soon(_read_stdout, process, tally, run, final, done[0])
            readers.start_soon(_read_stderr, process, stderr_tail, done[1])
            with trio.move_on_after(deadline) as budget:
                async with trio.open_nursery() as waiting:

                    async def stop_after_final() -> None:
                        await final.wait()
                        await trio.sleep(GRACE)
                        run.stopped = "after final"
                        waiting.cancel_scope.cancel()

                    waiting.start_soon(stop_after_final)
                    await process.wait()
                    waiting.cancel_scope.cancel()
            if budget.cancelled_caught:
                run.stopped = "deadline"
            run.ended = time.perf_counter()
            if process.returncode is None:
                await _terminate(process, pgid, run)
            _signal_group(pgid, signal.SIGKILL)  # what it forked and left running
            await _reap_group(pgid)
            with trio.move_on_after(_DRAIN):  # output already written is still counted
                for event in done:
                    await event.wait()
            readers.cancel_scope.cancel()
    finally:
        if process.returncode is None:  # cancelled from outside: never leave it running
            _signal_group(pgid, signal.SIGKILL)
            with trio.CancelScope(shield=True):
                await process.wait()
        _signal_group(pgid, signal.SIGKILL)
        with trio.CancelScope(shield=True):
            await _reap_group(pgid)
        for pipe in (process.stdout, process.stderr):
            if pipe is not None:
                with trio.CancelScope(shield=True):
                    await pipe.aclose()
    run.returncode = process.returncode
    run.stderr = stderr_tail.decode("utf-8", "replace")
    if run.final_wall is not None:
        run.ended = run.final_wall
    return run


async def _terminate(process: trio.Process, pgid: int, run: ClientRun) -> None:
    _signal_group(pgid, signal.SIGTERM)
    with trio.move_on_after(TERM_WAIT):
        await process.wait()
    if process.returncode is None:
        run.ignored_sigterm = True
        _signal_group(pgid, signal.SIGKILL)
        await process.wait()


async def _read_stdout(
    process: trio.Process, tally: Tally, run: ClientRun, final: trio.Event, done: trio.Event
) -> None:
    assert process.stdout is not None
    buffer = bytearray()
    skipping = False
    try:
        while chunk := await process.stdout.receive_some(65536):
            run.stdout_bytes += len(chunk)
            buffer += chunk
            while (newline := buffer.find(b"\n")) >= 0:
                line = bytes(buffer[:newline])
                del buffer[: newline + 1]
                if skipping:
                    skipping = False
                    continue
                _count(tally, line, run, final)
            if len(buffer) > MAX_LINE:
                buffer.clear()
                if not skipping:
                    run.oversized += 1
                skipping = True
        if buffer and not skipping:
            _count(tally, bytes(buffer), run, final)
    except (trio.ClosedResourceError, trio.BrokenResourceError):
        pass
    finally:
        done.set()


def _count(tally: Tally, line: bytes, run: ClientRun, final: trio.Event) -> None:
    now = time.perf_counter()
    tally.line(line, now)
    if tally.final_seen and not final.is_set():
        run.final_wall = now
        final.set()


async def _read_stderr(process: trio.Process, tail: bytearray, done: trio.Event) -> None:
    assert process.stderr is not None
    try:
        while chunk := await process.stderr.receive_some(65536):
            tail += chunk
            del tail[:-STDERR_KEEP]
    except (trio.ClosedResourceError, trio.BrokenResourceError):
        pass
    finally:
        done.set()
