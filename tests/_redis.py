"""A private ``redis-server`` on a free port for the tests that kill, restart or inspect one."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import attrs
import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@attrs.define
class RedisServer:
    """One ``redis-server`` process; ``stop()``/``start()`` keep its port (and its AOF)."""

    directory: Path
    port: int = attrs.field(factory=free_port)
    appendonly: bool = False
    host: str = "127.0.0.1"
    process: subprocess.Popen[bytes] | None = None
    drain: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is missing: apt-get install -y redis-server (.ci/run does)")
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", self.host, "--save", "",
             "--appendonly", "yes" if self.appendonly else "no", "--dir", str(self.directory),
             "--protected-mode", "no", "--loglevel", "notice"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        assert self.process.stdout is not None
        # The server says when it accepts connections; EOF means it exited (port taken, ...).
        seen = []
        for line in self.process.stdout:
            seen.append(line.decode(errors="replace").strip())
            if b"Ready to accept connections" in line:
                break
        else:
            self.stop()
            pytest.fail(f"redis-server did not start on port {self.port}: {seen[-3:]}")
        self.drain = threading.Thread(target=self.process.stdout.read, daemon=True)
        self.drain.start()

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            if self.drain is not None:
                self.drain.join(10)  # EOF once the server is gone
                self.drain = None
            if self.process.stdout is not None:
                self.process.stdout.close()
            self.process = None


@contextmanager
def redis_server(
    directory: Path, *, appendonly: bool = False, host: str = "127.0.0.1"
) -> Iterator[RedisServer]:
    server = RedisServer(directory, appendonly=appendonly, host=host)
    server.start()
    try:
        yield server
    finally:
        server.stop()
