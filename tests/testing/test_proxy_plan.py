"""The chaos proxy's fault model: validation, the per-connection cursor, the text syntax."""

from __future__ import annotations

from functools import partial

import httpx
import pytest
import trio

import arkor_trio.testing
from arkor_trio import ConfigError
from arkor_trio.testing import (
    CutAfterEvents,
    DropInHeaders,
    Latency,
    PassThrough,
    Plan,
    Refuse,
    Stall,
    Status,
    Throttle,
)
from arkor_trio.testing._cli import chaos_main, parse_plan, serve_chaos
from arkor_trio.testing._plan import PlanCursor, coerce_plan

from ._proxy_upstream import open_upstream


def steps(plan: Plan, times: list[float]) -> list[tuple[object, ...]]:
    cursor = PlanCursor(plan)
    return [cursor.next_step(t) for t in times]


def test_public_names():
    public = {n for n in dir(arkor_trio.testing) if not n.startswith("_")}
    assert set(arkor_trio.testing.__all__) == public
    assert arkor_trio.testing.__all__ == sorted(arkor_trio.testing.__all__)


def test_sequential_plan_then_default():
    cut, mid = CutAfterEvents(1), CutAfterEvents(2, mode="mid_frame")
    plan = Plan.of(cut, mid, default=Latency(ms=5))
    assert steps(plan, [0, 1, 2, 3]) == [(cut,), (mid,), (Latency(ms=5),), (Latency(ms=5),)]
    assert steps(Plan.of(cut), [0, 1]) == [(cut,), (PassThrough(),)]
    assert steps(Plan.of(cut, mid, cycle=True), [0, 1, 2]) == [(cut,), (mid,), (cut,)]


def test_status_covers_count_connections_and_refuse_covers_its_window():
    status, refuse = Status(code=429, count=3), Refuse(ms=500)
    plan = Plan.of(status, refuse, CutAfterEvents(0))
    got = steps(plan, [0.0, 0.1, 0.2, 1.0, 1.2, 1.499, 1.5])
    assert got == [(status,)] * 3 + [(refuse,)] * 3 + [(CutAfterEvents(0),)]
    assert steps(Plan.of(Refuse(ms=0)), [0, 0]) == [(Refuse(ms=0),), (PassThrough(),)]


def test_random_plan_is_deterministic_per_seed():
    kinds = [CutAfterEvents(1), Stall(seconds=1), PassThrough(), Status(code=503, count=2)]
    times = [float(t) for t in range(40)]
    first = steps(Plan.random(kinds, seed=5, events=(0, 9)), times)
    assert first == steps(Plan.random(kinds, seed=5, events=(0, 9)), times)
    assert first != steps(Plan.random(kinds, seed=6, events=(0, 9)), times)
    ks = {s[0].k for s in first if isinstance(s[0], CutAfterEvents)}
    assert len(ks) > 1
    assert all(0 <= k <= 9 for k in ks)
    weighted = steps(Plan.random(kinds, seed=5, weights=[0, 0, 1, 0]), times)
    assert set(weighted) == {(PassThrough(),)}


def test_composition_rules():
    assert Plan.of((Latency(ms=1), Throttle(100), CutAfterEvents(2))).steps[0][2] == CutAfterEvents(
        2
    )
    with pytest.raises(ConfigError, match="at most one action"):
        Plan.of((CutAfterEvents(1), Status()))
    with pytest.raises(ConfigError, match="at most one Latency"):
        Plan.of((Latency(ms=1), Latency(ms=2)))
    with pytest.raises(ConfigError, match="not a fault"):
        Plan.of("cut")  # deliberately wrong type
    with pytest.raises(ConfigError, match="plan must be"):
        coerce_plan(CutAfterEvents(1))  # deliberately wrong type
    assert coerce_plan([CutAfterEvents(1)]) == Plan.of(CutAfterEvents(1))


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: CutAfterEvents(-1), "CutAfterEvents.k"),
        (lambda: CutAfterEvents(1, mode="sideways"), "CutAfterEvents.mode"),
        (lambda: Stall(seconds=float("inf")), "Stall.seconds"),
        (lambda: Status(code=700), "Status.code"),
        (lambda: Status(count=0), "Status.count"),
        (lambda: Status(retry_after=-1), "Status.retry_after"),
        (lambda: Throttle(0), "Throttle.bytes_per_s"),
        (lambda: DropInHeaders(fraction=1), "DropInHeaders.fraction"),
        (lambda: Plan.random([], seed=1), "plan"),
        (lambda: Plan.random([PassThrough()], seed=1, weights=[1, 2]), "weights"),
        (lambda: Plan.random([PassThrough()], seed=1, events=(3, 1)), "events"),
    ],
)
def test_bad_values_raise_config_error_naming_the_field(make, field):
    with pytest.raises(ConfigError) as info:
        make()
    assert info.value.field == field


def test_parse_plan_example():
    plan = parse_plan("cut:3,mid:2,stall:1:5,status:503:2:1,refuse:500,mix:seed=1")
    assert plan.seed == 1
    assert plan.steps == (
        (CutAfterEvents(3),),
        (CutAfterEvents(2, mode="mid_frame"),),
        (Stall(after_events=1, seconds=5),),
        (Status(code=503, count=2, retry_after=1),),
        (Refuse(ms=500),),
    )


def test_parse_plan_every_form():
    plan = parse_plan(
        "pass, cut:0:graceful, reset:1, afterid:2, refuse:10:reset, status:429,"
        " latency:50:10+throttle:2000+headers:0.25, cycle"
    )
    assert plan.cycle
    assert plan.seed is None
    assert plan.steps == (
        (PassThrough(),),
        (CutAfterEvents(0, graceful=True),),
        (CutAfterEvents(1, mode="reset"),),
        (CutAfterEvents(2, mode="after_id"),),
        (Refuse(ms=10, reset=True),),
        (Status(code=429),),
        (Latency(ms=50, jitter_ms=10), Throttle(2000), DropInHeaders(fraction=0.25)),
    )
    assert parse_plan("") == Plan()
    assert parse_plan("cut:1,mix:seed=4:events=2-5").events == (2, 5)


@pytest.mark.parametrize(
    ("text", "token", "reason"),
    [
        ("cut:3,explode:1", "explode:1", "unknown fault"),
        ("cut", "cut", "takes 1..2 arguments"),
        ("cut:x", "cut:x", "K must be a whole number"),
        ("cut:1:soft", "cut:1:soft", "expected 'graceful'"),
        ("stall:1:soon", "stall:1:soon", "seconds must be a number"),
        ("status:700", "status:700", "Status.code must be 200..599"),
        ("cut:-2", "cut:-2", "CutAfterEvents.k"),
        ("cut:1,mix", "mix", "mix needs seed=N"),
        ("cut:1,mix:salt=2", "mix:salt=2", "unknown mix option"),
        ("status:503:2:1.5", "status:503:2:1.5", "retry-after \\(seconds\\) must be a whole"),
    ],
)
def test_parse_plan_errors_name_the_token(text, token, reason):
    with pytest.raises(ConfigError, match=reason) as info:
        parse_plan(text)
    assert repr(token) in str(info.value)
    assert info.value.field == "plan"


def test_parse_plan_whole_plan_errors():
    with pytest.raises(ConfigError, match="needs at least one step"):
        parse_plan("mix:seed=1")
    with pytest.raises(ConfigError, match="at most one action"):
        parse_plan("cut:1+status:503")


def test_chaos_main_rejects_bad_input_before_listening():
    with pytest.raises(ConfigError, match="'nope:1'"):
        chaos_main("127.0.0.1:8787", 0, "nope:1")
    with pytest.raises(ConfigError, match="upstream"):
        chaos_main("no-port", 0, "cut:1")


async def test_serve_chaos_prints_a_line_per_connection():
    lines: list[str] = []
    plan = parse_plan("cut:1,status:503:1:2")
    async with (
        open_upstream(total=2) as upstream,
        trio.open_nursery() as nursery,
        httpx.AsyncClient() as client,
    ):
        serve = partial(serve_chaos, f"127.0.0.1:{upstream.port}", 0, plan, emit=lines.append)
        port = await nursery.start(serve)
        url = f"http://127.0.0.1:{port}/v1/jobs/j1/events/stream"
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get(url, headers={"Last-Event-ID": "0"})
        assert (await client.get(url)).status_code == 503
        nursery.cancel_scope.cancel()
    upstream_address = f"127.0.0.1:{upstream.port}"
    assert (
        lines[0]
        == f"arkor-trio chaos: http://127.0.0.1:{port} -> {upstream_address} (Ctrl-C to stop)"
    )
    assert lines[1].startswith(
        "#0 GET /v1/jobs/j1/events/stream last-event-id=0 status=200 events=1 "
    )
    assert " cut=clean@" in lines[1]
    assert lines[2].startswith("#1 GET /v1/jobs/j1/events/stream status=503 events=0 ")
    assert " cut=status@" in lines[2]
    assert len(lines) == 3


def test_only_aims_a_plan_at_matching_request_targets():
    plan = Plan.of(CutAfterEvents(1), only="/events/stream")
    assert plan.targets("/v1/jobs/j/events/stream?orgSlug=o")
    assert not plan.targets("/v1/me")
    assert Plan().targets("/anything")
    assert Plan.random([CutAfterEvents(1)], seed=1, only="x").only == "x"
    with pytest.raises(ConfigError, match="not a regular expression") as info:
        Plan(only="(")
    assert info.value.field == "only"
