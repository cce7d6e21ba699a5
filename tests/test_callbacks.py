from __future__ import annotations

import pytest

from arkor_trio import Callbacks, ConfigError
from arkor_trio.trainer._callbacks import as_callbacks


async def _call(fn, ctx):
    result = fn(ctx)
    if hasattr(result, "__await__"):
        await result


def test_mapping_is_accepted():
    cbs = as_callbacks({"on_log": print})
    assert cbs.on_log is print
    assert cbs.on_started is None


def test_unknown_key_names_it():
    with pytest.raises(ConfigError) as info:
        as_callbacks({"on_log": print, "on_finish": print})
    assert info.value.field == "callbacks.on_finish"
    assert "on_finish" in str(info.value)
    assert "on_completed" in str(info.value)  # the message lists what is accepted


def test_non_callable_and_wrong_type():
    with pytest.raises(ConfigError) as info:
        Callbacks(on_log="print")  # type: ignore[arg-type]
    assert info.value.field == "callbacks.on_log"
    with pytest.raises(ConfigError, match="mapping"):
        as_callbacks(["on_log"])  # type: ignore[arg-type]


async def test_merge_runs_every_callback_in_order_sync_and_async():
    seen = []

    async def a(ctx):
        seen.append(("a", ctx))

    def b(ctx):
        seen.append(("b", ctx))

    merged = Callbacks.merge(Callbacks(on_log=a), None, {"on_log": b}, Callbacks(on_started=b))
    await _call(merged.on_log, 1)
    assert seen == [("a", 1), ("b", 1)]
    assert merged.on_started is b  # a single callback is kept as is
    assert merged.on_failed is None


async def test_plus_operator_in_both_directions():
    seen = []
    user = Callbacks(on_completed=lambda ctx: seen.append("user"))
    extra = {"on_completed": lambda ctx: seen.append("extra")}
    await _call((user + extra).on_completed, None)
    await _call((extra + user).on_completed, None)
    assert seen == ["user", "extra", "extra", "user"]


async def test_an_exception_stops_the_chain():
    seen = []

    def bad(ctx):
        raise ValueError("x")

    merged = Callbacks(on_log=bad) + Callbacks(on_log=lambda ctx: seen.append(1))
    with pytest.raises(ValueError, match="x"):
        await _call(merged.on_log, None)
    assert seen == []


def test_the_fast_log_context_equals_the_attrs_one():
    # The dispatcher builds LogContext without its __init__: a new field, a validator or a
    # converter must show up here first.
    import attrs

    from arkor_trio.trainer._contexts import LogContext
    from arkor_trio.trainer._dispatch import LOG_CONTEXT_FIELDS, _context
    from arkor_trio.wire._models import TrainingJob, TrainingLog

    fields = attrs.fields(LogContext)
    assert [f.name for f in fields] == list(LOG_CONTEXT_FIELDS)
    assert all(f.validator is None and f.converter is None for f in fields)
    job = TrainingJob(id="j", org_id="o", project_id="p", name="n", status="running", config={})
    event = TrainingLog(job_id="j", step=4, loss=0.25, epoch=0.5, event_id="9")
    got = _context(event, job, client=None)
    want = LogContext(
        step=4,
        loss=0.25,
        eval_loss=None,
        learning_rate=None,
        epoch=0.5,
        samples_per_second=None,
        job=job,
    )
    assert type(got) is LogContext
    assert (got, repr(got)) == (want, repr(want))
