"""Recipe: a training run as a CI step, with an exit code from the job's status.

``wait()`` returns a :class:`~arkor_trio.TrainingResult` for a completed, failed *and* cancelled
job (only problems that stop it from following the job raise), so the script maps
``result.job.status`` to an exit code. A timeout or Ctrl-C goes through ``run()``, which sends the
backend cancel (shielded, at most 10 s) before the cancellation propagates: CI never leaves a
run burning after the step is gone.

Exit codes: 0 completed, 1 failed, 2 cancelled, 3 timed out, 4 could not follow the job (API or
stream error). Run it: ``python examples/ci_run.py; echo $?``.
"""

from __future__ import annotations

import sys

import trio
from _recipe import MODEL, demo_dataset, run

from arkor_trio import ArkorClient, ArkorError, create_trainer

EXIT_CODES = {"completed": 0, "failed": 1, "cancelled": 2}
TIMED_OUT = 3
NOT_FOLLOWED = 4


async def main(client: ArkorClient, *, max_steps: int = 60, timeout: float = 3600.0) -> int:
    """Run one job to its end within ``timeout`` seconds; return the CI exit code."""
    trainer = create_trainer(
        name="ci-nightly",
        model=MODEL,
        dataset=demo_dataset(client),
        max_steps=max_steps,
        callbacks={"on_started": lambda ctx: print(f"started job {ctx.job.id}", flush=True)},
        client=client,
    )
    try:
        with trio.move_on_after(timeout) as deadline:
            result = await trainer.run()  # on timeout: backend cancel, then Cancelled
    except ArkorError as exc:
        print(f"could not follow the job: {exc}", file=sys.stderr)
        return NOT_FOLLOWED
    if deadline.cancelled_caught:
        print(f"timed out after {timeout:g} s; job {trainer.job_id} was cancelled", file=sys.stderr)
        return TIMED_OUT
    job = result.job
    detail = f" ({job.error})" if job.error else ""
    print(f"job {job.id} finished with status={job.status}{detail}")
    return EXIT_CODES.get(job.status, NOT_FOLLOWED)


if __name__ == "__main__":
    sys.exit(run(main))
