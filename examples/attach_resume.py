"""Recipe: follow a job started elsewhere, and resume after a restart without repeats.

A ``FileCursorStore`` keeps, per job, the id of the last event whose callback returned (saved
atomically after each one). ``Trainer.attach(job_id, cursor_store=...)`` follows an existing job
and resumes right after that id, so a process that stops mid-run and a new one that picks up
from the same file see every event exactly once between them.

The recipe plays both processes in a row: the first follower starts the job and stops (leaves its
cancel scope) after step ``stop_at``, the job running on; the second, a new ``Trainer.attach``
over the same file, follows it to the end. With a real second process, pass the job id along
(``arkor-trio jobs``, a queue, a database) and point both at the same cursor file. Run it:
``python examples/attach_resume.py``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import attrs
import trio
from _recipe import MODEL, demo_dataset, run

from arkor_trio import FileCursorStore, Trainer, create_trainer

if TYPE_CHECKING:
    from arkor_trio import ArkorClient, LogContext


@attrs.frozen
class Followed:
    """What each follower dispatched: the steps of its ``on_log`` calls and its event ids."""

    job_id: str
    first_steps: list[int]
    second_steps: list[int]
    cursor_after_first: str | None
    final_status: str


async def main(
    client: ArkorClient, *, cursor_file: Path | None = None, max_steps: int = 40, stop_at: int = 12
) -> Followed:
    """Start a job, follow it to ``stop_at`` and stop; attach again and follow it to the end."""
    with tempfile.TemporaryDirectory() as tmp:
        path = cursor_file or Path(tmp) / "cursors.json"

        # --- process 1: start the job, follow it for a while, then go away ------------------
        first: list[int] = []
        leave = trio.CancelScope()

        def log_first(ctx: LogContext) -> None:
            first.append(ctx.step)
            if ctx.step >= stop_at:
                leave.cancel()  # this callback returns normally: its event is committed

        trainer = create_trainer(
            name="attach-demo",
            model=MODEL,
            dataset=demo_dataset(client),
            max_steps=max_steps,
            logging_steps=1,
            callbacks={"on_log": log_first},
            client=client,
            cursor_store=FileCursorStore(path),
        )
        with leave:
            await trainer.wait()
        job_id = trainer.job_id
        assert job_id is not None
        cursor = FileCursorStore(path).peek(job_id).id
        print(f"follower 1 saw steps {first[0]}..{first[-1]}, left at event id {cursor}")

        # --- process 2: a new trainer over the same cursor file --------------------------------
        second: list[int] = []
        follower = Trainer.attach(
            job_id,
            callbacks={"on_log": lambda ctx: second.append(ctx.step)},
            client=client,
            cursor_store=FileCursorStore(path),  # a fresh object: only the file is shared
        )
        result = await follower.wait()
        print(f"follower 2 saw steps {second[0]}..{second[-1]}; job {result.job.status}")
        return Followed(job_id, first, second, cursor, result.job.status)


if __name__ == "__main__":
    run(main)
