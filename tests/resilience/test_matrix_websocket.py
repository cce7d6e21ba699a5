"""Resilience matrix, WebSocket rows (issue 13): transport x fault, exactly once against the log.

Each row: a real trainer with ``transport="websocket"`` follows a scripted job (65 events)
through the chaos proxy, whose plan applies the row's fault to the feed sockets (message
boundaries are WebSocket messages; a batch of events is one message). Every row checks that the
callbacks and committed cursors equal the backend's log (exactly once, in order, one terminal
callback) and how the proxy cut each socket. The feed row: 200 jobs on one socket through cuts.
"""

from __future__ import annotations

import attrs
import pytest
import trio

from arkor_trio.testing import (
    CutAfterEvents,
    CutKind,
    DropInHeaders,
    Plan,
    Refuse,
    Stall,
    Status,
)

from ._checks import assert_exactly_once, cuts
from ._harness import BOUND, FAST, backend_log, follow_through_proxy, proxy_client
from ._scripted import ScriptedEngine

CLEAN, MID, RESET = CutKind.CLEAN, CutKind.MID_FRAME, CutKind.RESET
STALL, REFUSED, STATUS, DROP = CutKind.STALL, CutKind.REFUSED, CutKind.STATUS, CutKind.HEADERS_DROP

ROWS = {
    "cut_at_message_boundary": (
        Plan.of(CutAfterEvents(3), CutAfterEvents(0), CutAfterEvents(5)),
        [CLEAN, CLEAN, CLEAN, None],
        FAST,
    ),
    "cut_inside_a_frame": (
        Plan.of(CutAfterEvents(3, mode="mid_frame"), CutAfterEvents(0, mode="mid_frame")),
        [MID, MID, None],
        FAST,
    ),
    "cut_inside_a_frame_then_rst": (
        Plan.of(CutAfterEvents(3, mode="reset"), CutAfterEvents(4, mode="reset")),
        [RESET, RESET, None],
        FAST,
    ),
    "stall": (
        Plan.of(Stall(after_events=3, seconds=1.0), Stall(after_events=0, seconds=1.0)),
        [STALL, STALL, None],
        attrs.evolve(FAST, idle_timeout=0.3),
    ),
    "refuse": (
        Plan.of(CutAfterEvents(3), Refuse(), Refuse(reset=True)),
        [CLEAN, REFUSED, REFUSED, None],
        FAST,
    ),
    "drop_during_the_handshake": (
        Plan.of(DropInHeaders(fraction=0.5), CutAfterEvents(2), DropInHeaders(fraction=0.3)),
        [DROP, CLEAN, DROP, None],
        FAST,
    ),
    "status_503_at_the_handshake": (
        Plan.of(Status(code=503, count=2, retry_after=0.05), CutAfterEvents(2)),
        [STATUS, STATUS, CLEAN, None],
        FAST,
    ),
}


@pytest.mark.parametrize("row", list(ROWS))
async def test_websocket_row(tmp_path, row: str) -> None:
    plan, kinds, policy = ROWS[row]
    # Paced at 20 ms an event, the 65-event job outlasts every planned cut.
    engine = ScriptedEngine(pace=0.02).engine()
    run = await follow_through_proxy(
        tmp_path, plan, engine=engine, policy=policy, transport="websocket"
    )
    assert_exactly_once(run.calls, run.saved, run.log)
    assert run.result.job.status == "completed"
    assert run.trainer.cursor == run.log[-1][0]
    sockets = [r for r in run.records[1:] if r.path is None or "/v1/events/ws" in r.path]
    assert cuts(sockets) == kinds


async def test_feed_row_200_jobs_on_one_socket_through_cuts(tmp_path) -> None:
    """200 jobs (prefilled logs of 100 events each, replayed while the proxy cuts the socket
    again and again): every job's events arrive exactly once and in order."""
    from arkor_trio.server import open_local_backend
    from arkor_trio.testing import open_chaos_proxy
    from tests.server.conftest import prefill

    jobs = [f"job_f{i:03d}" for i in range(200)]
    for job in jobs:
        prefill(tmp_path / "data", job, 98)  # 100 events: ~40 batched messages, many cuts
    plan = Plan.of(
        *[CutAfterEvents(k, mode=m) for k, m in [(2, "clean"), (3, "mid_frame"), (1, "reset")]] * 3
    )
    seen: dict[str, list[str | None]] = {job: [] for job in jobs}
    with trio.fail_after(BOUND * 2):
        async with (
            open_local_backend(tmp_path / "data", engine=ScriptedEngine().engine()) as backend,
            open_chaos_proxy(backend.base_url) as proxy,
            proxy_client(proxy.url, backend) as client,
        ):
            await client.list_jobs()  # resolve nothing through the plan: scope is configured
            proxy.set_plan(plan)
            async with client.feed(policy=FAST) as feed:

                async def follow(job: str) -> None:
                    async with feed.subscribe(job) as sub:
                        async for event in sub:
                            seen[job].append(event.event_id)

                async with trio.open_nursery() as nursery:
                    for job in jobs:
                        nursery.start_soon(follow, job)
                stats = feed.stats
            logs = {job: [i for i, _ in await backend_log(backend, job)] for job in jobs[:5]}
    for job in jobs:
        assert seen[job] == [str(n) for n in range(1, 101)], job
    for job, log in logs.items():
        assert seen[job] == log
    assert stats.reconnects >= 9
    assert stats.events == 200 * 100  # queued once each: nothing replayed twice
