"""``arkor-trio jobs ...`` and ``arkor-trio infer``: one async function per command.

Each takes the client and the output stream and returns the exit code, so tests await them in
their own trio run. They need only the core dependencies (no NumPy, no rich). ``--json`` output
is the wire's camelCase JSON: one document for list/show/cancel/infer, one object per line
(JSON Lines) for events.
"""

from __future__ import annotations

import json
import math
import sys
from typing import TYPE_CHECKING, Any, TextIO

import trio

from .._errors import ApiError
from ..wire._chat import build_chat_body
from ..wire._codec import encode, event_to_wire
from ..wire._models import Adapter, CheckpointSaved
from ._text import CELL_LIMIT, VALUE_LIMIT, clip, printable

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from ..wire._client import ArkorClient
    from ..wire._models import JobEvent, TrainingJob

__all__ = [
    "FIRST_EVENT_WAIT",
    "IDLE_WINDOW",
    "checkpoint_steps",
    "describe_event",
    "event_json",
    "infer",
    "jobs_cancel",
    "jobs_events",
    "jobs_list",
    "jobs_show",
    "read_events",
]

#: Without ``--follow``: stop once no event arrived for this long (the backlog was replayed).
IDLE_WINDOW = 0.5
#: Without ``--follow``: how long to wait for the first event (connecting, replay starting).
FIRST_EVENT_WAIT = 5.0


def _dump(out: TextIO, value: Any, *, indent: int | None = 2) -> None:
    out.write(json.dumps(value, indent=indent, ensure_ascii=False) + "\n")
    out.flush()


def event_json(event: JobEvent) -> dict[str, Any]:
    """An event as wire JSON, with its SSE id under ``"id"`` (None when the frame had none)."""
    return {"id": event.event_id, **event_to_wire(event)}


def _value(value: Any) -> str:
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:.6g}"
    if isinstance(value, str):
        return value if value and " " not in value else json.dumps(value)
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def describe_event(event: JobEvent) -> str:
    """One line: ``<id>  <type>  key=value ...`` (jobId and timestamp left out)."""
    data = event_json(event)
    fields = " ".join(
        f"{clip(str(key), CELL_LIMIT)}={clip(_value(value), VALUE_LIMIT)}"
        for key, value in data.items()
        if key not in ("id", "type", "jobId", "timestamp") and value is not None
    )
    event_id = clip(str(data["id"] or "-"), CELL_LIMIT)
    kind = clip(str(data.get("type", "?")), CELL_LIMIT)
    return f"{event_id:>5}  {kind}  {fields}".rstrip()


def _table(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]


async def jobs_list(client: ArkorClient, out: TextIO, *, as_json: bool = False) -> int:
    """Print the project's jobs as a table (or a JSON array); exit code 0."""
    jobs = await client.list_jobs()
    if as_json:
        _dump(out, [encode(job) for job in jobs])
        return 0
    if not jobs:
        out.write("no jobs\n")
        return 0
    rows: list[tuple[str, ...]] = [("ID", "STATUS", "NAME", "CREATED")]
    rows += [
        tuple(clip(cell, CELL_LIMIT) for cell in (j.id, j.status, j.name, j.created_at or "-"))
        for j in jobs
    ]
    out.write("\n".join(_table(rows)) + "\n")
    return 0


def _show_lines(job: TrainingJob) -> list[str]:
    config = dict(job.config)
    dataset = config.pop("datasetSource", None)
    pairs = [
        ("id", job.id),
        ("name", job.name),
        ("status", job.status),
        ("error", job.error),
        ("created", job.created_at),
        ("started", job.started_at),
        ("ended", job.completed_at),  # completed, failed or cancelled: see status
        ("model", config.pop("model", None)),
        ("dataset", _value(dataset) if dataset is not None else None),
    ]
    lines = [f"{key:<11} {clip(str(v), VALUE_LIMIT)}" for key, v in pairs if v is not None]
    if config:
        settings = " ".join(f"{k}={_value(v)}" for k, v in config.items())
        lines.append("config      " + clip(settings, VALUE_LIMIT))
    lines.extend(f"artifact    {clip(_artifact(a), VALUE_LIMIT)}" for a in job.artifacts or [])
    if job.artifacts:
        lines.append("            (artifact paths are relative to the backend's data dir)")
    return lines


def _artifact(artifact: Any) -> str:
    if not isinstance(artifact, dict) or not isinstance(artifact.get("pathname"), str):
        return _value(artifact)
    path: str = artifact["pathname"]
    size = artifact.get("bytes")
    if isinstance(size, int) and not isinstance(size, bool):
        return f"{path} ({size / 1e6:.1f} MB)"
    return path


async def jobs_show(client: ArkorClient, out: TextIO, job_id: str, *, as_json: bool = False) -> int:
    """Print one job and its checkpoints (or the job's JSON); exit code 0.

    ``JobNotFound`` propagates.
    """
    job = await client.get_job(job_id)
    if as_json:
        _dump(out, encode(job))
        return 0
    lines = _show_lines(job)
    steps = await checkpoint_steps(client, job)
    lines.append(f"{'checkpoints':<11} {', '.join(map(str, steps)) if steps else 'none'}")
    out.write("\n".join(lines) + "\n")
    return 0


async def jobs_cancel(
    client: ArkorClient, out: TextIO, job_id: str, *, as_json: bool = False
) -> int:
    """Ask the backend to cancel a job; a job that already ended is reported, exit code 0."""
    requested = True
    try:
        await client.cancel_job(job_id)
    except ApiError as exc:
        if exc.status != 409:
            raise
        requested = False
    job = await client.get_job(job_id)
    if as_json:
        _dump(out, {"id": job_id, "cancelRequested": requested, "status": job.status})
    elif requested:
        out.write(f"cancel requested for job {job_id} (status: {job.status})\n")
    else:
        out.write(f"job {job_id} already ended (status: {job.status})\n")
    return 0


async def jobs_events(
    client: ArkorClient,
    out: TextIO,
    job_id: str,
    *,
    follow: bool = False,
    after: str | None = None,
    as_json: bool = False,
    idle: float = IDLE_WINDOW,
    first_wait: float = FIRST_EVENT_WAIT,
) -> int:
    """Print a job's events, one per line, starting after event id ``after``.

    With ``follow`` (or when the job has already ended) it prints until the terminal event.
    Otherwise it prints the replayed backlog: it stops once no event arrived for ``idle``
    seconds (``first_wait`` for the first one), so a job that logs more often than that is
    followed until it pauses or ends.
    """
    if not follow:
        follow = (await client.get_job(job_id)).is_terminal

    def show(event: JobEvent) -> None:
        if as_json:
            _dump(out, event_json(event), indent=None)
        else:
            out.write(describe_event(event) + "\n")
            out.flush()

    await read_events(
        client, job_id, show, follow=follow, after=after, idle=idle, first_wait=first_wait
    )
    return 0


async def read_events(
    client: ArkorClient,
    job_id: str,
    on_event: Callable[[JobEvent], None],
    *,
    follow: bool,
    after: str | None = None,
    idle: float = IDLE_WINDOW,
    first_wait: float = FIRST_EVENT_WAIT,
) -> None:
    """Call ``on_event`` for each event: to the terminal one (``follow``), else the backlog.

    Without ``follow`` it stops once no event arrived for ``idle`` seconds (``first_wait`` for
    the first one): the backend replays the backlog in one burst.
    """
    async with client.events(job_id, after=after) as stream:
        window = first_wait
        while True:
            event = None
            with trio.move_on_after(math.inf if follow else window):
                event = await anext(stream, None)
            if event is None:
                break  # after the terminal event, or idle: the backlog is out
            window = idle
            on_event(event)


async def checkpoint_steps(client: ArkorClient, job: TrainingJob) -> list[int]:
    """The steps of the job's saved checkpoints, in order, read from its event log."""
    if job.status == "queued":
        return []  # nothing trained yet: no need to wait for a first event
    steps: list[int] = []

    def collect(event: JobEvent) -> None:
        if isinstance(event, CheckpointSaved):
            steps.append(event.step)

    await read_events(client, job.id, collect, follow=job.is_terminal)
    return steps


async def infer(
    client: ArkorClient,
    out: TextIO,
    *,
    job_id: str,
    prompt: str,
    step: int | None = None,
    system: str | None = None,
    max_tokens: int | None = None,
    temperature: float | None = None,
    as_json: bool = False,
    notes: TextIO | None = None,
) -> int:
    """Chat with a job's final adapter (or the checkpoint at ``step``); exit code 0.

    A job that ended without a final adapter (cancelled, failed) or is still running answers
    with its last checkpoint, with a note on ``notes`` (default stderr) saying so. The answer is
    streamed to ``out`` as it is generated; with ``as_json`` the whole completion is printed as
    JSON once it is complete.
    """
    messages = [{"role": "user", "content": prompt}]
    if system is not None:
        messages.insert(0, {"role": "system", "content": system})
    # Bad options (a NaN temperature, ...) are a ConfigError before anything is sent.
    adapter = Adapter(kind="final" if step is None else "checkpoint", job_id=job_id, step=step)
    build_chat_body(
        messages, adapter=adapter, base_model=None, stream=False,
        temperature=temperature, max_tokens=max_tokens,
    )  # fmt: skip
    if step is None:
        job = await client.get_job(job_id)
        if job.status != "completed":
            steps = await checkpoint_steps(client, job)
            if steps:
                step = steps[-1]
                note = (
                    f"note: job {job_id} has no final adapter (it is {job.status}); "
                    f"answering with its last checkpoint, step {step}"
                )
                print(printable(note), file=notes if notes is not None else sys.stderr)
                adapter = Adapter(kind="checkpoint", job_id=job_id, step=step)
    if as_json:
        completion = await client.chat(
            messages, adapter=adapter, max_tokens=max_tokens, temperature=temperature
        )
        _dump(out, dict(completion.raw))
        return 0
    async with client.chat_stream(
        messages, adapter=adapter, max_tokens=max_tokens, temperature=temperature
    ) as deltas:
        async for text in deltas:
            out.write(printable(text, keep_newlines=True))
            out.flush()
    out.write("\n")
    return 0
