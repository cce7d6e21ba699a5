"""A local backend running in a background thread (its own trio run), for command-line tests.

The CLI calls ``trio.run`` itself, so its tests cannot run inside a trio test: they are plain
functions calling ``cli.main([...])`` (or a subprocess) against this backend, and use
:meth:`BackgroundBackend.call` to run coroutines (create jobs, follow events) in its loop.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any

import trio

from arkor_trio import BlobDataset, TrainingLog, create_trainer
from arkor_trio.server import LocalBackend, open_local_backend

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from pathlib import Path

    from arkor_trio import ArkorClient, JobEvent

MODEL = "unsloth/gemma-4-E4B-it"
#: Far beyond any test: a job with this many steps keeps running until cancelled.
FOREVER = 10**6


class BackgroundBackend:
    """``open_local_backend(data_dir)`` in a daemon thread until :meth:`stop`."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._ready = threading.Event()
        self._thread = threading.Thread(target=trio.run, args=(self._main,), daemon=True)
        self._backend: LocalBackend | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event | None = None
        self._error: BaseException | None = None

    async def _main(self) -> None:
        try:
            async with open_local_backend(self.data_dir) as backend:
                self._backend = backend
                self._token = trio.lowlevel.current_trio_token()
                self._stop = trio.Event()
                self._ready.set()
                await self._stop.wait()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            raise

    def start(self) -> BackgroundBackend:
        self._thread.start()
        assert self._ready.wait(30), "the background backend did not start"
        if self._error is not None:
            raise self._error
        return self

    def stop(self) -> None:
        if self._stop is not None:
            trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
        self._thread.join(30)

    @property
    def backend(self) -> LocalBackend:
        assert self._backend is not None
        return self._backend

    def env(self) -> dict[str, str]:
        """The environment a client process needs to reach this backend."""
        return {"ARKOR_CLOUD_API_URL": self.backend.base_url, "ARKOR_TOKEN": self.backend.token}

    def call(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        """Run ``await fn(client, *args)`` in the backend's loop (bounded to 60 s)."""

        async def run() -> Any:
            with trio.fail_after(60):
                async with self.backend.client() as client:
                    return await fn(client, *args)

        return trio.from_thread.run(run, trio_token=self._token)

    # --- ready-made jobs ----------------------------------------------------------------------

    def train(self, steps: int = 4, **options: Any) -> str:
        """Train a job to its end; return its id."""

        async def run(client: ArkorClient) -> str:
            trainer = create_trainer(
                name="cli-test", model=MODEL, dataset=BlobDataset.demo(), max_steps=steps,
                client=client, **options,
            )  # fmt: skip
            result = await trainer.run()
            assert result.job.status == "completed", result.job
            return result.job.id

        job_id: str = self.call(run)
        return job_id

    def start_idle_job(self) -> str:
        """Start a job that logs step 1 and then stays running, silent, until cancelled."""

        async def run(client: ArkorClient) -> str:
            trainer = create_trainer(
                name="cli-idle", model=MODEL, dataset=BlobDataset.demo(), max_steps=FOREVER,
                logging_steps=FOREVER, eval_steps=FOREVER, save_steps=FOREVER, client=client,
            )  # fmt: skip
            job_id = await trainer.start()
            async with client.events(job_id) as stream:
                async for event in stream:
                    if isinstance(event, TrainingLog):
                        break
            return job_id

        job_id: str = self.call(run)
        return job_id

    def terminal_event(self, job_id: str) -> JobEvent:
        """Follow a job's events to its terminal event and return it."""

        async def run(client: ArkorClient) -> JobEvent:
            async with client.events(job_id) as stream:
                last = None
                async for event in stream:
                    last = event
            assert last is not None
            return last

        event: JobEvent = self.call(run)
        return event


def client_env(bg: BackgroundBackend) -> dict[str, str]:
    """``os.environ`` plus the backend's URL and token (for subprocesses)."""
    return {**os.environ, **bg.env()}
