"""Test helpers for hostile-input tests: process memory and a drip-feeding HTTP server."""

from __future__ import annotations

from pathlib import Path

import trio

__all__ = ["DripServer", "PeakRSS"]

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


class PeakRSS:
    """The process's peak resident memory (VmHWM) since :meth:`reset`, in bytes (Linux only).

    ``available`` is False where the peak cannot be reset (no /proc, not permitted): tests skip.
    """

    def __init__(self) -> None:
        self.available = _STATUS.exists()
        self.base = 0

    def _read(self, key: str) -> int:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
        raise AssertionError(f"{key} missing from {_STATUS}")

    def reset(self) -> None:
        """Start measuring: the peak becomes the current resident size."""
        try:
            _CLEAR_REFS.write_text("5")
        except OSError:
            self.available = False
            return
        self.base = self._read("VmRSS")

    def growth(self) -> int:
        """How far the peak rose above the resident size at :meth:`reset`."""
        return self._read("VmHWM") - self.base


class DripServer:
    """An HTTP/1.1 server on 127.0.0.1 that sends a 200 header, then one byte per ``interval``.

    ``sending`` is set once the first body byte went out; ``closed`` when a connection ended.
    """

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self.port = 0
        self.sending = trio.Event()
        self.closed = trio.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/slow.jsonl"

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, stream: trio.SocketStream) -> None:
        try:
            await stream.receive_some(65536)
            await stream.send_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/jsonl\r\n"
                b"content-length: 100000\r\n\r\n"
            )
            while True:
                await stream.send_all(b" ")
                self.sending.set()
                await trio.sleep(self.interval)
        except trio.BrokenResourceError:
            pass
        finally:
            self.closed.set()
            await stream.aclose()
