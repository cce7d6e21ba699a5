"""Recipe: a small trio HTTP service that starts a training run per request.

``POST /runs {"name": ..., "max_steps": ...}`` builds a *new* trainer (one trainer is one job,
forever: a factory per request), starts it, answers ``202 {"job_id": ...}`` at once, and follows
the job in a task of the service's nursery. ``GET /runs`` lists every run with its status, last
step and loss; ``GET /runs/{job_id}`` shows one.

Leaving ``open_training_service`` stops following (the jobs keep running on the backend; call
``cancel()`` on them first if that is what shutdown should mean). Run it:
``python examples/training_service.py`` (submits two runs to itself and prints the table) or
``python examples/training_service.py --serve 8788`` (serves until Ctrl-C).
"""

from __future__ import annotations

import contextlib
import sys
from functools import partial
from typing import TYPE_CHECKING, Any

import attrs
import httpx
import trio
from _recipe import MODEL, demo_dataset, run
from hypercorn.config import Config
from hypercorn.trio import serve
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from arkor_trio import (
    ApiError,
    ArkorClient,
    ArkorError,
    ConfigError,
    LogContext,
    Trainer,
    create_trainer,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from starlette.requests import Request


@attrs.define
class Run:
    """One run the service follows."""

    trainer: Trainer
    status: str = "queued"
    step: int = 0
    loss: float | None = None
    error: str | None = None
    done: trio.Event = attrs.field(factory=trio.Event)

    def as_json(self) -> dict[str, Any]:
        """The run as the HTTP API shows it."""
        return {
            "job_id": self.trainer.job_id,
            "name": self.trainer.name,
            "status": self.status,
            "step": self.step,
            "loss": self.loss,
            "error": self.error,
        }


class TrainingService:
    """Starts runs on request and follows each one in its own task."""

    def __init__(self, client: ArkorClient, nursery: trio.Nursery) -> None:
        self.client = client
        self.runs: dict[str, Run] = {}
        self._nursery = nursery

    def make_trainer(self, name: str, max_steps: int, on_log: Any) -> Trainer:
        """The factory: a fresh trainer for every request."""
        return create_trainer(
            name=name,
            model=MODEL,
            dataset=demo_dataset(self.client),
            max_steps=max_steps,
            callbacks={"on_log": on_log},
            client=self.client,
        )

    async def submit(self, name: str, max_steps: int) -> str:
        """Create and start a job, follow it in the background; return its id at once.

        Raises:
            ConfigError: A bad name or step count.
            ApiError: The backend refused the job.
        """
        run: Run | None = None

        def on_log(ctx: LogContext) -> None:
            assert run is not None
            run.status, run.step = ctx.job.status, ctx.step
            run.loss = ctx.loss if ctx.loss is not None else run.loss

        trainer = self.make_trainer(name, max_steps, on_log)
        run = Run(trainer)
        job_id = await trainer.start()
        self.runs[job_id] = run
        self._nursery.start_soon(self._follow, run, name=f"follow {job_id}")
        return job_id

    async def _follow(self, run: Run) -> None:
        try:
            result = await run.trainer.wait()
            run.status, run.error = result.job.status, result.job.error
        except ArkorError as exc:  # stop following this job, keep serving the others
            run.status, run.error = "unknown", f"lost track of the job: {exc}"
        finally:
            run.done.set()

    async def wait_done(self, job_id: str) -> Run:
        """Wait until the service has followed ``job_id`` to its end."""
        run = self.runs[job_id]
        await run.done.wait()
        return run


@contextlib.asynccontextmanager
async def open_training_service(client: ArkorClient) -> AsyncIterator[TrainingService]:
    """A :class:`TrainingService` whose follower tasks live as long as the block."""
    async with trio.open_nursery() as nursery:
        yield TrainingService(client, nursery)
        nursery.cancel_scope.cancel()  # stop following; the jobs keep running on the backend


def build_app(service: TrainingService) -> Starlette:
    """The HTTP API: ``POST /runs``, ``GET /runs``, ``GET /runs/{job_id}``."""

    async def start_run(request: Request) -> JSONResponse:
        try:
            body = await request.json()
        except ValueError:
            return JSONResponse({"error": "the body must be JSON"}, 400)
        if not isinstance(body, dict):
            return JSONResponse({"error": "the body must be a JSON object"}, 400)
        try:
            job_id = await service.submit(body.get("name", "service-run"), body.get("max_steps"))
        except ConfigError as exc:
            return JSONResponse({"error": str(exc), "field": exc.field}, 400)
        except ApiError as exc:
            return JSONResponse({"error": f"the backend refused the job: {exc}"}, 502)
        return JSONResponse({"job_id": job_id}, 202)

    async def list_runs(request: Request) -> JSONResponse:
        return JSONResponse({"runs": [r.as_json() for r in service.runs.values()]})

    async def get_run(request: Request) -> JSONResponse:
        found = service.runs.get(request.path_params["job_id"])
        if found is None:
            return JSONResponse({"error": "no such run"}, 404)
        return JSONResponse(found.as_json())

    return Starlette(
        routes=[
            Route("/runs", start_run, methods=["POST"]),
            Route("/runs", list_runs, methods=["GET"]),
            Route("/runs/{job_id}", get_run, methods=["GET"]),
        ]
    )


async def serve_http(
    service: TrainingService,
    port: int = 0,
    *,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the HTTP API on 127.0.0.1 until cancelled; report the base URL when listening."""
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.loglevel = "WARNING"
    # hypercorn types its app parameter with its own ASGI TypedDicts; Starlette speaks the same.
    serving = partial(serve, build_app(service), config)  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(serving)
        task_status.started(str(binds[0]))


async def main(
    client: ArkorClient, *, max_steps: int = 40, serve_on: int | None = None
) -> list[dict[str, Any]]:
    """Start the service, submit two runs to it over HTTP, wait for both; return ``GET /runs``.

    With ``serve_on``, serve on that port until cancelled instead.
    """
    async with open_training_service(client) as service, trio.open_nursery() as nursery:
        base = await nursery.start(serve_http, service, serve_on or 0)
        print(f"training service on {base}")
        if serve_on is not None:
            await trio.sleep_forever()
        async with httpx.AsyncClient(base_url=base) as http:
            job_ids: list[str] = []

            async def submit(name: str) -> None:
                response = await http.post("/runs", json={"name": name, "max_steps": max_steps})
                response.raise_for_status()
                job_ids.append(response.json()["job_id"])

            async with trio.open_nursery() as requests:  # two requests at once
                for name in ("svc-a", "svc-b"):
                    requests.start_soon(submit, name)
            for job_id in job_ids:
                run = await service.wait_done(job_id)
                print(f"{job_id}: {run.status} at step {run.step}, loss {run.loss}")
            runs: list[dict[str, Any]] = (await http.get("/runs")).json()["runs"]
        nursery.cancel_scope.cancel()
    return runs


if __name__ == "__main__":
    port = int(sys.argv[2]) if sys.argv[1:2] == ["--serve"] else None
    run(partial(main, serve_on=port))
