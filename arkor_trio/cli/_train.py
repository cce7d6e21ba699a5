"""``arkor-trio demo`` and ``arkor-trio run``: train with the progress display, then summarise.

:func:`demo` starts the local backend in this trio run and trains the bundled support-triage
dataset; :func:`run_trainer` runs a :class:`~arkor_trio.Trainer` a user file defined
(:func:`load_trainer`). Both use ``trainer.run(cancel_on_abort=True)``: Ctrl-C (KeyboardInterrupt
inside ``trio.run``) stops the wait and sends the backend cancel before the interrupt propagates.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from .._errors import ConfigError
from ..trainer._callbacks import Callbacks
from ..trainer._create import create_trainer
from ..trainer._trainer import Trainer
from ..wire._codec import encode
from ..wire._models import BlobDataset
from ._chart import can_draw_unicode, loss_chart
from ._progress import ProgressDisplay, format_elapsed
from ._signals import Terminated, sigterm_cancels
from ._text import printable

if TYPE_CHECKING:
    from ..wire._models import TrainingResult

__all__ = [
    "DEMO_MODEL",
    "DEMO_NAME",
    "DEMO_PROMPT",
    "demo",
    "demo_cadence",
    "exit_code",
    "load_trainer",
    "print_summary",
    "run_trainer",
    "submit_trainer",
]

DEMO_NAME = "support-triage-demo"
DEMO_MODEL = "unsloth/gemma-4-E4B-it"
DEMO_PROMPT = "Why was my card charged twice for the Pro plan?"
_TRAINER_NAMES = ("trainer", "arkor")
GONE = "pass --data-dir DIR to keep them"


def exit_code(result: TrainingResult) -> int:
    """0 for a completed job, 1 for a failed or cancelled one."""
    return 0 if result.job.status == "completed" else 1


def demo_cadence(steps: int) -> tuple[int, int, int]:
    """``(logging_steps, eval_steps, save_steps)`` for a demo of ``steps`` (10/50/100 for 300)."""
    return max(1, steps // 30), max(1, steps // 6), max(1, steps // 3)


def print_summary(
    out: TextIO,
    result: TrainingResult,
    display: ProgressDisplay,
    *,
    data_dir: Path | None = None,
    kept: bool = True,
) -> None:
    """Print the outcome: a loss chart, initial vs final loss, wall time and the artifacts.

    Artifact ``pathname``s are shown under ``data_dir`` when given (the local backend's), else
    as the backend sent them (relative to its data dir). ``kept=False`` says that ``data_dir``
    is a temporary directory, deleted at exit.
    """
    history = display.history
    lines = ["", f"job {result.job.id}: {result.job.status}"]
    if result.job.error:
        lines.append(f"error: {result.job.error}")
    chart = loss_chart(
        [("train loss", history.train), ("eval loss", history.eval)],
        unicode=can_draw_unicode(getattr(out, "encoding", None)),
    )
    if chart:
        lines += ["", *chart, ""]
    first, last = history.first_loss, history.last_loss
    if first is not None and last is not None:
        lines.append(f"loss: {first:.4f} (first) -> {last:.4f} (last)")
    if history.eval:
        eval_first, eval_last = history.eval[0][1], history.eval[-1][1]
        lines.append(f"eval loss: {eval_first:.4f} (first) -> {eval_last:.4f} (last)")
    lines.append(f"wall time: {format_elapsed(display.elapsed)} ({display.elapsed:.1f} s)")
    if result.artifacts and data_dir is None:
        lines.append("artifacts (paths in the backend's data dir):")
    elif result.artifacts:
        lines.append("artifacts:" if kept else f"artifacts (deleted when the demo exits: {GONE}):")
    for artifact in result.artifacts:
        lines.append("  " + _artifact(artifact, data_dir))
    out.write(printable("\n".join(lines), keep_newlines=True) + "\n")  # the error is server text
    out.flush()


def _artifact(artifact: Any, data_dir: Path | None) -> str:
    if not isinstance(artifact, dict) or not isinstance(artifact.get("pathname"), str):
        return json.dumps(artifact)
    path = artifact["pathname"]
    shown = str(data_dir / path) if data_dir is not None else path
    size = artifact.get("bytes")
    return f"{shown} ({size / 1e6:.1f} MB)" if isinstance(size, int) else shown


async def demo(
    out: TextIO,
    *,
    steps: int = 300,
    data_dir: Path | None = None,
    prompt: str = DEMO_PROMPT,
    live: bool | None = None,
) -> int:
    """Train the bundled demo dataset on an in-process local backend; the exit code.

    Args:
        out: Where progress and the summary go.
        steps: ``max_steps`` (the cadence follows, see :func:`demo_cadence`).
        data_dir: The backend's data dir; None uses a temporary one removed at exit.
        prompt: The support ticket sampled at every checkpoint.
        live: Force the live progress bar on or off (None: on for a terminal).

    Raises:
        KeyboardInterrupt: After the backend cancel was sent.
    """
    from ..server import open_local_backend  # needs the server extra (NumPy, hypercorn)

    display = ProgressDisplay(out, live=live, samples=[prompt])
    logging_steps, eval_steps, save_steps = demo_cadence(steps)
    async with open_local_backend(data_dir) as backend:
        kept = "" if data_dir is not None else f" (temporary, deleted at exit: {GONE})"
        display.line(f"local backend at {backend.base_url}, data dir {backend.data_dir}{kept}")
        display.line(f"live page (one-time login link): {backend.login_url}")
        async with backend.client() as client:
            trainer = create_trainer(
                name=DEMO_NAME,
                model=DEMO_MODEL,
                dataset=BlobDataset.demo(),
                max_steps=steps,
                client=client,
                logging_steps=logging_steps,
                eval_steps=eval_steps,
                save_steps=save_steps,
                callbacks=display.callbacks(),
            )
            result = await _run(trainer, display)
            print_summary(
                out, result, display, data_dir=backend.data_dir, kept=data_dir is not None
            )
    return exit_code(result)


async def _run(trainer: Trainer, display: ProgressDisplay) -> TrainingResult:
    try:
        with display:
            async with sigterm_cancels():
                return await trainer.run(cancel_on_abort=True)
    except (KeyboardInterrupt, Terminated) as exc:
        if trainer.job_id is not None:
            how = "interrupted" if isinstance(exc, KeyboardInterrupt) else "terminated"
            display.line(f"{how}: sent the cancel for job {trainer.job_id} to the backend")
        raise


def load_trainer(path: Path) -> Trainer:
    """Import a Python file and return the :class:`Trainer` it defines.

    The file runs as a module with a unique name (its ``if __name__ == "__main__"`` block does
    not run) and its directory first on ``sys.path``, as ``python path.py`` would have it. The
    trainer is the global ``trainer``, else ``arkor``, else the only Trainer among the globals.

    Raises:
        ConfigError: The file does not exist, calls ``sys.exit()`` while imported, or defines
            no unambiguous Trainer.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no such file: {path}", field="path")
    resolved = path.resolve()
    digest = hashlib.sha256(str(resolved).encode()).hexdigest()[:12]
    name = f"_arkor_trio_run_{digest}"
    spec = importlib.util.spec_from_file_location(name, resolved)
    if spec is None or spec.loader is None:
        raise ConfigError(f"cannot import {path} as a Python module", field="path")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    sys.path.insert(0, str(resolved.parent))
    try:
        spec.loader.exec_module(module)
    except SystemExit as exc:  # not our exit: say so, rather than exit quietly with its code
        raise ConfigError(
            f"{path} called sys.exit({exc.code!r}) while it was imported, before any Trainer "
            "was found; `arkor-trio run` imports the file (its `if __name__ == '__main__':` "
            "block does not run)",
            field="path",
        ) from None
    found = vars(module)
    for attr in _TRAINER_NAMES:
        if isinstance(found.get(attr), Trainer):
            trainer: Trainer = found[attr]
            return trainer
    trainers = {key: v for key, v in found.items() if isinstance(v, Trainer)}
    if len(trainers) == 1:
        return next(iter(trainers.values()))
    if trainers:
        listed = ", ".join(sorted(trainers))
        raise ConfigError(
            f"{path} defines several Trainers ({listed}); name the one to run `trainer`",
            field="path",
        )
    raise ConfigError(
        f"{path} defines no Trainer; add `trainer = create_trainer(...)` at module level",
        field="path",
    )


async def run_trainer(
    trainer: Trainer,
    out: TextIO,
    *,
    as_json: bool = False,
    result_out: TextIO | None = None,
    samples: tuple[str, ...] = (),
    live: bool | None = None,
) -> int:
    """Run a trainer (start + wait) with the progress display merged into its callbacks.

    Args:
        trainer: The trainer; for each event its own callbacks run first, then the display's.
        out: Where progress and the summary go.
        as_json: Print the result as one JSON object to ``result_out`` instead of the summary.
        result_out: Where the JSON result goes (default ``out``).
        samples: Prompts to run through ``ctx.infer`` at every checkpoint.
        live: Force the live progress bar on or off (None: on for a terminal).

    Returns:
        0 completed, 1 failed or cancelled on the backend.

    Raises:
        KeyboardInterrupt: Ctrl-C, after the backend cancel was sent.
        Terminated: SIGTERM, after the backend cancel was sent.
    """
    display = ProgressDisplay(out, live=live, samples=samples)
    trainer.callbacks = Callbacks.merge(trainer.callbacks, display.callbacks())
    try:
        result = await _run(trainer, display)
    finally:
        await trainer.client.aclose()
    if as_json:
        payload = {
            "job": encode(result.job),
            "artifacts": result.artifacts,
            "firstLoss": display.history.first_loss,
            "lastLoss": display.history.last_loss,
            "evalLoss": display.history.eval[-1][1] if display.history.eval else None,
            "seconds": round(display.elapsed, 3),
        }
        target = result_out if result_out is not None else out
        target.write(json.dumps(payload, indent=2) + "\n")
        target.flush()
    else:
        print_summary(out, result, display)
    return exit_code(result)


async def submit_trainer(trainer: Trainer, out: TextIO, *, as_json: bool = False) -> int:
    """``run --detach``: create the job, print its id and how to follow it; exit code 0.

    The job keeps training on the backend: nothing here follows or cancels it.
    """
    try:
        job_id = await trainer.start()
    finally:
        await trainer.client.aclose()
    job = trainer.job
    status = job.status if job is not None else "queued"
    if as_json:
        out.write(json.dumps({"id": job_id, "name": trainer.name, "status": status}) + "\n")
    else:
        out.write(
            printable(
                f"submitted job {job_id} ({trainer.name}, {status}); it trains without this "
                f"command.\n  follow:  arkor-trio jobs events {job_id} --follow   (or: "
                f"arkor-trio jobs watch)\n  stop:    arkor-trio jobs cancel {job_id}",
                keep_newlines=True,
            )
            + "\n"
        )
    out.flush()
    return 0
