"""The listen backlog and the accept loop, sized for a herd of reconnects (issue 23).

A restart meets every follower reconnecting at once: the backlog must reach ``listen()``
(capped by ``net.core.somaxconn``), and the accept loop must take queued connections in bounded
bursts and serve every one of them.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from arkor_trio.server import DEFAULT_BACKLOG, open_local_backend
from arkor_trio.server._admit import Admission
from arkor_trio.server._listen import ACCEPT_BURST, _accept_loop, listen_backlog
from tests._needs import missing

SOMAXCONN = Path("/proc/sys/net/core/somaxconn")


def test_the_backlog_is_capped_by_somaxconn(tmp_path: Path) -> None:
    limit = tmp_path / "somaxconn"
    limit.write_text("128\n")
    assert listen_backlog(2048, str(limit)) == 128
    assert listen_backlog(100, str(limit)) == 100
    assert listen_backlog(2048, str(tmp_path / "missing")) == 2048
    limit.write_text("junk")
    assert listen_backlog(2048, str(limit)) == 2048


def _listen_queue_size(port: int) -> int:
    """The backlog of the socket listening on ``port``: ``ss``'s Send-Q of a LISTEN socket."""
    out = subprocess.run(
        ["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True, check=True
    ).stdout
    return int(out.split()[2])


@pytest.mark.skipif(sys.platform != "linux", reason="reads the backlog with ss (Linux)")
@pytest.mark.parametrize("asked", [77, None])
async def test_the_backlog_reaches_listen(tmp_path: Path, asked: int | None) -> None:
    if shutil.which("ss") is None:
        missing("reads the backlog with ss (iproute2)")
    options: dict[str, Any] = {} if asked is None else {"backlog": asked}
    async with open_local_backend(tmp_path, **options) as backend:
        port = int(backend.base_url.rsplit(":", 1)[1])
        size = await trio.to_thread.run_sync(_listen_queue_size, port)
    wanted = DEFAULT_BACKLOG if asked is None else asked
    assert size == min(wanted, int(SOMAXCONN.read_text()))


class _Recorder(trio.abc.Instrument):
    """Stands in for the connections' nursery: records each connection with the step of the
    accept loop's task (a run until it yields to the scheduler) that accepted it."""

    def __init__(self) -> None:
        self.steps = 0
        self.accepted: list[int] = []
        self.streams: list[trio.SocketStream] = []

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task.name.endswith("_accept_loop"):
            self.steps += 1

    def start_soon(self, handle: Any, stream: trio.SocketStream) -> None:
        self.accepted.append(self.steps)
        self.streams.append(stream)


async def test_queued_connections_are_accepted_in_bounded_bursts() -> None:
    herd = 2 * ACCEPT_BURST + 10
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen(herd)
        listening.setblocking(False)
        clients = [socket.create_connection(listening.getsockname()) for _ in range(herd)]
        recorder = _Recorder()
        trio.lowlevel.add_instrument(recorder)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_accept_loop, listening, None, recorder)
                while len(recorder.accepted) < herd:
                    await trio.lowlevel.checkpoint()
                nursery.cancel_scope.cancel()
            per_step = [recorder.accepted.count(s) for s in sorted(set(recorder.accepted))]
            # A burst per step (not one connection per pass of the scheduler), bounded so that
            # the other tasks run in between.
            assert per_step == [ACCEPT_BURST, ACCEPT_BURST, 10]
            for stream, client in zip(recorder.streams, clients, strict=True):  # each one works
                await stream.send_all(b"x")
                assert client.recv(1) == b"x"
        finally:
            trio.lowlevel.remove_instrument(recorder)
            for stream in recorder.streams:
                await stream.aclose()
            for client in clients:
                client.close()


async def test_admission_counts_connections_until_they_answer(
    mock_clock: trio.testing.MockClock,
) -> None:
    """With the clock frozen: a connection stops counting when it sends, closes or expires."""
    queued = 10
    admission = Admission(limit=3, timeout=5.0)
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen(queued)
        listening.setblocking(False)
        clients = [socket.create_connection(listening.getsockname()) for _ in range(queued)]
        handled: list[trio.abc.HalfCloseableStream] = []

        async def handle(stream: trio.abc.HalfCloseableStream) -> None:
            handled.append(stream)
            await trio.sleep_forever()

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_accept_loop, listening, handle, nursery, admission)
                await trio.testing.wait_all_tasks_blocked()
                assert len(handled) == 3  # the others wait in the kernel's queue
                await handled[0].send_all(b"x")  # its answer starts
                peer = handled[0].socket.getpeername()  # type: ignore[attr-defined]
                (client,) = [c for c in clients if c.getsockname() == peer]
                assert client.recv(1) == b"x"
                await trio.testing.wait_all_tasks_blocked()
                assert len(handled) == 4
                await handled[1].aclose()
                await trio.testing.wait_all_tasks_blocked()
                assert len(handled) == 5
                mock_clock.jump(4.9)
                await trio.testing.wait_all_tasks_blocked()
                assert len(handled) == 5
                mock_clock.jump(0.1)  # the three waiting ones expire: three more
                await trio.testing.wait_all_tasks_blocked()
                assert len(handled) == 8
                assert admission.waiting == 3
                nursery.cancel_scope.cancel()
        finally:
            for stream in handled:
                await stream.aclose()
            for client in clients:
                client.close()
