"""Issue 17's property: one log, one cursor, four followers, the same ids once each.

For a random job (started, logs, checkpoints, completed) on a real local backend, a random
cursor (none, a middle id, the last-but-one), random cut points of every connection (the chaos
proxy, clean or mid-frame), random raising positions of the trainer's callbacks (each raises
once; ``wait()`` is then called again on the same trainer) and a random ``buffer_size``
(64 .. 10,000): the SSE stream, the WebSocket stream, a shared feed's subscription and a trainer
each deliver exactly the log's ids after the cursor, in order, every one once.

Bounded (a few examples, small jobs) so that ``make test`` stays quick; no example database
(tests/conftest.py's profile).
"""

from __future__ import annotations

from typing import Any

import attrs
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arkor_trio import HuggingfaceDataset, MemoryCursorStore, Trainer, create_trainer
from arkor_trio.testing import CutAfterEvents, Plan

from ._harness import FAST, backend_and_proxy, backend_log, proxy_client
from ._scripted import MODEL, ScriptedEngine

BOUND = 30.0


@attrs.frozen
class Case:
    steps: int
    cursor: str  # "none" | "mid" | "last"
    cuts: tuple[tuple[int, str], ...]
    raises: frozenset[int]
    buffer_size: int


cases = st.builds(
    Case,
    steps=st.integers(3, 40),
    cursor=st.sampled_from(["none", "mid", "last"]),
    cuts=st.lists(
        st.tuples(st.integers(0, 12), st.sampled_from(["clean", "mid_frame"])), max_size=3
    ).map(tuple),
    raises=st.frozensets(st.integers(0, 45), max_size=3),
    buffer_size=st.sampled_from([64, 65, 100, 1_000, 10_000]),
)


def plan_of(case: Case) -> Plan:
    return Plan.of(*(CutAfterEvents(k, mode=mode) for k, mode in case.cuts))  # type: ignore[arg-type]


async def run_case(case: Case, tmp: Any) -> None:
    policy = attrs.evolve(FAST, buffer_size=case.buffer_size, max_attempts=20)
    engine = ScriptedEngine().engine()
    with trio.fail_after(BOUND):
        async with backend_and_proxy(tmp, engine) as (backend, proxy):
            async with proxy_client(backend.base_url, backend) as direct:
                trainer = create_trainer(
                    name="property",
                    model=MODEL,
                    dataset=HuggingfaceDataset("arkorlab/triage-demo"),
                    max_steps=case.steps,
                    save_steps=5,
                    client=direct,
                )
                job_id = await trainer.start()
                while (await direct.get_job(job_id)).status != "completed":
                    await trio.sleep(0.01)
                ids = [event_id for event_id, _ in await backend_log(backend, job_id)]
            cursor = {"none": None, "mid": ids[len(ids) // 2], "last": ids[-2]}[case.cursor]
            expected = ids if cursor is None else ids[ids.index(cursor) + 1 :]
            got: dict[str, list[str | None]] = {}
            async with proxy_client(proxy.url, backend) as client:
                proxy.set_plan(plan_of(case))
                async with client.events(job_id, after=cursor, policy=policy) as stream:
                    got["sse"] = [event.event_id async for event in stream]
                proxy.set_plan(plan_of(case))
                async with client.events(
                    job_id, after=cursor, policy=policy, transport="websocket"
                ) as stream:
                    got["websocket"] = [event.event_id async for event in stream]
                proxy.set_plan(plan_of(case))
                async with client.feed(policy=policy) as feed:
                    got["feed"] = [e.event_id async for e in feed.subscribe(job_id, after=cursor)]
                proxy.set_plan(plan_of(case))
                got["trainer"] = await follow_with_raises(client, job_id, cursor, case, policy)
    for name, seq in got.items():
        assert seq == expected, (name, case)


async def follow_with_raises(
    client: Any, job_id: str, cursor: str | None, case: Case, policy: Any
) -> list[str | None]:
    """A trainer whose callbacks raise once at each position of ``case.raises``; ``wait()`` is
    retried on the same trainer; returns the ids whose callback returned."""
    store = MemoryCursorStore()
    if cursor is not None:
        store.commit_nowait(job_id, cursor)
    handled: list[str | None] = []
    raised: set[int] = set()

    def record(ctx: Any) -> None:
        position = len(handled)
        if position in case.raises and position not in raised:
            raised.add(position)
            raise RuntimeError(f"raise at {position}")
        handled.append(ctx.delivery.event_id)

    names = ("on_started", "on_log", "on_checkpoint", "on_completed", "on_failed", "on_cancelled")
    trainer = Trainer.attach(
        job_id,
        client=client,
        cursor_store=store,
        reconnect=policy,
        callbacks=dict.fromkeys(names, record),
    )
    for _ in range(len(case.raises) + 1):
        try:
            await trainer.wait()
            break
        except RuntimeError:
            continue
    assert trainer.result is not None
    return handled


@settings(max_examples=6, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=cases)
def test_every_follower_delivers_the_same_ids_once(case: Case, tmp_path_factory: Any) -> None:
    trio.run(run_case, case, tmp_path_factory.mktemp("property"))
