"""Recipe: a FastAPI service (asyncio) that trains through ``arkor_trio.aio``.

The trio client runs inside the service's own asyncio loop, in one trio guest run: no thread per
run and no blocked loop, so every other request keeps being served while runs train.

* ``POST /runs {"name": ..., "max_steps": ...}``: a new trainer, started; ``202 {"job_id"}`` at
  once, the run followed by an asyncio task awaiting ``aio.run(trainer.run)``.
* ``GET /runs`` and ``GET /runs/{job_id}``: status, step and loss as the callbacks saw them;
  ``?wait=S`` (at most 60) long-polls until the run ended or S seconds passed.
* ``GET /runs/{job_id}/events``: the job's events relayed as Server-Sent Events, resuming after
  the client's ``Last-Event-ID`` (``aio.iterate(client.events(...))``: one event in flight).
* ``DELETE /runs/{job_id}``: cancels the follower task; ``Trainer.run(cancel_on_abort=True)``
  then sends the backend cancel before the task ends.

Shutting the service down cancels the runs it follows in the same way. Run it with
``python examples/fastapi_service.py [PORT]``: against ``ARKOR_CLOUD_API_URL`` when set,
otherwise against a local backend started inside the service (also through ``aio``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlsplit

import attrs
from fastapi import FastAPI, Header, HTTPException, Query
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field

from arkor_trio import (
    ApiError,
    ArkorClient,
    ArkorError,
    BlobDataset,
    ConfigError,
    DatasetSource,
    HuggingfaceDataset,
    JobEvent,
    Trainer,
    aio,
    create_trainer,
    event_to_wire,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from fastapi import Request

#: The longest ``Last-Event-ID`` a client may send (event ids are short opaque strings).
MAX_EVENT_ID = 128
#: The longest long-poll ``GET /runs/{id}?wait=`` may ask for, in seconds.
MAX_WAIT = 60.0
#: The largest request body read (``POST /runs`` needs a few dozen bytes).
MAX_BODY = 16 * 1024
#: The cloud's model name; the local backend trains its stand-in for it.
MODEL = "unsloth/gemma-4-E4B-it"


def demo_dataset(client: ArkorClient) -> DatasetSource:
    """The support-triage demo data: the bundled file locally, the hub copy on the cloud."""
    if urlsplit(client.base_url).hostname in ("127.0.0.1", "localhost", "::1"):
        return BlobDataset.demo()
    return HuggingfaceDataset("arkorlab/triage-demo")


class RunRequest(BaseModel):
    """The body of ``POST /runs``."""

    name: str = Field(min_length=1, max_length=100)
    max_steps: int = Field(gt=0, le=1_000_000)


@attrs.define
class Run:
    """One run the service follows; the trainer's callbacks keep it up to date."""

    trainer: Trainer
    status: str = "queued"
    step: int = 0
    loss: float | None = None
    error: str | None = None
    task: asyncio.Task[None] | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "job_id": self.trainer.job_id,
            "name": self.trainer.name,
            "status": self.status,
            "step": self.step,
            "loss": self.loss,
            "error": self.error,
        }


class RunService:
    """The runs of one service, all followed in the service's asyncio loop."""

    def __init__(self, client: ArkorClient) -> None:
        self.client = client
        self.runs: dict[str, Run] = {}

    async def submit(self, name: str, max_steps: int) -> Run:
        run: Run | None = None

        # The callbacks run in the trio guest run, on the loop's own thread: plain writes.
        def on_log(ctx: Any) -> None:
            assert run is not None
            run.status, run.step = "running", ctx.step
            run.loss = ctx.loss if ctx.loss is not None else run.loss

        def on_end(ctx: Any) -> None:
            assert run is not None
            run.status = ctx.job.status
            run.error = getattr(ctx, "error", None)

        trainer = create_trainer(
            name=name,
            model=MODEL,
            dataset=demo_dataset(self.client),
            max_steps=max_steps,
            callbacks={"on_log": on_log, "on_completed": on_end, "on_failed": on_end},
            client=self.client,
        )
        run = Run(trainer)
        job_id = await aio.run(trainer.start)
        self.runs[job_id] = run
        run.task = asyncio.create_task(self._follow(run), name=f"follow {job_id}")
        return run

    async def _follow(self, run: Run) -> None:
        try:
            await aio.run(run.trainer.run)  # cancelling this task cancels the job too
        except asyncio.CancelledError:
            run.status = "cancelled"
            raise
        except ArkorError as exc:
            run.status, run.error = "unknown", f"lost track of the job: {exc}"

    async def wait(self, run: Run, timeout: float) -> None:
        """Wait until the run's follower ended, at most ``timeout`` seconds."""
        if run.task is not None and timeout > 0:
            await asyncio.wait([run.task], timeout=timeout)

    async def cancel(self, run: Run) -> None:
        """Cancel the follower: ``Trainer.run`` sends the backend cancel, then the task ends."""
        if run.task is not None and not run.task.done():
            run.task.cancel()
            await asyncio.wait([run.task])

    async def aclose(self) -> None:
        for run in self.runs.values():
            await self.cancel(run)


class BodyLimit:
    """ASGI middleware: read at most ``limit`` bytes of a request body, else answer 413.

    The body is read (and counted) before the app sees it, so a hostile client cannot make
    FastAPI buffer an unbounded body; what fits is replayed to the app unchanged.
    """

    def __init__(self, app: Any, limit: int = MAX_BODY) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "DELETE"):
            await self.app(scope, receive, send)
            return
        too_large = JSONResponse(
            {"error": f"the body is larger than {self.limit} bytes", "field": "body"}, 413
        )
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        if not declared.isdigit() or int(declared) > self.limit:
            await too_large(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            size += len(message.get("body", b""))
            if size > self.limit:
                await too_large(scope, receive, send)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        replay: list[Any] = [{"type": "http.request", "body": b"".join(chunks)}]

        async def replayed() -> Any:
            return replay.pop() if replay else await receive()

        await self.app(scope, replayed, send)


def sse_frame(event: JobEvent) -> str:
    """One job event relayed as the Arkor stream sent it: same id, same camelCase JSON data."""
    data = event_to_wire(event)  # {"type": "training.log", "jobId": ..., "step": 3, ...}
    lines = [f"id: {event.event_id}"] if event.event_id is not None else []
    lines += [f"event: {data.get('type', 'message')}", f"data: {json.dumps(data)}"]
    return "\n".join(lines) + "\n\n"


def create_app(client_factory: Callable[[], ArkorClient] | None = None) -> FastAPI:
    """The service; ``client_factory`` gives the trio ``ArkorClient`` (default: a local backend
    unless ``ARKOR_CLOUD_API_URL`` is set). The client is opened and closed in the guest run.
    """

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            if client_factory is not None:
                client = client_factory()
            elif os.environ.get("ARKOR_CLOUD_API_URL"):
                client = ArkorClient()
            else:
                from arkor_trio.server import open_local_backend

                backend = await stack.enter_async_context(aio.context(open_local_backend()))
                print(f"(started a local backend at {backend.base_url})")
                client = backend.client()
            app.state.service = RunService(await stack.enter_async_context(aio.context(client)))
            try:
                yield
            finally:
                await app.state.service.aclose()

    app = FastAPI(lifespan=lifespan)
    app.add_middleware(BodyLimit, limit=MAX_BODY)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        field = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
        return JSONResponse({"error": first.get("msg", "invalid request"), "field": field}, 400)

    def service() -> RunService:
        found: RunService = app.state.service
        return found

    def find(job_id: str) -> Run:
        run = service().runs.get(job_id)
        if run is None:
            raise HTTPException(404, "no such run")
        return run

    @app.post("/runs", status_code=202)
    async def start_run(body: RunRequest) -> Any:
        try:
            run = await service().submit(body.name, body.max_steps)
        except ConfigError as exc:
            return JSONResponse({"error": str(exc), "field": exc.field}, 400)
        except ApiError as exc:
            raise HTTPException(502, f"the backend refused the job: {exc}") from exc
        return run.as_json()

    @app.get("/runs")
    async def list_runs() -> dict[str, Any]:
        return {"runs": [r.as_json() for r in service().runs.values()]}

    @app.get("/runs/{job_id}")
    async def get_run(job_id: str, wait: Annotated[float, Query(ge=0, le=MAX_WAIT)] = 0) -> Any:
        run = find(job_id)
        await service().wait(run, wait)
        return run.as_json()

    @app.get("/runs/{job_id}/events")
    async def run_events(
        job_id: str,
        last_event_id: Annotated[str | None, Header(max_length=MAX_EVENT_ID)] = None,
    ) -> StreamingResponse:
        find(job_id)
        client = service().client

        async def relay() -> AsyncIterator[str]:
            # Starlette cancels this generator when the HTTP client goes away; leaving the
            # block then closes the trio side (the job's stream) before the generator ends.
            async with aio.iterate(client.events(job_id, after=last_event_id)) as events:
                async for event in events:
                    yield sse_frame(event)

        return StreamingResponse(relay(), media_type="text/event-stream")

    @app.delete("/runs/{job_id}")
    async def cancel_run(job_id: str) -> dict[str, Any]:
        run = find(job_id)
        await service().cancel(run)
        return run.as_json()

    return app


def main(port: int = 8788) -> None:
    """Serve the API on 127.0.0.1 with uvicorn until Ctrl-C."""
    import uvicorn

    uvicorn.run(create_app(), host="127.0.0.1", port=port, log_level="info")


if __name__ == "__main__":
    main(int(sys.argv[1]) if sys.argv[1:] else 8788)
