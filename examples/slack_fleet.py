"""Recipe: Slack on every completion, three replicas.

The Slack notifier of ``arkor_trio.notify`` as a fleet: every job of the project gets its Slack
messages once, whichever replica follows it, and a replica can die without a job being missed
(docs/fleet.md). In production each replica is a process on its own machine, all sharing one
Redis::

    SLACK_WEBHOOK_URL=https://hooks.slack.com/... arkor-trio fleet \\
        --store redis://redis.internal:6379/0 --namespace slack-notifier \\
        --callbacks slack_fleet:callbacks

``callbacks()`` below is what ``--callbacks`` names. ``main`` runs the same thing in one process
to show it: three ``Fleet`` replicas (each with its own Redis connection, as separate processes
would have), a few short runs, and it returns which replica posted each job's completion.
Run as a script it needs a Redis (``REDIS_URL``, default ``redis://127.0.0.1:6379/0``) and posts
to ``$SLACK_WEBHOOK_URL`` (without it, the notifier is off and only the completions print).
"""

from __future__ import annotations

import os
import secrets

import trio
from _recipe import MODEL, demo_dataset, run

from arkor_trio import ArkorClient, Callbacks, CompletedContext, Fleet, create_trainer, notify
from arkor_trio.stream import RedisCursorStore


def callbacks(slack_url: str | None = None) -> Callbacks:
    """What every replica runs for every job: Slack on completion and failure."""
    return notify.slack(slack_url)  # None: $SLACK_WEBHOOK_URL


async def main(
    client: ArkorClient,
    *,
    redis_url: str = "redis://127.0.0.1:6379/0",
    slack_url: str | None = None,
    namespace: str | None = None,
    jobs: int = 3,
    replicas: int = 3,
    max_steps: int = 20,
) -> dict[str, str]:
    """Start ``replicas`` replicas, run ``jobs`` short jobs; return job id -> replica that
    handled its completion (each exactly once)."""
    namespace = namespace or f"slack-notifier-{secrets.token_hex(4)}"
    completed: dict[str, str] = {}
    all_done = trio.Event()

    def replica(name: str) -> Fleet:
        def done(ctx: CompletedContext) -> None:
            assert ctx.delivery is not None
            print(f"{name}: job {ctx.job.id} completed (token {ctx.delivery.token})")
            completed[ctx.job.id] = name
            if len(completed) == jobs:
                all_done.set()

        return Fleet(
            client,
            store=RedisCursorStore(redis_url, namespace=namespace),
            callbacks=callbacks(slack_url) + Callbacks(on_completed=done),
            lease_ttl=2.0,
            discovery_interval=0.5,
            name=name,
        )

    fleet = [replica(f"replica-{i + 1}") for i in range(replicas)]
    async with trio.open_nursery() as nursery:
        for member in fleet:
            nursery.start_soon(member.run)
        for i in range(jobs):
            trainer = create_trainer(
                name=f"fleet-demo-{i + 1}",
                model=MODEL,
                dataset=demo_dataset(client),
                max_steps=max_steps,
                client=client,
            )
            await trainer.start()
        with trio.fail_after(300):
            await all_done.wait()
        for member in fleet:
            member.stop()  # between events; leases released at once
    return completed


async def script(client: ArkorClient) -> dict[str, str]:
    return await main(client, redis_url=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))


if __name__ == "__main__":
    run(script)
