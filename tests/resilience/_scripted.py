"""The scripted engine of the resilience matrix: a fake local-backend engine whose events are
known in advance (started, one log per step with a formula loss, checkpoints, completed).
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

from arkor_trio.server import Engine

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from pathlib import Path

MODEL = "unsloth/gemma-4-E4B-it"


class ScriptRejected(ValueError):
    """The scripted engine's config/inference rejection (``field`` + ``message``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class ScriptFailure(Exception):
    """The scripted engine's training failure (never raised: the script always completes)."""

    def __init__(self, message: str, step: int | None = None) -> None:
        super().__init__(message)
        self.step = step


def loss_at(step: int) -> float:
    """The scripted loss curve (a test can check each dispatched loss is intact)."""
    return round(3.0 * 0.97**step, 6)


def script(steps: int, save_steps: int | None) -> list[dict[str, Any]]:
    """The scripted job's events: started, one log per step, checkpoints, completed."""
    events: list[dict[str, Any]] = [
        {"type": "training.started", "metadata": {"backend": "local", "engine": "scripted"}}
    ]
    for step in range(1, steps + 1):
        events.append(
            {
                "type": "training.log",
                "step": step,
                "loss": loss_at(step),
                "learningRate": round(1e-3 * (1 - step / steps), 9),
                "epoch": round(step / steps, 6),
            }
        )
        if save_steps and step % save_steps == 0:
            artifacts = [{"pathname": f"checkpoints/step-{step}/adapter.npz"}]
            events.append({"type": "checkpoint.saved", "step": step, "artifacts": artifacts})
    events.append({"type": "training.completed", "artifacts": [{"pathname": "adapter.npz"}]})
    return events


class ScriptedEngine:
    """A fake engine emitting :func:`script` for the job's ``maxSteps``/``saveSteps``.

    Args:
        pace: Seconds of simulated step time between two events (0: as fast as possible); a
            paced job is followed partly by replay and partly live.
        hold_after: Emit this many events, then wait until :attr:`release` is set (or the
            backend stops the job, which then returns ``"cancelled"`` without an event).
    """

    def __init__(self, *, pace: float = 0.0, hold_after: int | None = None) -> None:
        self.pace = pace
        self.hold_after = hold_after
        self.release = threading.Event()
        self.stopped = threading.Event()

    def engine(self) -> Engine:
        """The :class:`Engine` to pass to ``open_local_backend``."""
        return Engine(
            name="scripted",
            supported_models=(MODEL,),
            validate_config=self._validate,
            run_training=self.run_training,
            load_weights=self._no_weights,
            base_model=lambda name: f"base:{name}",
            generate=lambda *args, **kw: iter(()),
            score_choices=lambda model, messages, choices: choices[0],
            config_rejected=ScriptRejected,
            training_failure=ScriptFailure,
            inference_rejected=ScriptRejected,
        )

    @staticmethod
    def _validate(config: Mapping[str, Any]) -> None:
        if config.get("model") != MODEL:
            raise ScriptRejected("config.model", f"unsupported model {config.get('model')!r}")

    @staticmethod
    def _no_weights(data_dir: Path, job_id: str, step: int | None) -> Any:
        raise FileNotFoundError(job_id)

    def run_training(
        self,
        *,
        job_id: str,
        config: Mapping[str, Any],
        data_dir: Path,
        emit: Callable[[dict[str, Any]], None],
        should_stop: Callable[[], bool],
    ) -> str:
        """Emit the script (blocking; runs in the backend's worker thread)."""
        for index, payload in enumerate(script(int(config["maxSteps"]), config.get("saveSteps"))):
            if index == self.hold_after:
                while not self.release.wait(0.005):  # polls the stop flag like a real step loop
                    if should_stop():
                        self.stopped.set()
                        return "cancelled"
            if should_stop():
                self.stopped.set()
                return "cancelled"
            emit(payload)
            if self.pace:
                time.sleep(self.pace)  # simulated step time of the fake training loop
        return "completed"
