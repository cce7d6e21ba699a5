"""Recipe: tell Slack (or any HTTP endpoint) when a run ends, and how it is going.

``notify.slack()`` and ``notify.webhook(url)`` return ready ``Callbacks``; ``+`` merges them with
your own, and for each event every callback runs in the order given. A post never raises (an
outage of the webhook is logged, never retried, never ends ``wait()``) and never takes longer
than ``post_timeout``.

The recipe runs two jobs: one that completes (progress every 10 steps, a sample answer at each
checkpoint, a completion message) and one that fails (its dataset does not exist: Slack gets the
error with ``<!here>``, the only mention ever sent). ``SLACK_WEBHOOK_URL`` is read from the
environment. Run as a script without it, the recipe starts a small local receiver that prints
what it is sent: ``python examples/notifications.py``.
"""

from __future__ import annotations

import contextlib
import json
import os
from functools import partial
from typing import TYPE_CHECKING

import trio
from _recipe import MODEL, demo_dataset, run

from arkor_trio import (
    ArkorClient,
    BlobDataset,
    Callbacks,
    CompletedContext,
    DatasetSource,
    create_trainer,
    notify,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from starlette.requests import Request


async def train_with_notifications(
    client: ArkorClient,
    *,
    webhook_url: str,
    slack_url: str | None,
    dataset: DatasetSource,
    max_steps: int,
    save_steps: int,
) -> str:
    """One run with our own callback plus Slack and a generic webhook; return its status."""

    def done(ctx: CompletedContext) -> None:
        print(f"completed with {len(ctx.artifacts)} artifact(s)")

    callbacks = (
        Callbacks(on_completed=done)  # ours first
        + notify.slack(slack_url, samples=["My invoice is wrong."])  # None: $SLACK_WEBHOOK_URL
        + notify.webhook(webhook_url, progress_every=10)  # {"event", "job", "text", ...}
    )
    trainer = create_trainer(
        name="notify-demo",
        model=MODEL,
        dataset=dataset,
        max_steps=max_steps,
        save_steps=save_steps,
        logging_steps=5,
        callbacks=callbacks,
        client=client,
    )
    result = await trainer.wait()
    print(f"job {result.job.id} ended {result.job.status}")
    return result.job.status


async def main(
    client: ArkorClient,
    *,
    webhook_url: str,
    slack_url: str | None = None,
    max_steps: int = 60,
    save_steps: int = 30,
) -> list[str]:
    """Run a job that completes and one that fails, each notifying; return their statuses.

    ``slack_url`` None means ``$SLACK_WEBHOOK_URL`` (the Slack notifier is off when neither is set).
    """
    good = demo_dataset(client)
    missing = BlobDataset("file:///nonexistent/arkor-trio-missing.jsonl")
    return [
        await train_with_notifications(
            client,
            webhook_url=webhook_url,
            slack_url=slack_url,
            dataset=dataset,
            max_steps=max_steps,
            save_steps=save_steps,
        )
        for dataset in (good, missing)
    ]


@contextlib.asynccontextmanager
async def printing_receiver() -> AsyncIterator[str]:
    """A local endpoint that prints each JSON post it gets; yields its base URL."""
    from hypercorn.config import Config
    from hypercorn.trio import serve
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def receive(request: Request) -> PlainTextResponse:
        body = await request.json()
        print(f"POST {request.url.path}: {json.dumps(body)[:200]}")
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/{hook:path}", receive, methods=["POST"])])
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.loglevel = "WARNING"
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(partial(serve, app, config))  # type: ignore[arg-type]
        yield str(binds[0])
        nursery.cancel_scope.cancel()


async def script(client: ArkorClient) -> list[str]:
    """Script mode: post to $SLACK_WEBHOOK_URL if set, else to a printing local receiver."""
    async with printing_receiver() as base:
        slack_url = os.environ.get("SLACK_WEBHOOK_URL") or f"{base}/slack"
        return await main(client, webhook_url=f"{base}/hook", slack_url=slack_url)


if __name__ == "__main__":
    run(script)
