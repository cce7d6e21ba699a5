"""``RedisCursorStore`` against a real ``redis-server`` (its own, on a free port): no mocks."""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import TYPE_CHECKING

import coredis
import pytest
import trio

from arkor_trio import ConfigError
from arkor_trio.stream import Cursor, LeaseLost, RedisCursorStore, StoreUnavailable

from ._redis import RedisServer, redis_server

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator
    from pathlib import Path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with redis_server(tmp_path_factory.mktemp("redis")) as running:
        yield running


@pytest.fixture
async def redis(server: RedisServer) -> AsyncIterator[coredis.Redis[str]]:
    client: coredis.Redis[str] = coredis.Redis.from_url(server.url, decode_responses=True)
    async with client:
        await client.flushdb()
        yield client


@pytest.fixture
async def a(server: RedisServer) -> AsyncIterator[RedisCursorStore]:
    async with RedisCursorStore(server.url, namespace="t", holder="a") as store:
        yield store


@pytest.fixture
async def b(server: RedisServer) -> AsyncIterator[RedisCursorStore]:
    async with RedisCursorStore(server.url, namespace="t", holder="b") as store:
        yield store


async def test_load_commit_and_finish(redis: coredis.Redis[str], a: RedisCursorStore) -> None:
    store = a
    assert await store.load("job_1") == Cursor(None, False)
    await store.commit("job_1", "7")
    assert await store.load("job_1") == Cursor("7", False)
    await store.commit("job_1", None, finished=True)
    assert await store.load("job_1") == Cursor("7", True)
    assert await store.load("job_2") == Cursor(None, False)


async def test_a_stale_holders_commit_is_refused_by_redis(
    redis: coredis.Redis[str], a: RedisCursorStore, b: RedisCursorStore
) -> None:
    async with a.lease("job", ttl=30) as held_a:
        assert held_a.token == 1
        await a.commit("job", "3", lease=held_a)
        # A's lease lapses on the server (as after a pause), B takes over; A never noticed.
        lease_key = a._keys("job")[1]
        assert await redis.delete([lease_key]) == 1
        async with b.lease("job", ttl=30) as held_b:
            assert held_b.token == 2
            with pytest.raises(LeaseLost, match="taken over"):
                await a.commit("job", "4", lease=held_a)
            assert held_a.lost.is_set()
            assert await a.load("job") == Cursor("3", False)  # nothing written
            await b.commit("job", "4", lease=held_b)
            assert await redis.hgetall(a._keys("job")[0]) == {
                "cursor": "4",
                "token": "2",
                "holder": "b",
            }


async def test_commits_waiting_together_share_one_script_each_fenced_on_its_own_token(
    redis: coredis.Redis[str], a: RedisCursorStore, b: RedisCursorStore
) -> None:
    async with AsyncExitStack() as stack:
        leases = [await stack.enter_async_context(a.lease(f"job{i}", ttl=30)) for i in range(8)]
        # job3's lease lapses on the server and B takes it over; A never noticed.
        await redis.delete([a._keys("job3")[1]])
        await stack.enter_async_context(b.lease("job3", ttl=30))
        requests = a.commits.requests
        outcomes: dict[int, str | None] = {}

        async def commit(i: int) -> None:
            try:
                await a.commit(f"job{i}", "5", lease=leases[i])
            except LeaseLost:
                outcomes[i] = "lost"
            else:  # reported done only once Redis has it
                outcomes[i] = await redis.hget(a._keys(f"job{i}")[0], "cursor")

        async with trio.open_nursery() as nursery:
            for i in range(8):
                nursery.start_soon(commit, i)
        assert a.commits.requests == requests + 1  # one script call carried all eight
        assert outcomes == {i: "lost" if i == 3 else "5" for i in range(8)}
        assert [lease.lost.is_set() for lease in leases] == [i == 3 for i in range(8)]
        assert await a.load("job3") == Cursor(None, False)  # the stale holder wrote nothing


async def test_renewals_due_together_share_one_script_and_a_taken_over_lease_is_lost(
    redis: coredis.Redis[str], a: RedisCursorStore, b: RedisCursorStore
) -> None:
    async with AsyncExitStack() as stack:
        leases = [await stack.enter_async_context(a.lease(f"job{i}", ttl=0.3)) for i in range(4)]
        await redis.delete([a._keys("job1")[1]])
        await stack.enter_async_context(b.lease("job1", ttl=30))
        with trio.fail_after(5):
            await leases[1].lost.wait()  # its next renewal said so
            while a.renewals.items < 2 * 4:
                await trio.sleep(0.05)
        assert [lease.lost.is_set() for lease in leases] == [False, True, False, False]
        assert a.renewals.requests < a.renewals.items  # several renewals per script call


async def test_without_pipelining_each_commit_is_its_own_call(server: RedisServer) -> None:
    async with RedisCursorStore(server.url, namespace="t", pipeline=False) as store:
        async with trio.open_nursery() as nursery:
            for i in range(4):
                nursery.start_soon(store.commit, f"job{i}", "1")
        assert store.commits.requests == 0
        assert [await store.load(f"job{i}") for i in range(4)] == [Cursor("1", False)] * 4


async def test_a_second_holder_waits_and_leaving_releases_at_once(
    redis: coredis.Redis[str], a: RedisCursorStore, b: RedisCursorStore
) -> None:
    order: list[str] = []
    a_in = trio.Event()
    a_may_leave = trio.Event()

    async def hold_a() -> None:
        async with a.lease("job", ttl=30):
            order.append("a")
            a_in.set()
            await a_may_leave.wait()
        order.append("a left")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(hold_a)
        await a_in.wait()
        got: list[int] = []

        async def hold_b() -> None:
            async with b.lease("job", ttl=30) as held:
                order.append("b")
                got.append(held.token)

        nursery.start_soon(hold_b)
        # B polls while A holds; A leaving deletes the lease, without waiting out the 30 s ttl.
        for _ in range(5):
            await trio.sleep(0)
        assert order == ["a"]
        a_may_leave.set()
        with trio.fail_after(10):
            while len(order) < 3:
                await trio.sleep(0.01)
    assert order == ["a", "a left", "b"]
    assert got == [2]


async def test_a_taken_over_holder_learns_it_at_its_next_renewal(
    redis: coredis.Redis[str], a: RedisCursorStore, b: RedisCursorStore
) -> None:
    async with a.lease("job", ttl=0.3) as held_a:
        await redis.delete([a._keys("job")[1]])
        async with b.lease("job", ttl=30):
            with trio.fail_after(5):
                await held_a.lost.wait()
            with pytest.raises(LeaseLost):
                held_a.check()


async def test_redis_gone_longer_than_the_ttl_loses_the_lease(tmp_path: Path) -> None:
    with redis_server(tmp_path) as own:
        store = RedisCursorStore(own.url, namespace="t", holder="a", timeout=0.5)
        async with store, store.lease("job", ttl=0.6) as held:
            await store.commit("job", "1", lease=held)
            own.stop()
            # A commit retries an unreachable Redis only until the lease would lapse by the
            # holder's own clock; then the holder knows the lease is lost.
            with pytest.raises(LeaseLost, match="unreachable"):
                await store.commit("job", "2", lease=held)
            assert not held.valid()
            with pytest.raises(StoreUnavailable, match=r"127\.0\.0\.1"):
                await store.load("job")
            own.start()  # same port, nothing kept: a new primary without the old state
            assert await store.load("job") == Cursor(None, False)


async def test_a_holder_that_paused_past_its_ttl_stops_before_redis_says_so(
    redis: coredis.Redis[str], a: RedisCursorStore
) -> None:
    async with a.lease("job", ttl=30) as held:
        held.renewed_at -= 30  # as if the process had been paused for the whole ttl
        assert not held.valid()
        with pytest.raises(LeaseLost):
            await a.commit("job", "1", lease=held)
    assert await a.load("job") == Cursor(None, False)


def test_bad_configuration_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="namespace"):
        RedisCursorStore("redis://127.0.0.1:1/0", namespace="a b")
    with pytest.raises(ConfigError, match="namespace"):
        RedisCursorStore("redis://127.0.0.1:1/0", namespace="")
    with pytest.raises(ConfigError, match="Redis URL"):
        RedisCursorStore("http://example.invalid/", namespace="n")


async def test_use_outside_its_block_says_how(server: RedisServer) -> None:
    store = RedisCursorStore(server.url, namespace="t")
    with pytest.raises(ConfigError, match="async with RedisCursorStore"):
        await store.load("job")


def test_both_keys_of_a_cursor_share_one_cluster_slot() -> None:
    store = RedisCursorStore("redis://127.0.0.1:1/0", namespace="n")
    cursor, lease = store._keys("job_{x}")
    assert cursor.split("}:")[0] == lease.split("}:")[0]
    assert cursor.count("{") == 1
    assert cursor.count("}") == 1
