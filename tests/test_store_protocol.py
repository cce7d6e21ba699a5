"""The cursor store protocol (design.md section 14): leases, fencing, renewal, the adapter.

``NetStore`` is a tiny in-test networked store (every call crosses a "network" with latency; a
lease expires by the *store's* clock, as a Redis key with a PX ttl would): the followers run
against it unchanged, which is what shows that the protocol fits a networked store.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from contextlib import suppress
from typing import TYPE_CHECKING, Any

import pytest
import trio

from arkor_trio import HuggingfaceDataset, ReconnectPolicy, Trainer, create_trainer
from arkor_trio.stream import (
    Cursor,
    FileCursorStore,
    Lease,
    LeaseLost,
    MemoryCursorStore,
    as_cursor_store,
    keep_lease,
)
from tests.sse_script_server import COMPLETED, STARTED, Conn, Pause, frame, log_event

if TYPE_CHECKING:
    from contextlib import AbstractAsyncContextManager


class NetStore:
    """A networked store in miniature: one record per key {cursor, finished, token, holder,
    expires}; each call waits ``latency`` on the way there and back; ``partition`` makes every
    renewal hang (the holder cannot reach the store; the store's ttl runs out)."""

    def __init__(self, latency: float = 0.005) -> None:
        self.latency = latency
        self.records: dict[str, dict[str, Any]] = {}
        self.partition = False
        self.commits: list[tuple[str, str | None, bool, int | None]] = []

    def _record(self, key: str) -> dict[str, Any]:
        return self.records.setdefault(
            key, {"cursor": None, "finished": False, "token": 0, "holder": None, "expires": 0.0}
        )

    async def load(self, key: str) -> Cursor:
        await trio.sleep(self.latency)
        r = self._record(key)
        await trio.sleep(self.latency)
        return Cursor(r["cursor"], r["finished"])

    async def commit(
        self, key: str, cursor_id: str | None, *, finished: bool = False, lease: Lease | None = None
    ) -> None:
        await trio.sleep(self.latency)
        r = self._record(key)  # the compare-and-set, atomic on the "server"
        if lease is not None and (r["token"] != lease.token or r["expires"] <= trio.current_time()):
            raise LeaseLost(f"stale token {lease.token} for {key}", key=key)
        if cursor_id is not None:
            r["cursor"] = cursor_id
        r["finished"] = r["finished"] or finished
        self.commits.append((key, cursor_id, finished, None if lease is None else lease.token))
        await trio.sleep(self.latency)

    def lease(self, key: str, *, ttl: float) -> AbstractAsyncContextManager[Lease]:
        holder = f"holder-{id(object())}"

        async def acquire() -> Lease | None:
            sent = trio.current_time()
            await trio.sleep(self.latency)
            r = self._record(key)
            now = trio.current_time()
            if r["holder"] is not None and r["expires"] > now:
                return None
            r["token"] += 1
            r["holder"], r["expires"] = holder, now + ttl
            await trio.sleep(self.latency)
            return Lease(key, r["token"], holder, ttl, renewed_at=sent)

        async def renew(lease: Lease) -> bool:
            if self.partition:
                await trio.sleep_forever()
            await trio.sleep(self.latency)
            r = self._record(key)
            if r["token"] != lease.token or r["expires"] <= trio.current_time():
                return False
            r["expires"] = trio.current_time() + ttl
            return True

        async def release(lease: Lease) -> None:
            await trio.sleep(self.latency)
            r = self._record(key)
            if r["token"] == lease.token:
                r["holder"], r["expires"] = None, 0.0

        return keep_lease(key, ttl=ttl, acquire=acquire, renew=renew, release=release)


def frames(n_logs: int) -> bytes:
    out = [frame(1, STARTED)]
    out += [frame(i + 1, log_event(i)) for i in range(1, n_logs + 1)]
    out.append(frame(n_logs + 2, COMPLETED))
    return b"".join(out)


def trainer_for(client: Any, store: Any, calls: list[Any], **cb: Any) -> Trainer:
    callbacks = {"on_log": lambda ctx: calls.append(ctx.step), **cb}
    return create_trainer(
        name="t",
        model="unsloth/gemma-4-E4B-it",
        dataset=HuggingfaceDataset("arkorlab/triage-demo"),
        callbacks=callbacks,
        client=client,
        cursor_store=store,
        reconnect=ReconnectPolicy(idle_timeout=30.0, max_attempts=3),
    )


async def test_a_trainer_on_a_networked_store_dispatches_each_event_once(
    autojump_clock, client, server
):
    store = NetStore()
    server.conns.append(Conn(body=[frames(5)]))
    calls: list[int] = []
    result = await trainer_for(client, store, calls).wait()
    assert result.job.status == "completed"
    assert calls == [1, 2, 3, 4, 5]
    assert [c[1] for c in store.commits] == ["1", "2", "3", "4", "5", "6", "7"]
    assert store.commits[-1][2] is True  # the terminal event: cursor and finished in one commit
    assert {c[3] for c in store.commits} == {1}  # every commit fenced by the lease's token
    assert await store.load("job-1") == Cursor("7", True)


async def test_a_retried_wait_on_a_networked_store_resumes_after_the_raise(
    autojump_clock, client, server
):
    store = NetStore()
    body = frames(4)
    server.conns.append(Conn(body=[body], end="hang"))
    server.conns.append(Conn(body=[body[body.index(b"id: 4\n") :]]))
    calls: list[int] = []

    def on_log(ctx: Any) -> None:
        if ctx.step == 3 and 3 not in calls:
            calls.append(3)
            raise RuntimeError("once")
        calls.append(ctx.step)

    trainer = trainer_for(client, store, calls, on_log=on_log)
    with pytest.raises(RuntimeError):
        await trainer.wait()
    assert (await store.load("job-1")).id == "3"
    await trainer.wait()
    assert calls == [1, 2, 3, 3, 4]  # the raising event once more, nothing else twice
    assert server.last_event_ids() == [None, "3"]
    assert store.records["job-1"]["token"] == 2  # each wait() took the lease anew


async def test_a_holder_that_cannot_renew_stops_before_the_next_dispatch(
    autojump_clock, client, server
):
    """The holder's own clock: past ttl without a renewal, it dispatches nothing more."""
    store = NetStore()
    body = frames(4)
    cut = body.index(b"id: 4\n")
    server.conns.append(Conn(body=[body[:cut], Pause(5.0), body[cut:]], end="hang"))
    calls: list[int] = []

    def on_log(ctx: Any) -> None:
        calls.append(ctx.step)
        if ctx.step == 2:
            store.partition = True  # from now on no renewal reaches the store

    trainer = trainer_for(client, store, calls, on_log=on_log)
    trainer.lease_ttl = 1.0
    with pytest.raises(LeaseLost):
        await trainer.wait()
    assert calls == [1, 2]  # step 3 arrived after the ttl ran out: not dispatched
    assert (await store.load("job-1")).id == "3"


async def test_a_stale_holder_commit_is_refused_and_a_new_holder_resumes(
    autojump_clock, client, server
):
    """A pause inside a callback past ttl: the store's ttl expires, another follower takes
    over; the stale holder's commit raises LeaseLost and writes nothing."""
    store = NetStore()
    body = frames(3)
    server.conns.append(Conn(body=[body], end="hang"))
    server.conns.append(Conn(body=[body[body.index(b"id: 3\n") :]]))
    first: list[int] = []
    taken_over = trio.Event()

    async def slow(ctx: Any) -> None:
        first.append(ctx.step)
        if ctx.step == 2:
            store.partition = True
            await taken_over.wait()  # paused inside the callback while another takes over

    a = trainer_for(client, store, first, on_log=slow)
    a.lease_ttl = 1.0
    second: list[int] = []
    b = Trainer.attach(
        "job-1",
        client=client,
        cursor_store=store,
        callbacks={"on_log": lambda ctx: second.append(ctx.step)},
    )

    async def follow_b() -> None:
        await trio.sleep(2.0)  # A's lease expired by the store's clock
        store.partition = False
        await b.wait()
        taken_over.set()

    errors: list[BaseException] = []

    async def follow_a() -> None:
        try:
            await a.wait()
        except LeaseLost as exc:
            errors.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(follow_b)
        nursery.start_soon(follow_a)
    assert len(errors) == 1
    assert first == [1, 2]
    assert second == [2, 3]  # the one event a pause inside a callback may run twice
    assert store.records["job-1"]["cursor"] == "5"
    assert {c[3] for c in store.commits} == {1, 2}


async def test_leases_of_one_key_exclude_each_other_and_tokens_grow(autojump_clock, tmp_path):
    for store in (MemoryCursorStore(), FileCursorStore(tmp_path / "c.json"), NetStore()):
        order: list[str] = []
        tokens: list[int] = []

        async def hold(
            name: str, store: Any = store, order: list[str] = order, tokens: list[int] = tokens
        ) -> None:
            async with store.lease("k", ttl=5.0) as lease:
                tokens.append(lease.token)
                order.append(f"{name} in")
                await trio.sleep(1.0)
                order.append(f"{name} out")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(hold, "a")
            await trio.sleep(0.1)
            nursery.start_soon(hold, "b")
        assert order == ["a in", "a out", "b in", "b out"], store
        assert tokens[1] > tokens[0], store


async def test_a_file_store_refuses_a_stale_token(tmp_path):
    store = FileCursorStore(tmp_path / "c.json")
    async with store.lease("k", ttl=5.0) as old:
        await store.commit("k", "1", lease=old)
    other = FileCursorStore(tmp_path / "c.json")
    async with other.lease("k", ttl=5.0) as new:
        assert new.token == old.token + 1
        with pytest.raises(LeaseLost):
            await store.commit("k", "2", lease=old)
        await other.commit("k", "3", lease=new)
    assert FileCursorStore(tmp_path / "c.json").peek("k") == Cursor("3", False)


def test_an_old_sync_store_works_through_the_adapter_with_a_warning():
    class Old:
        def __init__(self) -> None:
            self.saved: dict[str, str] = {}

        def load(self, key: str) -> str | None:
            return self.saved.get(key)

        def save(self, key: str, cursor: str) -> None:
            self.saved[key] = cursor

    old = Old()
    with pytest.warns(DeprecationWarning, match="sync cursor store"):
        store = as_cursor_store(old)

    async def main() -> Cursor:
        async with store.lease("k", ttl=5.0) as lease:
            await store.commit("k", "4", lease=lease)
        return await store.load("k")

    assert trio.run(main) == Cursor("4", False)
    assert as_cursor_store(store) is store


def test_defect_9_a_forked_child_does_not_keep_the_claim(tmp_path):
    """Before: the child inherited the flock (O_CLOEXEC protects only against exec), so after
    the holder was SIGKILLed the next follower waited for the child to exit."""
    path = tmp_path / "c.json"
    script = (
        "import os, signal, sys\n"
        "from arkor_trio.stream import FileCursorStore\n"
        "assert FileCursorStore(sys.argv[1]).try_claim('job') is not None\n"
        "pid = os.fork()\n"
        "if pid == 0:  # the at-fork hooks have run: the child says it is up itself\n"
        "    print(os.getpid(), flush=True)\n"
        "    signal.pause()  # until the test kills it\n"
        "    os._exit(0)\n"
        "signal.pause()\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, str(path)], stdout=subprocess.PIPE)
    child = 0
    try:
        assert proc.stdout is not None
        child = int(proc.stdout.readline())
        assert FileCursorStore(path).try_claim("job") is None  # the holder has it
        proc.kill()
        proc.wait(10)
        release = FileCursorStore(path).try_claim("job")
        assert release is not None  # the child still runs, and holds nothing
        release()
    finally:
        proc.kill()
        proc.wait(10)
        if child:
            with suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
        if proc.stdout is not None:
            proc.stdout.close()
