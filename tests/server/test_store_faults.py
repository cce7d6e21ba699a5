"""A database that refuses writes (disk full, locked) never takes the backend down.

Three ways: a fault-injected store raising ``sqlite3.OperationalError`` on every write, a second
SQLite connection holding ``BEGIN IMMEDIATE``, and a real full disk (a 3 MB tmpfs, where this
machine lets us mount one).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import sqlite3
import subprocess
import threading
import time
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import trio

from arkor_trio.server import _serve, open_local_backend
from arkor_trio.server._store import DB_NAME, Store, StoreError
from tests._needs import missing

from .conftest import SCOPE, FrameReader, create_job, data_of, headers_for

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator
    from pathlib import Path

    from .conftest import FakeEngine


class FaultyStore(Store):
    """A real store whose writes raise SQLite's disk-full error while ``failing`` is set."""

    failing = threading.Event()

    def _write(self, fn: Any) -> Any:
        def refuse(conn: sqlite3.Connection) -> Any:
            if FaultyStore.failing.is_set():
                raise sqlite3.OperationalError("database or disk is full")
            return fn(conn)

        return super()._write(refuse)


class SignallingStore(Store):
    """A real store that sets ``writing`` when a write starts, once ``armed`` is set."""

    armed = threading.Event()
    writing = threading.Event()

    def _write(self, fn: Any) -> Any:
        if SignallingStore.armed.is_set():
            SignallingStore.writing.set()
        return super()._write(fn)


@contextlib.asynccontextmanager
async def running(
    data_dir: Path, fake: FakeEngine, **kwargs: Any
) -> AsyncIterator[httpx.AsyncClient]:
    async with (
        open_local_backend(data_dir, engine=fake.engine(), **kwargs) as backend,
        httpx.AsyncClient(
            base_url=backend.base_url, headers=headers_for(backend), verify=False
        ) as http,
    ):
        yield http


class Refused(logging.Handler):
    """Set once the runner logged that the store refused a job's write and retries its failure."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if "recording it failed too" in record.getMessage():
            self.seen.set()

    async def wait(self) -> None:
        assert await trio.to_thread.run_sync(self.seen.wait, 10)


@pytest.fixture
def refused() -> Iterator[Refused]:
    handler = Refused()
    logger = logging.getLogger("arkor_trio.server")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


async def follow_until(http: httpx.AsyncClient, job_id: str, event: str) -> list[dict[str, str]]:
    url = f"/v1/jobs/{job_id}/events/stream"
    async with http.stream("GET", url, params=SCOPE) as response:
        return await FrameReader(response).until(event)


def test_store_error_names_the_reason(tmp_path: Path) -> None:
    FaultyStore.failing.set()
    store = FaultyStore.in_dir(tmp_path)
    try:
        with pytest.raises(StoreError, match=r"^disk full: no space left for ") as info:
            store.create_job(job_id="j", org_id="o", project_id="p", name="n", config={})
        assert info.value.reason == "disk full"
        FaultyStore.failing.clear()
        store.create_job(job_id="j", org_id="o", project_id="p", name="n", config={})
        assert store.append("j", {"type": "training.started"}) == 1  # no transaction left open
    finally:
        FaultyStore.failing.clear()
        store.close()


async def test_fault_injected_store_fails_the_job_with_the_reason_and_stays_up(
    tmp_path: Path, fake: FakeEngine, monkeypatch: pytest.MonkeyPatch, refused: Refused
) -> None:
    monkeypatch.setattr(_serve, "Store", FaultyStore)
    try:
        async with running(tmp_path / "data", fake) as http:
            job = await create_job(http, gate="g")
            await follow_until(http, job["id"], "training.log")
            FaultyStore.failing.set()
            fake.gates["g"].set()  # the engine's next append (checkpoint.saved) is refused
            await refused.wait()  # the job's write and its failure were both refused
            # The server answers meanwhile; a write is a 503 naming the reason, not a 500.
            assert (await http.get("/v1/me")).status_code == 200
            answer = await http.post(
                "/v1/jobs", params=SCOPE, json={"name": "x", "config": {"model": "fake/tiny-model"}}
            )
            assert answer.status_code == 503
            assert "disk full" in answer.json()["error"]
            FaultyStore.failing.clear()  # space again: the kept failure is recorded
            with trio.fail_after(10):
                frames = await follow_until(http, job["id"], "training.failed")
            error = data_of(frames[-1])["error"]
            assert error.startswith("disk full: ")
            got = (await http.get(f"/v1/jobs/{job['id']}", params=SCOPE)).json()["job"]
            assert (got["status"], got["error"]) == ("failed", error)
    finally:
        FaultyStore.failing.clear()


async def test_write_lock_held_elsewhere_never_blocks_the_loop(
    tmp_path: Path, fake: FakeEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_serve, "Store", SignallingStore)
    SignallingStore.armed.clear()
    SignallingStore.writing.clear()
    data = tmp_path / "data"
    async with running(data, fake, busy_timeout=1.0) as http:
        job = await create_job(http, gate="g")
        await follow_until(http, job["id"], "training.log")
        other = sqlite3.connect(data / DB_NAME, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another process holding SQLite's write lock
        try:
            SignallingStore.armed.set()
            fake.gates["g"].set()  # the job's next append waits for the lock, then fails
            assert await trio.to_thread.run_sync(SignallingStore.writing.wait, 10)
            async with trio.open_nursery() as nursery:
                refused: list[httpx.Response] = []

                async def post() -> None:
                    body = {"name": "x", "config": {"model": "fake/tiny-model"}}
                    refused.append(await http.post("/v1/jobs", params=SCOPE, json=body))

                nursery.start_soon(post)
                for path in ("/v1/me", "/v1/jobs", f"/v1/jobs/{job['id']}"):
                    started = time.monotonic()
                    assert (await http.get(path, params=SCOPE)).status_code == 200
                    assert time.monotonic() - started < 0.5, path
            assert refused[0].status_code == 503
            assert "database locked" in refused[0].json()["error"]
            assert "1 s" in refused[0].json()["error"]
        finally:
            other.execute("ROLLBACK")
            other.close()
        with trio.fail_after(15):
            frames = await follow_until(http, job["id"], "training.failed")
        assert data_of(frames[-1])["error"].startswith("database locked: ")


@contextlib.contextmanager
def small_tmpfs(where: Path, size: str = "3m") -> Iterator[Path]:
    where.mkdir()
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError as exc:
        missing(f"cannot mount a tmpfs for the disk-full test: {exc}")
    if done.returncode != 0:
        missing(f"cannot mount a tmpfs for the disk-full test: {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(directory: Path) -> Path:
    """Write a file until the filesystem is full; returns it (delete it to free the space)."""
    filler = directory / "filler"

    def write_until_full() -> None:
        with filler.open("wb") as fh:
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()

    with pytest.raises(OSError) as info:
        write_until_full()
    assert info.value.errno == errno.ENOSPC
    return filler


async def test_real_full_disk_fails_the_job_as_disk_full(
    tmp_path: Path, fake: FakeEngine, refused: Refused
) -> None:
    with small_tmpfs(tmp_path / "mnt") as mnt:
        async with running(mnt / "data", fake) as http:
            job = await create_job(http, gate="g")
            await follow_until(http, job["id"], "training.log")
            filler = fill(mnt)
            fake.gates["g"].set()
            with trio.fail_after(10):
                await refused.wait()
                # The server stays up while the disk is full.
                assert (await http.get("/v1/me")).status_code == 200
                assert (await http.get(f"/v1/jobs/{job['id']}", params=SCOPE)).status_code == 200
                filler.unlink()
                frames = await follow_until(http, job["id"], "training.failed")
            assert data_of(frames[-1])["error"].startswith("disk full: ")


def test_full_disk_leaves_no_checkpoint_temp_file(tmp_path: Path) -> None:
    from arkor_trio.server._data import BASE_CHARS
    from arkor_trio.server._model import CharModel

    with small_tmpfs(tmp_path / "mnt") as mnt:
        fill(mnt)
        model = CharModel.initial(BASE_CHARS, seed=1)
        target = mnt / "models" / "job_x" / "checkpoint-1.npz"
        with pytest.raises(OSError) as info:
            model.save(target)
        assert info.value.errno == errno.ENOSPC
        leftovers = [p.name for p in mnt.rglob("*") if p.name != "filler"]
        assert not any(".tmp" in name for name in leftovers), leftovers


def test_modes_are_private(tmp_path: Path) -> None:
    async def main() -> None:
        async with open_local_backend(tmp_path / "data") as backend:
            assert backend.data_dir.stat().st_mode & 0o777 == 0o700

    trio.run(main)
    data = tmp_path / "data"
    for name in (DB_NAME, "token", "lock"):
        assert (data / name).stat().st_mode & 0o777 == 0o600, name
    from arkor_trio.server._data import BASE_CHARS
    from arkor_trio.server._model import CharModel

    target = data / "models" / "job_x" / "final.npz"
    CharModel.initial(BASE_CHARS, seed=1).save(target)
    assert target.stat().st_mode & 0o777 == 0o600
    assert target.parent.stat().st_mode & 0o777 == 0o700
    os.chmod(data, 0o755)  # an existing, too-open data dir is made private again
    os.chmod(data / DB_NAME, 0o644)
    trio.run(main)
    assert (data / DB_NAME).stat().st_mode & 0o777 == 0o600


async def test_recovery_never_reuses_an_id_a_stream_may_have_sent(tmp_path: Path) -> None:
    from arkor_trio.server._store import RECOVERY_ID_GAP

    data = tmp_path / "data"
    data.mkdir()
    store = Store.in_dir(data)
    store.create_job(job_id="job_lost", org_id="o", project_id="proj_default", name="n", config={})
    store.append_many("job_lost", [{"type": "training.started"}, {"type": "training.log"}])
    store.close()
    # As after a power loss: the client saw ids up to 5, the log kept only 1 and 2.
    async with (
        open_local_backend(data) as backend,
        httpx.AsyncClient(
            base_url=backend.base_url, headers=headers_for(backend), verify=False
        ) as http,
    ):
        url = "/v1/jobs/job_lost/events/stream"
        headers = {"Last-Event-ID": "5"}
        async with http.stream("GET", url, params=SCOPE, headers=headers) as response:
            frames = await FrameReader(response).until("end")
    assert [(f.get("id"), f["event"]) for f in frames] == [
        (str(3 + RECOVERY_ID_GAP), "training.failed"),
        (None, "end"),
    ]


async def test_start_removes_checkpoint_temp_files_a_killed_process_left(tmp_path: Path) -> None:
    data = tmp_path / "data"
    stale = data / "models" / "job_x" / ".checkpoint-3.npz.4242.tmp"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"partial")
    kept = stale.with_name("checkpoint-2.npz")
    kept.write_bytes(b"weights")
    async with open_local_backend(data):
        assert not stale.exists()
        assert kept.exists()


async def test_start_with_the_database_locked_serves_and_records_recovery_later(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    store = Store.in_dir(data)
    store.create_job(job_id="job_left", org_id="o", project_id="proj_default", name="n", config={})
    store.append("job_left", {"type": "training.started"})
    store.close()
    other = sqlite3.connect(data / DB_NAME, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        async with (
            open_local_backend(data, busy_timeout=0.2) as backend,
            httpx.AsyncClient(
                base_url=backend.base_url, headers=headers_for(backend), verify=False
            ) as http,
        ):
            got = (await http.get("/v1/jobs/job_left", params=SCOPE)).json()["job"]
            assert got["status"] == "running"  # recovery could not write yet
            other.execute("ROLLBACK")
            with trio.fail_after(10):
                frames = await follow_until(http, "job_left", "training.failed")
            assert data_of(frames[-1])["error"] == "backend restarted"
    finally:
        other.close()
