"""``GroupCommit`` alone (a unit test of the batching layer; tests/test_redis_store.py runs it
against a real redis-server)."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from arkor_trio.stream._batch import GroupCommit


class Server:
    """A ``send`` whose requests the test answers (or fails) one by one."""

    def __init__(self) -> None:
        self.requests: list[list[str]] = []
        self.arrived = trio.Event()  # a request is in flight
        self._answer = trio.Event()

    async def send(self, items: list[str]) -> list[str]:
        self.requests.append(list(items))
        answer = self._answer = trio.Event()
        self.arrived.set()
        await answer.wait()
        fail = self.fail
        if fail is not None:
            raise fail
        return [f"ok {item}" for item in items]

    fail: Exception | None = None

    def answer(self, fail: Exception | None = None) -> None:
        """Answer the request in flight (or fail it); wait for the next with ``arrived``."""
        self.fail = fail
        self.arrived = trio.Event()
        self._answer.set()


async def test_calls_waiting_together_share_one_request_each_with_its_own_answer() -> None:
    server = Server()
    group: GroupCommit[str, str] = GroupCommit(server.send)
    answers: dict[str, str] = {}

    async def call(item: str) -> None:
        answers[item] = await group.submit(item)

    async with trio.open_nursery() as nursery:
        for item in "abcd":
            nursery.start_soon(call, item)
        await server.arrived.wait()
        assert sorted(server.requests[0]) == list("abcd")
        assert answers == {}  # nothing is reported done before the request is answered
        server.answer()
    assert answers == {item: f"ok {item}" for item in "abcd"}
    assert (group.requests, group.items) == (1, 4)


async def test_calls_made_while_a_request_is_in_flight_go_in_the_next_one_in_order() -> None:
    server = Server()
    group: GroupCommit[str, str] = GroupCommit(server.send)
    done: list[str] = []

    async def call(item: str) -> None:
        await group.submit(item)
        done.append(item)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(call, "first")
        await server.arrived.wait()
        for item in ("second", "third"):  # queued in this order, behind the request in flight
            nursery.start_soon(call, item)
            await trio.testing.wait_all_tasks_blocked()
        assert len(server.requests) == 1
        server.answer()
        # The leader returns with its own answer; the oldest waiting caller sends the rest.
        await server.arrived.wait()
        assert done == ["first"]
        assert server.requests[1] == ["second", "third"]
        server.answer()
    assert sorted(done[1:]) == ["second", "third"]


async def test_a_failed_request_fails_only_its_own_calls() -> None:
    server = Server()
    group: GroupCommit[str, str] = GroupCommit(server.send)
    outcomes: dict[str, str] = {}

    async def call(item: str) -> None:
        try:
            outcomes[item] = await group.submit(item)
        except ConnectionError as exc:
            outcomes[item] = f"failed: {exc}"

    async with trio.open_nursery() as nursery:
        nursery.start_soon(call, "a")
        await server.arrived.wait()
        nursery.start_soon(call, "b")
        await trio.testing.wait_all_tasks_blocked()
        server.answer(ConnectionError("reset"))
        await server.arrived.wait()
        server.answer()
    assert outcomes == {"a": "failed: reset", "b": "ok b"}


async def test_max_batch_splits_and_a_cancelled_waiter_leaves_the_others_going() -> None:
    server = Server()
    group: GroupCommit[str, str] = GroupCommit(server.send, max_batch=2)
    answers: dict[str, str] = {}

    async def call(item: str) -> None:
        answers[item] = await group.submit(item)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(call, "lead")
        await server.arrived.wait()
        gone = trio.CancelScope()

        async def cancelled_call() -> None:
            with gone:
                await group.submit("gone")

        nursery.start_soon(cancelled_call)
        await trio.testing.wait_all_tasks_blocked()
        for item in "xyz":
            nursery.start_soon(call, item)
            await trio.testing.wait_all_tasks_blocked()
        gone.cancel()  # the oldest waiter leaves before it leads: the next one takes over
        await trio.testing.wait_all_tasks_blocked()
        server.answer()
        await server.arrived.wait()
        assert server.requests[1] == ["x", "y"]
        server.answer()
        await server.arrived.wait()
        assert server.requests[2] == ["z"]
        server.answer()
    assert answers == {item: f"ok {item}" for item in ("lead", "x", "y", "z")}


def test_max_batch_must_be_positive() -> None:
    async def send(items: list[str]) -> list[str]:
        return items

    with pytest.raises(ValueError, match="max_batch"):
        GroupCommit(send, max_batch=0)
