"""arkor_trio.notify against a real recording HTTP receiver on 127.0.0.1."""

from __future__ import annotations

import logging
import socket

import attrs
import httpx
import pytest
import trio

from arkor_trio import notify
from arkor_trio._errors import ConfigError
from arkor_trio.trainer._callbacks import CALLBACK_NAMES, Callbacks
from arkor_trio.trainer._contexts import (
    CancelledContext,
    CheckpointContext,
    CompletedContext,
    FailedContext,
    LogContext,
)
from arkor_trio.wire._models import Adapter, ChatCompletion, TrainingJob
from tests._receiver import Receiver

SECRET = "s3cr3t-t0ken"
ENV_VARS = ("SLACK_WEBHOOK_URL", "DISCORD_WEBHOOK_URL", "TEAMS_WEBHOOK_URL", "NOTIFY_PROGRESS")
JOB = TrainingJob(id="job-42", name="support-bot-v1", status="running", config={"maxSteps": 100})
COMPLETED = CompletedContext(job=attrs.evolve(JOB, status="completed"), artifacts=[{"a": 1}, {}])
FAILED = FailedContext(
    job=attrs.evolve(JOB, status="failed"), error="CUDA OOM <!channel> @everyone"
)
CANCELLED = CancelledContext(job=attrs.evolve(JOB, status="cancelled"))


def log_ctx(step: int, loss: float | None = 0.5) -> LogContext:
    return LogContext(
        step=step,
        loss=loss,
        eval_loss=None,
        learning_rate=1e-4,
        epoch=0.5,
        samples_per_second=None,
        job=JOB,
    )


class FakeInfer:
    """Stands in for ``ctx.infer``: records calls, answers, raises or hangs per prompt."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[dict[str, str]], int | None]] = []

    async def __call__(self, messages, *, max_tokens=None, **_):
        self.calls.append((messages, max_tokens))
        prompt = messages[0]["content"]
        if prompt == "boom":
            raise RuntimeError("adapter not loaded")
        if prompt == "hang":
            await trio.sleep_forever()
        return ChatCompletion(text=f"answer to {prompt}")


def checkpoint_ctx(infer: FakeInfer, step: int = 10) -> CheckpointContext:
    adapter = Adapter(kind="checkpoint", job_id=JOB.id, step=step)
    return CheckpointContext(step=step, adapter=adapter, job=JOB, infer=infer, artifacts=[])


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def logs(caplog):
    caplog.set_level(logging.DEBUG, logger="arkor_trio.notify")
    return caplog


@pytest.fixture
def serve(nursery):
    async def start(mode="ok") -> Receiver:
        return await Receiver(mode).start(nursery)

    return start


def notify_records(caplog, level=None):
    return [
        r
        for r in caplog.records
        if r.name == "arkor_trio.notify" and (level is None or r.levelno == level)
    ]


# --- payload formats ----------------------------------------------------------------------------


async def test_slack_payloads_and_mention_only_on_failure(serve):
    rx = await serve()
    cbs = notify.slack(rx.url())
    await cbs.on_completed(COMPLETED)
    await cbs.on_failed(FAILED)
    await cbs.on_cancelled(CANCELLED)

    assert [(r.method, r.path) for r in rx.requests] == [
        ("POST", "/services/T000/B000/" + SECRET)
    ] * 3
    assert all(r.headers["content-type"] == "application/json" for r in rx.requests)
    done, failed, cancelled = (r.json["text"] for r in rx.requests)
    assert "*support-bot-v1*" in done
    assert "`job-42`" in done
    assert "2 artifacts" in done
    assert failed.startswith("<!here> ")
    assert failed.count("<!") == 1  # the error's "<!channel>" is escaped, not a second mention
    assert "CUDA OOM &lt;!channel&gt; @everyone" in failed
    assert "cancelled" in cancelled
    assert "<!" not in done + cancelled


async def test_discord_payloads_disarm_outside_mentions(serve):
    rx = await serve()
    cbs = notify.discord(rx.url())
    await cbs.on_completed(COMPLETED)
    await cbs.on_failed(FAILED)
    await cbs.on_cancelled(CANCELLED)

    done, failed, cancelled = (r.json for r in rx.requests)
    assert "**support-bot-v1**" in done["content"]
    assert "2 artifacts" in done["content"]
    assert done["allowed_mentions"] == {"parse": []}
    assert failed["content"].startswith("@here ")
    assert failed["allowed_mentions"] == {"parse": ["everyone"]}
    assert "@\u200beveryone" in failed["content"]
    assert failed["content"].count("@here") == 1
    assert "@here" not in cancelled["content"]
    assert cancelled["allowed_mentions"] == {"parse": []}


async def test_teams_posts_an_adaptive_card(serve):
    rx = await serve()
    cbs = notify.teams(rx.url())
    await cbs.on_completed(COMPLETED)
    await cbs.on_failed(FAILED)

    done, failed = (r.json for r in rx.requests)
    assert done["type"] == "message"
    (attachment,) = done["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = attachment["content"]
    assert card["type"] == "AdaptiveCard"
    assert card["body"][0]["color"] == "Good"
    assert "support-bot-v1" in card["body"][0]["text"]
    failed_body = failed["attachments"][0]["content"]["body"]
    assert failed_body[0]["color"] == "Attention"
    assert failed_body[1]["text"] == FAILED.error


async def test_teams_sample_lines_are_separate_paragraphs(serve):
    rx = await serve()
    await notify.teams(rx.url(), samples=["hi"]).on_checkpoint(checkpoint_ctx(FakeInfer()))
    (request,) = rx.requests
    blocks = request.json["attachments"][0]["content"]["body"]
    assert "color" not in blocks[0]
    assert blocks[1]["text"] == "Prompt: hi\n\nAnswer: answer to hi"


async def test_webhook_default_payload(serve):
    rx = await serve()
    cbs = notify.webhook(rx.url("/hook"))
    await cbs.on_completed(COMPLETED)
    await cbs.on_failed(FAILED)
    await cbs.on_cancelled(CANCELLED)

    done, failed, cancelled = (r.json for r in rx.requests)
    assert done["event"] == "completed"
    assert done["job"] == {"id": "job-42", "name": "support-bot-v1", "status": "completed"}
    assert done["artifact_count"] == 2
    assert failed["event"] == "failed"
    assert failed["error"] == FAILED.error
    assert cancelled == {
        "event": "cancelled",
        "job": {"id": "job-42", "name": "support-bot-v1", "status": "cancelled"},
        "text": "Training support-bot-v1 was cancelled (job job-42).",
    }


async def test_webhook_custom_payload_none_skips_and_raising_is_logged(serve, logs):
    rx = await serve()

    def payload(kind, ctx):
        if kind == "cancelled":
            return None
        if kind == "failed":
            raise KeyError("oops")
        return {"kind": kind, "id": ctx.job.id}

    cbs = notify.webhook(rx.url("/hook"), payload=payload)
    await cbs.on_completed(COMPLETED)
    await cbs.on_cancelled(CANCELLED)
    await cbs.on_failed(FAILED)

    assert [r.json for r in rx.requests] == [{"kind": "completed", "id": "job-42"}]
    (warning,) = notify_records(logs, logging.WARNING)
    assert "building the failed message failed: KeyError: 'oops'" in warning.getMessage()


# --- URLs: environment defaults, missing and bad ones, masking --------------------------------


@pytest.mark.parametrize(
    ("factory", "env_var"),
    [
        (notify.slack, "SLACK_WEBHOOK_URL"),
        (notify.discord, "DISCORD_WEBHOOK_URL"),
        (notify.teams, "TEAMS_WEBHOOK_URL"),
    ],
)
async def test_url_defaults_to_environment(serve, monkeypatch, factory, env_var):
    rx = await serve()
    monkeypatch.setenv(env_var, rx.url("/from-env"))
    await factory().on_completed(COMPLETED)
    assert [r.path for r in rx.requests] == ["/from-env"]


@pytest.mark.parametrize(
    "make",
    [notify.slack, notify.discord, notify.teams, lambda: notify.webhook(None)],
    ids=["slack", "discord", "teams", "webhook"],
)
def test_missing_url_disables_with_one_warning(logs, make):
    cbs = make()
    assert cbs == Callbacks()
    assert all(getattr(cbs, name) is None for name in CALLBACK_NAMES)
    (record,) = notify_records(logs)
    assert record.levelno == logging.WARNING
    assert "disabled: no webhook URL" in record.getMessage()


@pytest.mark.parametrize("url", ["", "not a url", "ftp://host/x", "http:///nohost", "http://[::1"])
def test_bad_url_disables_with_one_warning(logs, url):
    assert notify.slack(url) == Callbacks()
    (record,) = notify_records(logs)
    assert record.levelno == logging.WARNING
    assert "disabled" in record.getMessage()


async def test_url_is_masked_in_logs_and_repr(serve, logs):
    rx = await serve("error")
    cbs = notify.slack(rx.url() + "?token=" + SECRET)
    await cbs.on_completed(COMPLETED)
    assert f"http://127.0.0.1:{rx.port}/***" in logs.text
    assert SECRET not in logs.text
    assert "/services" not in logs.text
    assert SECRET not in repr(cbs)


# --- failing receivers: caught, logged once, bounded in time -----------------------------------


async def test_http_500_is_logged_once_then_debug(serve, logs):
    rx = await serve("error")
    cbs = notify.slack(rx.url())
    await cbs.on_failed(FAILED)
    await cbs.on_completed(COMPLETED)
    await cbs.on_cancelled(CANCELLED)

    assert len(rx.requests) == 3  # no retries
    (warning,) = notify_records(logs, logging.WARNING)
    assert "posting the failed message failed: HTTP 500" in warning.getMessage()
    debug = [r.getMessage() for r in notify_records(logs, logging.DEBUG)]
    assert len(debug) == 2
    assert "(failure 3)" in debug[-1]


async def test_connection_closed_without_answer_is_caught(serve, logs):
    rx = await serve("close")
    await notify.discord(rx.url()).on_failed(FAILED)
    assert len(rx.requests) == 1
    (warning,) = notify_records(logs, logging.WARNING)
    assert "RemoteProtocolError" in warning.getMessage()


async def test_connection_refused_is_caught(logs):
    with socket.socket() as sock:  # a port that was free a moment ago and now has no listener
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    await notify.teams(f"http://127.0.0.1:{port}/x/{SECRET}").on_completed(COMPLETED)
    (warning,) = notify_records(logs, logging.WARNING)
    assert "ConnectError" in warning.getMessage()
    assert SECRET not in logs.text


async def test_never_answering_receiver_ends_after_post_timeout(serve, logs, autojump_clock):
    rx = await serve("hang")
    cbs = notify.slack(rx.url())
    start = trio.current_time()
    await cbs.on_completed(COMPLETED)
    assert trio.current_time() - start == pytest.approx(5.0)
    assert len(rx.requests) == 1
    (warning,) = notify_records(logs, logging.WARNING)
    assert "posting the completed message failed" in warning.getMessage()

    start = trio.current_time()
    await notify.webhook(rx.url(), post_timeout=0.25).on_cancelled(CANCELLED)
    assert trio.current_time() - start == pytest.approx(0.25)


async def test_outer_cancellation_propagates_and_is_not_a_failure(serve, logs, autojump_clock):
    rx = await serve("hang")
    cbs = notify.slack(rx.url())
    start = trio.current_time()
    finished = False
    with trio.move_on_after(1) as outer:
        await cbs.on_failed(FAILED)
        finished = True
    assert outer.cancelled_caught
    assert not finished
    assert trio.current_time() - start == pytest.approx(1.0)
    assert notify_records(logs, logging.WARNING) == []


async def test_shared_http_client_is_used_and_kept_open(serve):
    rx = await serve()
    async with httpx.AsyncClient() as http:
        cbs = notify.webhook(rx.url("/hook"), http=http)
        await cbs.on_completed(COMPLETED)
        await cbs.on_cancelled(CANCELLED)
        assert not http.is_closed
    assert [r.json["event"] for r in rx.requests] == ["completed", "cancelled"]
    assert rx.connections == 1  # keep-alive through the caller's pool


# --- progress and samples -----------------------------------------------------------------------


async def test_progress_every_n_steps(serve):
    rx = await serve()
    cbs = notify.slack(rx.url(), progress_every=2)
    for step in range(6):
        await cbs.on_log(log_ctx(step))
    texts = [r.json["text"] for r in rx.requests]
    assert texts == [f"Training *support-bot-v1*: step {n}/100, loss 0.5." for n in (2, 4)]


async def test_progress_from_environment(serve, monkeypatch):
    rx = await serve()
    assert notify.discord(rx.url()).on_log is None
    monkeypatch.setenv("NOTIFY_PROGRESS", "1")
    assert notify.discord(rx.url(), progress_every=0).on_log is None
    cbs = notify.discord(rx.url())
    for step in (49, 50, 51, 100):
        await cbs.on_log(log_ctx(step, loss=None))
    assert [r.json["content"] for r in rx.requests] == [
        f"Training **support-bot-v1**: step {n}/100." for n in (50, 100)
    ]
    assert notify.DEFAULT_PROGRESS_EVERY == 50


async def test_checkpoint_samples_are_posted(serve):
    rx = await serve()
    infer = FakeInfer()
    cbs = notify.webhook(rx.url(), samples=["What is 2+2?", "Say hi"])
    assert notify.slack(rx.url()).on_checkpoint is None
    await cbs.on_checkpoint(checkpoint_ctx(infer))

    assert infer.calls == [
        ([{"role": "user", "content": "What is 2+2?"}], notify.SAMPLE_MAX_TOKENS),
        ([{"role": "user", "content": "Say hi"}], notify.SAMPLE_MAX_TOKENS),
    ]
    bodies = [r.json for r in rx.requests]
    assert [(b["event"], b["step"], b["prompt"], b["answer"]) for b in bodies] == [
        ("sample", 10, "What is 2+2?", "answer to What is 2+2?"),
        ("sample", 10, "Say hi", "answer to Say hi"),
    ]


async def test_failing_and_hanging_samples_are_caught(serve, logs, autojump_clock):
    rx = await serve()
    infer = FakeInfer()
    cbs = notify.slack(rx.url(), samples=["boom", "hang", "ok"])
    start = trio.current_time()
    await cbs.on_checkpoint(checkpoint_ctx(infer))
    assert trio.current_time() - start == pytest.approx(notify.SAMPLE_TIMEOUT)
    assert len(infer.calls) == 3
    (body,) = (r.json for r in rx.requests)
    assert "Prompt: ok\nAnswer: answer to ok" in body["text"]
    (warning,) = notify_records(logs, logging.WARNING)
    assert "RuntimeError: adapter not loaded" in warning.getMessage()
    assert any("timed out after 60 s" in r.getMessage() for r in notify_records(logs))


# --- merging with the user's callbacks ---------------------------------------------------------


async def test_merge_order_user_first_or_notifier_first(serve):
    rx = await serve()
    seen: list[int] = []

    def user(ctx):
        seen.append(len(rx.requests))  # how many posts happened before the user's callback

    await (Callbacks(on_completed=user) + notify.slack(rx.url())).on_completed(COMPLETED)
    await Callbacks.merge(notify.slack(rx.url()), {"on_completed": user}).on_completed(COMPLETED)
    assert seen == [0, 2]
    assert len(rx.requests) == 2


async def test_failing_notifier_does_not_stop_the_chain(serve):
    rx = await serve("error")
    seen = []
    merged = notify.teams(rx.url()) + Callbacks(on_failed=lambda ctx: seen.append(ctx.error))
    await merged.on_failed(FAILED)
    assert seen == [FAILED.error]


# --- arguments ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"post_timeout": 0}, "post_timeout"),
        ({"post_timeout": float("inf")}, "post_timeout"),
        ({"progress_every": -1}, "progress_every"),
        ({"progress_every": True}, "progress_every"),
        ({"samples": "just one string"}, "samples"),
        ({"samples": ["ok", 3]}, "samples"),
        ({"http": object()}, "http"),
        ({"payload": "nope"}, "payload"),
    ],
)
def test_bad_arguments_raise_config_error(kwargs, field):
    with pytest.raises(ConfigError) as info:
        notify.webhook("http://127.0.0.1/x", **kwargs)
    assert info.value.field == field


def test_public_names():
    assert sorted(notify.__all__) == [
        "DEFAULT_PROGRESS_EVERY",
        "EventKind",
        "PayloadBuilder",
        "SAMPLE_MAX_TOKENS",
        "SAMPLE_TIMEOUT",
        "Sample",
        "discord",
        "slack",
        "teams",
        "webhook",
    ]
    assert all(hasattr(notify, name) for name in notify.__all__)
