"""The trio API awaited straight from asyncio, without ``aio`` (what a notebook user tries first).

``await trainer.run()`` (and ``start``/``wait``/``cancel``) in asyncio code go through
``aio.run`` by themselves; ``async with ArkorClient()``, a client request and ``client.events``
raise a ``ConfigError`` naming the ``aio`` form to use, instead of trio's own
``must be called from async context`` or asyncio's ``Task got bad yield``.
"""

from __future__ import annotations

import asyncio

import pytest

from arkor_trio import ArkorClient, ConfigError, aio
from tests.test_aio import assert_no_trio_left, backend, trainer_for

__all__ = ["backend"]  # the fixture, imported for the tests below


def test_trainer_calls_work_directly_from_asyncio(backend) -> None:
    logs: list[int] = []
    trainer = trainer_for(backend, "direct", 4, on_log=lambda ctx: logs.append(ctx.step))

    async def main() -> str:
        job_id = await trainer.start()  # no aio.run: the trainer goes through it itself
        result = await trainer.run()
        await trainer.cancel()  # a finished job: not an error
        assert aio.is_running()
        assert result.job.id == job_id
        assert [log.step for log in result.history] == logs
        await aio.run(trainer.client.aclose)
        return result.job.status

    assert asyncio.run(main()) == "completed"
    assert logs[-1] == 4
    assert_no_trio_left()


def test_cancelling_a_direct_run_cancels_the_job(backend) -> None:
    trainer = trainer_for(backend, "direct-cancel", 100_000)
    started = asyncio.Event()
    trainer.callbacks = trainer.callbacks.merge(
        trainer.callbacks, {"on_log": lambda ctx: started.set()}
    )

    async def main() -> str:
        task = asyncio.create_task(trainer.run())
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        status = (await trainer.wait()).job.status
        await aio.run(trainer.client.aclose)
        return status

    assert asyncio.run(main()) == "cancelled"


@pytest.mark.parametrize(
    ("call", "advice"),
    [
        ("enter", "aio.context(ArkorClient())"),
        ("request", "aio.run(client.list_jobs)"),
        ("events", "aio.iterate(client.events(job_id))"),
    ],
)
def test_the_client_from_asyncio_says_what_to_use(call: str, advice: str) -> None:
    client = ArkorClient("http://127.0.0.1:9", "t", org_slug="o", project_slug="p")

    async def main() -> None:
        if call == "enter":
            async with client:
                pass
        elif call == "request":
            await client.list_jobs()
        else:
            async with client.events("job_1"):
                pass

    with pytest.raises(ConfigError) as caught:
        asyncio.run(main())
    message = str(caught.value)
    assert "awaited from asyncio" in message
    assert advice in message
    assert "docs/asyncio.md" in message
