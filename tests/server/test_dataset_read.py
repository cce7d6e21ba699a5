"""Dataset reads are bounded and stoppable: devices, FIFOs, lying sizes, a 1 byte/s server."""

from __future__ import annotations

import os
import threading
import time
from typing import TYPE_CHECKING

import pytest
import trio

from arkor_trio.server._dataset_read import (
    ReadError,
    fetch_http,
    file_path,
    not_regular_problem,
    read_file,
    redact_url,
)

from ._probes import DripServer, PeakRSS

if TYPE_CHECKING:
    from pathlib import Path


def never() -> bool:
    return False


async def read_in_thread(path: Path, max_bytes: int = 1 << 20) -> bytearray | None:
    # A read that blocked would fail the test after 5 s instead of hanging it.
    with trio.fail_after(5):
        return await trio.to_thread.run_sync(
            read_file, path, never, max_bytes, abandon_on_cancel=True
        )


async def test_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)
    assert "FIFO" in (not_regular_problem(fifo) or "")
    with pytest.raises(ReadError, match="FIFO"):
        await read_in_thread(fifo)


async def test_devices_and_directories_are_refused(tmp_path: Path) -> None:
    from pathlib import Path

    with pytest.raises(ReadError, match="character device"):
        await read_in_thread(Path("/dev/zero"))
    with pytest.raises(ReadError, match="directory"):
        await read_in_thread(tmp_path)
    assert not_regular_problem(tmp_path / "missing") is None  # reported when the job reads


async def test_size_bound_is_enforced_while_reading_not_from_st_size() -> None:
    from pathlib import Path

    status = Path("/proc/self/status")
    if not status.exists():
        pytest.skip("needs /proc (a regular file whose st_size is 0)")
    assert status.stat().st_size == 0
    with pytest.raises(ReadError, match="larger than 64 bytes"):
        await read_in_thread(status, max_bytes=64)


async def test_oversized_file_fails_with_bounded_memory(tmp_path: Path) -> None:
    big = tmp_path / "big.jsonl"
    with big.open("wb") as fh:
        fh.truncate(24 * 1024 * 1024)  # sparse: costs no disk
    rss = PeakRSS()
    rss.reset()
    with pytest.raises(ReadError, match="larger than"):
        await read_in_thread(big, max_bytes=16 * 1024 * 1024)
    if rss.available:
        assert rss.growth() < 80 * 1024 * 1024


def test_stop_flag_is_checked_between_chunks(tmp_path: Path) -> None:
    data = tmp_path / "data.jsonl"
    data.write_bytes(b"x" * (3 * 1024 * 1024))
    calls = []

    def stop_on_second() -> bool:
        calls.append(1)
        return len(calls) >= 2

    assert read_file(data, stop_on_second, 1 << 30) is None
    assert len(calls) == 2
    assert read_file(data, never, 1 << 30) == b"x" * (3 * 1024 * 1024)


def test_nul_in_path_and_url_redaction() -> None:
    with pytest.raises(ReadError, match="NUL"):
        file_path("file:///tmp/a%00b.jsonl")
    shown = redact_url("http://me:hunter2@127.0.0.1:9/d.jsonl?sig=abc")
    assert "hunter2" not in shown
    assert "abc" not in shown
    assert shown == "http://me:***@127.0.0.1:9/d.jsonl?***"


async def test_http_dataset_cancel_takes_effect_within_a_second() -> None:
    drip = DripServer(interval=1.0)
    stop = threading.Event()
    async with trio.open_nursery() as nursery:
        await nursery.start(drip.run)
        outcome: list[object] = []

        def fetch() -> None:
            outcome.append(fetch_http(drip.url, None, stop.is_set, 1 << 20))

        with trio.fail_after(10):
            done = trio.Event()

            async def run() -> None:
                await trio.to_thread.run_sync(fetch)
                done.set()

            nursery.start_soon(run)
            await drip.sending.wait()
            cancelled_at = time.monotonic()
            stop.set()
            await done.wait()
            latency = time.monotonic() - cancelled_at
            await drip.closed.wait()  # the connection was dropped, not left hanging
        nursery.cancel_scope.cancel()
    assert outcome == [None]
    assert latency < 1.0


async def test_http_dataset_has_an_overall_deadline() -> None:
    drip = DripServer(interval=0.2)
    async with trio.open_nursery() as nursery:
        await nursery.start(drip.run)
        started = time.monotonic()
        with trio.fail_after(10), pytest.raises(ReadError, match="did not finish within 1 s"):
            await trio.to_thread.run_sync(
                lambda: fetch_http(drip.url, None, never, 1 << 20, deadline=1.0)
            )
        assert time.monotonic() - started < 3
        nursery.cancel_scope.cancel()
