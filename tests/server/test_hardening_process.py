"""``arkor-trio serve`` as a real process under hostile connections (issue 18, items 1 and 2).

The server runs with a lowered file-descriptor limit (``RLIMIT_NOFILE``), so exhausting it takes
a bounded number of sockets. Each process is read line by line (no sleeps); a watchdog kills a
process that would otherwise hang the suite.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import ExitStack
from typing import TYPE_CHECKING

import httpx
import pytest

from arkor_trio._version import USER_AGENT
from tests.server.test_hardening_connections import KILLER, upgrade_packets
from tests.test_cli_subprocess import command

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX rlimits and signals")

#: The served process's descriptor limit (the red team's was 1,024 against 1,100 sockets).
FD_LIMIT = 128


class Served:
    """``arkor-trio serve --port 0`` with ``RLIMIT_NOFILE`` = :data:`FD_LIMIT`."""

    def __init__(self, tmp_path: Path) -> None:
        import resource

        def limit() -> None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))

        self.proc = subprocess.Popen(
            command("serve", "--port", "0", "--data-dir", str(tmp_path / "data")),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            cwd=tmp_path,
            preexec_fn=limit,
        )
        self.watchdog = threading.Timer(90, self.proc.kill)
        self.watchdog.start()
        assert self.proc.stdout is not None
        found: dict[str, str] = {}
        for line in self.proc.stdout:
            if m := re.search(r"export (ARKOR_CLOUD_API_URL|ARKOR_TOKEN)=(\S+)", line):
                found[m.group(1)] = m.group(2)
            if len(found) == 2:
                break
        self.url, self.token = found["ARKOR_CLOUD_API_URL"], found["ARKOR_TOKEN"]
        self.port = int(self.url.rsplit(":", 1)[1])

    def get_me(self, timeout: float) -> int:
        headers = {"Authorization": f"Bearer {self.token}", "X-Arkor-Client": USER_AGENT}
        return httpx.get(f"{self.url}/v1/me", headers=headers, timeout=timeout).status_code

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGINT)
        _, err = self.proc.communicate(timeout=30)
        self.watchdog.cancel()
        assert self.proc.returncode == 0, err
        return err


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    server = Served(tmp_path)
    try:
        yield server
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.communicate()
        server.watchdog.cancel()


def _raw(port: int, packet: bytes) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
        sock.sendall(packet)
        try:
            while sock.recv(65536):
                pass
        except OSError:
            pass


def test_serve_survives_the_upgrade_packet_and_a_fuzzed_family(served: Served) -> None:
    _raw(served.port, KILLER)
    for packet in upgrade_packets(seed=225, count=20):
        _raw(served.port, packet)
    assert served.get_me(timeout=10) == 200
    err = served.stop()
    # A contained failure is logged once per kind (a minute), not once per connection.
    kinds = re.findall(r"closed a connection whose handling failed \(([\w.]+)", err)
    assert len(kinds) == len(set(kinds)), err
    assert "Error in ASGI Framework" not in err.split("Error in ASGI Framework", 1)[-1], err


def test_bodies_never_sent_to_login_do_not_exhaust_the_descriptors(served: Served) -> None:
    port = served.port
    head = (
        f"POST /login HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nOrigin: http://127.0.0.1:{port}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 4000\r\n\r\n"
    ).encode()
    with ExitStack() as sockets:
        for _ in range(FD_LIMIT + 40):  # more than the server has descriptors
            sock = sockets.enter_context(socket.create_connection(("127.0.0.1", port)))
            sock.sendall(head)
        start = time.monotonic()
        assert served.get_me(timeout=8) == 200
        assert time.monotonic() - start < 8
    served.stop()


def test_running_out_of_descriptors_is_logged_once_per_burst(served: Served) -> None:
    with ExitStack() as sockets:  # idle sockets: the server holds each until its idle timeout
        for _ in range(FD_LIMIT + 40):
            sockets.enter_context(socket.create_connection(("127.0.0.1", served.port)))
        # Accepting works again once idle connections are dropped (hypercorn: 5 s).
        assert served.get_me(timeout=20) == 200
    err = served.stop()
    assert err.count("cannot accept connections") == 1, err
    assert "Traceback" not in err, err
