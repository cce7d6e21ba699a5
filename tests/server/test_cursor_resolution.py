"""One cursor resolution for SSE and WebSocket (design.md section 3 rule 10; issue 17).

For the same event log and the same cursor, ``GET /v1/jobs/:id/events/stream`` with
``Last-Event-ID`` and a feed ``subscribe {after}`` deliver the same events; the WebSocket adds
``reset`` where the client's history has a hole the server cannot fill (or the cursor is not one
the log can place). Real sockets, a real SQLite file, logs written as the backend writes them:
retention, the crash-recovery id gap, both together.
"""

from __future__ import annotations

import json
import random
import sqlite3
from typing import TYPE_CHECKING, Any

import attrs
import httpx
import pytest
import trio

from arkor_trio.server import open_local_backend
from arkor_trio.server._runner import RESTARTED
from arkor_trio.server._store import DB_NAME, RECOVERY_ID_GAP, Store

from .conftest import SCOPE, FrameReader, headers_for, read_stream
from .test_ws import connect, recv, sub, until_end

if TYPE_CHECKING:
    from pathlib import Path


GAP = RECOVERY_ID_GAP
LOG = {"type": "training.log", "step": 1, "loss": 1.0}


def _write(
    data: Path,
    job: str,
    events: int,
    *,
    recovered: bool = False,
    keep: int | None = None,
    finish: bool = True,
) -> None:
    """A job with ``events`` events (started, then logs), then a terminal event: the recovery
    failure after the id gap (``recovered``), or ``training.completed`` (``finish``)."""
    data.mkdir(parents=True, exist_ok=True)
    store = Store.in_dir(data, retain_events=keep)
    try:
        store.create_job(job_id=job, org_id="org_local", project_id="proj_default", name=job,
                         config={})  # fmt: skip
        payloads = [{"type": "training.started"}, *[LOG] * max(0, events - 1)][:events]
        if payloads:
            store.append_many(job, payloads)
        if recovered:
            store.append(job, RESTARTED, skip=GAP)
        elif finish:
            store.append(job, {"type": "training.completed", "artifacts": []})
    finally:
        store.close()


@attrs.frozen
class Case:
    job: str
    cursor: str | None
    ids: list[int]
    reset: bool


CASES = [
    # job_plain: ids 1..5, nothing dropped.
    Case("job_plain", None, [1, 2, 3, 4, 5], reset=False),
    Case("job_plain", "0", [1, 2, 3, 4, 5], reset=False),
    Case("job_plain", "3", [4, 5], reset=False),
    Case("job_plain", "5", [], reset=False),
    Case("job_plain", "99", [], reset=True),  # past the end: nothing again, and said so
    # job_kept: 7 events written with retain_events=3: ids 5..7 kept.
    Case("job_kept", None, [5, 6, 7], reset=True),
    Case("job_kept", "1", [5, 6, 7], reset=True),
    Case("job_kept", "4", [5, 6, 7], reset=False),  # every event after 4 is kept
    Case("job_kept", "6", [7], reset=False),
    Case("job_kept", "99", [], reset=True),
    # job_gap: ids 1..3, then recovery's failure after the gap.
    Case("job_gap", None, [1, 2, 3, 4 + GAP], reset=False),
    Case("job_gap", "3", [4 + GAP], reset=False),
    Case("job_gap", "7", [4 + GAP], reset=False),  # ids the log lost in a crash: no hole
    Case("job_gap", str(4 + GAP), [], reset=False),
    Case("job_gap", str(5 + GAP), [], reset=True),
    # job_gap0: recovered before its first event: the first id it ever had is GAP + 1.
    Case("job_gap0", None, [1 + GAP], reset=False),
    Case("job_gap0", "5", [1 + GAP], reset=False),
    # job_gapkept: ids 1..9, recovery at 10 + GAP, written with retain_events=3.
    Case("job_gapkept", None, [8, 9, 10 + GAP], reset=True),
    Case("job_gapkept", "2", [8, 9, 10 + GAP], reset=True),
    Case("job_gapkept", "7", [8, 9, 10 + GAP], reset=False),
    Case("job_gapkept", "100", [10 + GAP], reset=False),
]


async def _sse(http: httpx.AsyncClient, case: Case) -> list[int]:
    frames = await read_stream(http, case.job, case.cursor)
    assert frames[-1] == {"event": "end", "data": "{}"}, frames[-1]
    return [int(f["id"]) for f in frames[:-1]]


async def _ws(ws: Any, case: Case) -> tuple[list[int], list[dict[str, Any]]]:
    await sub(ws, case.job, case.cursor)
    messages = await until_end(ws, case.job)
    return [int(m["id"]) for m in messages if m["type"] == "event"], messages


async def test_both_transports_resolve_every_cursor_alike(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _write(data, "job_plain", 4)
    _write(data, "job_kept", 6, keep=3)
    _write(data, "job_gap", 3, recovered=True)
    _write(data, "job_gap0", 0, recovered=True)
    _write(data, "job_gapkept", 9, recovered=True, keep=3)
    async with (
        open_local_backend(data) as backend,
        httpx.AsyncClient(base_url=backend.base_url, headers=headers_for(backend)) as http,
        connect(backend) as ws,
    ):
        wrong = []
        for case in CASES:
            sse = await _sse(http, case)
            got, messages = await _ws(ws, case)
            kinds = [m["type"] for m in messages]
            expected_kinds = ["subscribed", *(["reset"] if case.reset else [])]
            expected_kinds += ["event"] * len(case.ids) + ["end"]
            recovered = case.cursor is not None and not case.reset
            if (
                sse != case.ids
                or got != case.ids
                or kinds != expected_kinds
                or messages[0]["recovered"] is not recovered
            ):
                wrong.append(f"{case}: sse {sse}, websocket {kinds} {got} {messages[0]}")
    assert wrong == [], "\n".join(wrong)


@pytest.mark.parametrize("cursor", ["abc", "-1", "1e3", "1" * 19, "5x"])
async def test_a_cursor_that_is_not_an_id_is_a_400_on_both(backend, http, cursor) -> None:
    _write(backend.data_dir, "job_x", 2)
    url = "/v1/jobs/job_x/events/stream"
    response = await http.get(url, params=SCOPE, headers={"Last-Event-ID": cursor})
    assert response.status_code == 400
    assert "Last-Event-ID" in response.json()["error"]
    async with connect(backend) as ws:
        await sub(ws, "job_x", cursor)
        answer = await recv(ws)
    assert answer["type"] == "error"
    assert (answer["job"], answer["status"]) == ("job_x", 400)
    assert "'after'" in answer["error"]


async def test_retention_after_crash_recovery_keeps_the_last_n_events(tmp_path: Path) -> None:
    """Defect 4: ``--retain-events 5`` and a restart used to delete all but recovery's event."""
    data = tmp_path / "data"
    _write(data, "job_r", 10, finish=False)  # ids 1..10, left running by a dead process
    async with (
        open_local_backend(data, retain_events=5) as backend,
        httpx.AsyncClient(base_url=backend.base_url, headers=headers_for(backend)) as http,
        connect(backend) as ws,
    ):
        sse = await _sse(http, Case("job_r", None, [], reset=False))
        got, messages = await _ws(ws, Case("job_r", None, [], reset=False))
    assert sse == got == [7, 8, 9, 10, 11 + GAP]
    assert [m["type"] for m in messages[:2]] == ["subscribed", "reset"]
    assert json.loads(json.dumps(messages[-2]))["data"]["error"] == "backend restarted"


async def test_a_cursor_past_the_end_while_recovery_is_pending(tmp_path: Path) -> None:
    """Defect 5: a power loss kept ids 1..8 of a job a client followed up to 11; recovery cannot
    write yet (the database is locked). WebSocket used to replay 1..8 again; both transports
    now deliver only what comes after 11: recovery's failure, once it is written."""
    data = tmp_path / "data"
    _write(data, "job_p", 8, finish=False)
    other = sqlite3.connect(data / DB_NAME, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        async with (
            open_local_backend(data, busy_timeout=0.2) as backend,
            httpx.AsyncClient(base_url=backend.base_url, headers=headers_for(backend)) as http,
            connect(backend) as ws,
        ):
            url = "/v1/jobs/job_p/events/stream"
            headers = {"Last-Event-ID": "11"}
            async with http.stream("GET", url, params=SCOPE, headers=headers) as response:
                await sub(ws, "job_p", "11")
                first = [await recv(ws), await recv(ws)]
                assert [m["type"] for m in first] == ["subscribed", "reset"]
                assert "past" in first[1]["reason"]
                other.execute("ROLLBACK")  # recovery's retry can write now
                with trio.fail_after(10):
                    frames = await FrameReader(response).until("end")
                    rest = await until_end(ws, "job_p")
    finally:
        other.close()
    assert [(f.get("id"), f["event"]) for f in frames] == [
        (str(9 + GAP), "training.failed"),
        (None, "end"),
    ]
    assert [(m["type"], m.get("id")) for m in rest] == [("event", str(9 + GAP)), ("end", None)]


def _random_case(rng: random.Random, n: int) -> tuple[dict[str, Any], str | None, list[int]]:
    """A random log (events, recovery or completion, retention) and cursor, and the ids the
    log keeps."""
    events, recovered = rng.randrange(0, 12), rng.random() < 0.5
    keep = rng.choice([None, None, 1, 2, 3, 5])
    ids = list(range(1, events + 1))
    ids.append(events + 1 + (GAP if recovered else 0))
    kept = ids if keep is None else ids[-keep:]
    first, last = kept[0], kept[-1]
    cursor = rng.choice(
        [
            None,
            0,
            rng.choice(kept),
            first - 1,
            rng.randrange(0, first),
            events + rng.randrange(1, 5),  # in the gap, or past the end without one
            last,
            last + rng.randrange(1, 10**6),
        ]
    )
    spec = {"job": f"job_rand{n:03d}", "events": events, "recovered": recovered, "keep": keep}
    return spec, None if cursor is None else str(cursor), kept


async def test_random_logs_and_cursors_get_the_same_events_on_both(tmp_path: Path) -> None:
    """Seeded random logs and cursors: SSE and WebSocket deliver the kept events after the
    cursor, the same on both, and the WebSocket says ``reset`` exactly where the rule says."""
    rng = random.Random(17)
    data = tmp_path / "data"
    cases = [_random_case(rng, n) for n in range(30)]
    for spec, _, _ in cases:
        _write(data, spec["job"], spec["events"], recovered=spec["recovered"], keep=spec["keep"])
    async with (
        open_local_backend(data) as backend,
        httpx.AsyncClient(base_url=backend.base_url, headers=headers_for(backend)) as http,
        connect(backend) as ws,
    ):
        wrong = []
        for spec, cursor, kept in cases:
            after = int(cursor or 0)
            dropped = spec["keep"] is not None and spec["keep"] < spec["events"] + 1
            reset = after > kept[-1] or (dropped and after < kept[0] - 1)
            case = Case(spec["job"], cursor, [i for i in kept if i > after], reset)
            sse = await _sse(http, case)
            got, messages = await _ws(ws, case)
            has_reset = any(m["type"] == "reset" for m in messages)
            if not sse == got == case.ids or has_reset is not reset:
                wrong.append(f"{spec} {cursor}: kept {kept}, sse {sse}, ws {got} {has_reset}")
    assert wrong == [], "\n".join(wrong)
