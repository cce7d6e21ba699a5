"""The local training engine: job config validation, the training loop, checkpoints.

:func:`run_training` trains a :class:`~arkor_trio.server._model.CharModel` on the job's chat
dataset and reports through ``emit`` the events the cloud sends. It has no I/O besides the
dataset and the data dir, and no global state: the same config and seed give the same losses.

How the engine reads the cloud's knobs (all documented in ``training.started``'s metadata):
``maxSteps`` (default 300, or ``numTrainEpochs`` over the train split), ``batchSize`` (default
16 conversations per step), ``learningRate`` (default 1e-2, used as given: LoRA-scale rates such as
2e-4 still train this engine, visibly but slowly), ``lrSchedulerType`` (linear, cosine, constant;
with ``warmupSteps``), ``optim`` (AdamW, Adam or SGD), ``weightDecay``, ``maxLength`` (characters
per conversation, default 1024), ``trainOnResponsesOnly``, ``dryRun`` (at most 10 steps and 64
conversations). ``loraR``, ``loraAlpha`` and ``loadIn4bit`` are accepted and have no effect.
"""

from __future__ import annotations

import errno
import math
import re
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import attrs
import numpy as np

from ._data import DatasetError, build_vocab, parse_jsonl, read_source, render
from ._jobconfig import SUPPORTED_MODELS, ConfigRejected, Settings, parse_config
from ._model import Batch, Bools, CharModel, Hyper, Ints, Params, single_threaded_blas

if TYPE_CHECKING:
    from pathlib import Path

__all__ = [
    "ENGINE_NAME",
    "SUPPORTED_MODELS",
    "ConfigRejected",
    "TrainingFailure",
    "checkpoint_path",
    "learning_rate_at",
    "run_training",
    "validate_config",
]

ENGINE_NAME = "char-mlp-numpy"
MAX_GRAD_NORM = 1.0
DRY_RUN_STEPS = 10
DRY_RUN_CONVERSATIONS = 64
MAX_EVAL_CONVERSATIONS = 128
_JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
Emit = Callable[[dict[str, Any]], None]


class TrainingFailure(Exception):
    """The job failed; ``str(exc)`` is the error for ``training.failed``, ``step`` where it did."""

    def __init__(self, message: str, *, step: int | None = None) -> None:
        super().__init__(message)
        self.step = step

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_failure, (str(self), self.step))


def _rebuild_failure(message: str, step: int | None) -> TrainingFailure:
    return TrainingFailure(message, step=step)


def validate_config(config: Mapping[str, Any]) -> None:
    """Check a wire ``JobConfig`` without running anything.

    Raises:
        ConfigRejected: Naming the wire path of the first problem (unknown key, wrong type,
            out-of-range value, unsupported model, a dataset the local backend cannot read).
    """
    parse_config(config)


def checkpoint_path(data_dir: Path, job_id: str, step: int | None) -> Path:
    """Where a job's weights live: ``models/<job>/checkpoint-<step>.npz``, or ``final.npz``.

    Raises:
        ValueError: ``job_id`` could escape the directory, or ``step`` is not an int >= 0.
    """
    if not _JOB_ID.fullmatch(job_id) or ".." in job_id:
        raise ValueError(f"invalid job id {job_id!r}")
    if step is not None and (not isinstance(step, int) or isinstance(step, bool) or step < 0):
        raise ValueError(f"invalid checkpoint step {step!r}")
    name = "final.npz" if step is None else f"checkpoint-{step}.npz"
    return data_dir / "models" / job_id / name


def learning_rate_at(step: int, *, base: float, total: int, warmup: int, schedule: str) -> float:
    """The learning rate used by 1-based ``step``, as in transformers' schedulers.

    Warmup rises linearly from 0 over ``warmup`` steps; then ``linear`` decays to 0 at ``total``,
    ``cosine`` follows half a cosine to 0, ``constant`` stays at ``base``.
    """
    current = step - 1
    if current < warmup:
        return base * current / max(1, warmup)
    if schedule == "constant":
        return base
    progress = (current - warmup) / max(1, total - warmup)
    if schedule == "cosine":
        return base * max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))
    return base * max(0.0, 1.0 - progress)


class _Optimizer:
    """AdamW (decoupled decay), Adam (L2 decay) or plain SGD, after global-norm clipping."""

    def __init__(self, params: Params, *, kind: str, weight_decay: float) -> None:
        self.kind, self.decay, self.t = kind, weight_decay, 0
        moments = kind != "sgd"
        self.m = {k: np.zeros_like(v) for k, v in params.items()} if moments else {}
        self.v = {k: np.zeros_like(v) for k, v in params.items()} if moments else {}

    def step(self, params: Params, grads: Params, lr: float) -> None:
        self.t += 1
        norm = math.sqrt(sum(float(np.vdot(g, g)) for g in grads.values()))
        clip = min(1.0, MAX_GRAD_NORM / (norm + 1e-6))
        beta1, beta2 = 0.9, 0.999
        for name, p in params.items():
            g = grads[name] * clip
            decay = 0.0 if name.startswith("b") else self.decay
            if decay and self.kind != "adamw":
                g += decay * p
            if self.kind == "sgd":
                p -= lr * g
                continue
            m, v = self.m[name], self.v[name]
            m *= beta1
            m += (1 - beta1) * g
            v *= beta2
            v += (1 - beta2) * g * g
            if decay and self.kind == "adamw":
                p *= 1.0 - lr * decay
            p -= (lr / (1 - beta1**self.t)) * m / (np.sqrt(v / (1 - beta2**self.t)) + 1e-8)


class _Sampler:
    """Seeded epochs: each pass visits every train conversation once, in a fresh order."""

    def __init__(self, size: int, batch: int, seed: int) -> None:
        self.size, self.batch = size, batch
        self.rng = np.random.default_rng([seed, 2])
        self.order: list[int] = []
        self.seen = 0

    def next(self) -> list[int]:
        out: list[int] = []
        while len(out) < self.batch:
            if not self.order:
                self.order = self.rng.permutation(self.size).tolist()
            take = self.batch - len(out)
            out += self.order[:take]
            del self.order[:take]
        self.seen += self.batch
        return out


@attrs.frozen
class _Corpus:
    model: CharModel
    seqs: list[Ints]
    weights: list[Bools]
    eval_batch: Batch
    eval_on_train: bool


def _prepare(s: Settings, conversations: list[Any], hyper: Hyper) -> _Corpus:
    if s.dry_run:
        conversations = conversations[:DRY_RUN_CONVERSATIONS]
    rendered = [render(messages) for messages in conversations]
    model = CharModel.initial(build_vocab(r.text for r in rendered), seed=s.seed, hyper=hyper)
    seqs, weights = [], []
    for r in rendered:
        seqs.append(model.encode(r.text[: s.max_length]))
        mask = r.mask[: s.max_length] if s.responses_only else (True,) * len(seqs[-1])
        weights.append(np.array(mask, np.bool_))
    order = np.random.default_rng([s.seed, 1]).permutation(len(seqs)).tolist()
    held = min(round(len(seqs) * s.eval_fraction), len(seqs) - 1) if s.eval_fraction else 0
    if s.eval_fraction and len(seqs) > 1:
        held = max(1, held)
    held_out = set(order[:held])
    train = sorted(i for i in order if i not in held_out and weights[i].any())
    evals = [i for i in order[:held] if weights[i].any()][:MAX_EVAL_CONVERSATIONS]
    if not train:
        raise TrainingFailure(
            "nothing to train on: no conversation has assistant text"
            if s.responses_only
            else "nothing to train on: every conversation is held out for evaluation"
        )
    eval_ids = evals or train[:MAX_EVAL_CONVERSATIONS]
    eval_batch = model.batch([seqs[i] for i in eval_ids], [weights[i] for i in eval_ids])
    return _Corpus(
        model, [seqs[i] for i in train], [weights[i] for i in train], eval_batch, not evals
    )


def _metadata(s: Settings, config: Mapping[str, Any], hyper: Hyper) -> dict[str, Any]:
    notes = []
    if s.learning_rate < 1e-3:
        notes.append(
            f"learningRate {s.learning_rate:g} is a LoRA-scale rate: this engine uses it as "
            "given and learns slowly below ~1e-3 (its default is 1e-2)"
        )
    raw_optim = config.get("optim")
    if isinstance(raw_optim, str) and raw_optim != s.optim:
        notes.append(f"optim {raw_optim!r} runs as float32 {s.optim}")
    return {
        "backend": "local",
        "engine": ENGINE_NAME,
        "stands_in_for": s.model,
        "network": attrs.asdict(hyper),
        "settings": {
            "maxSteps": s.max_steps,
            "numTrainEpochs": s.epochs,
            "batchSize": s.batch_size,
            "learningRate": s.learning_rate,
            "lrSchedulerType": s.schedule,
            "warmupSteps": s.warmup_ratio or s.warmup_steps,
            "optim": s.optim,
            "weightDecay": s.weight_decay,
            "maxGradNorm": MAX_GRAD_NORM,
            "maxLength": s.max_length,
            "trainOnResponsesOnly": s.responses_only,
            "dryRun": s.dry_run,
            "seed": s.seed,
        },
        "ignored": list(s.ignored),
        "notes": notes,
    }


def run_training(
    *,
    job_id: str,
    config: Mapping[str, Any],
    data_dir: Path,
    emit: Emit,
    should_stop: Callable[[], bool],
    hyper: Hyper | None = None,
) -> str:
    """Train the local model for one job, reporting through ``emit``; blocking (run it in a thread).

    Emits ``training.started``, then ``training.log`` on the first and last steps, every
    ``loggingSteps`` and on every ``evalSteps`` (only those carry ``evalLoss``; ``loss`` is the
    mean since the previous log), ``checkpoint.saved`` every ``saveSteps``, and
    ``training.completed``. Payloads carry neither ``jobId`` nor ``timestamp``.

    Args:
        job_id: The job's id (names its directory under ``data_dir/models``).
        config: The wire ``JobConfig`` (already validated by :func:`validate_config`).
        data_dir: Where checkpoints are written.
        emit: Called with each event payload, in order, from this thread.
        should_stop: Polled before every step and while loading the dataset.
        hyper: The network shape (tests use a smaller one).

    Returns:
        ``"completed"``, or ``"cancelled"`` within about one step of ``should_stop()`` turning
        true (nothing more is emitted then).

    Raises:
        TrainingFailure: The dataset is unreadable, malformed (the message names the line) or
            empty, the loss diverged, or a checkpoint could not be written.
    """
    try:
        s = parse_config(config)
    except ConfigRejected as exc:
        raise TrainingFailure(f"invalid config: {exc}") from None
    h = hyper or Hyper()
    if should_stop():
        return "cancelled"
    emit({"type": "training.started", "metadata": _metadata(s, config, h)})
    began = time.perf_counter()
    try:
        text = read_source(s.url, s.token, should_stop)
        conversations = None if text is None else parse_jsonl(text, should_stop=should_stop)
    except DatasetError as exc:
        raise TrainingFailure(f"dataset: {exc}") from None
    if conversations is None or should_stop():
        return "cancelled"
    with single_threaded_blas():
        run = _Run(s, _prepare(s, conversations, h), job_id, data_dir, emit, began)
        return run.train(should_stop)


class _Run:
    """One training run over a prepared corpus; :meth:`train` is the step loop."""

    def __init__(
        self, s: Settings, corpus: _Corpus, job_id: str, data_dir: Path, emit: Emit, began: float
    ) -> None:
        self.s, self.c, self.job_id, self.data_dir, self.emit = s, corpus, job_id, data_dir, emit
        self.began = began
        n = len(corpus.seqs)
        total = s.max_steps or max(1, math.ceil((s.epochs or 1.0) * n / s.batch_size))
        self.total = min(total, DRY_RUN_STEPS) if s.dry_run else total
        self.log_every = s.logging_steps or max(1, min(10, self.total // 20))
        self.eval_every = s.eval_steps or max(1, self.total // 5)
        self.save_every = s.save_steps or max(1, math.ceil(self.total / 4))
        self.warmup = s.warmup_steps or math.ceil(s.warmup_ratio * self.total)
        self.sampler = _Sampler(n, s.batch_size, s.seed)

    def train(self, should_stop: Callable[[], bool]) -> str:
        s, model = self.s, self.c.model
        optimizer = _Optimizer(model.params, kind=s.optim, weight_decay=s.weight_decay)
        window: list[float] = []
        window_time = train_time = 0.0
        eval_loss: float | None = None
        last_loss = math.nan
        for step in range(1, self.total + 1):
            if should_stop():
                return "cancelled"
            tick = time.perf_counter()
            lr = learning_rate_at(
                step, base=s.learning_rate, total=self.total, warmup=self.warmup,
                schedule=s.schedule,
            )  # fmt: skip
            ids = self.sampler.next()
            batch = model.batch([self.c.seqs[i] for i in ids], [self.c.weights[i] for i in ids])
            try:
                loss, grads = model.loss_and_grads(batch)
            except MemoryError:
                raise TrainingFailure(
                    "out of memory; lower config.batchSize or config.maxLength", step=step
                ) from None
            if not math.isfinite(loss):
                raise TrainingFailure(
                    f"the loss diverged ({loss}); lower config.learningRate", step=step
                )
            optimizer.step(model.params, grads, lr)
            spent = time.perf_counter() - tick
            window.append(loss)
            window_time += max(spent, 1e-9)
            train_time += spent
            now_eval = model.loss(self.c.eval_batch) if step % self.eval_every == 0 else None
            eval_loss = eval_loss if now_eval is None else now_eval
            if now_eval is not None or step % self.log_every == 0 or step in (1, self.total):
                event: dict[str, Any] = {
                    "type": "training.log",
                    "step": step,
                    "loss": round(sum(window) / len(window), 6),
                    "learningRate": lr,
                    "epoch": round(self.sampler.seen / len(self.c.seqs), 4),
                    "samplesPerSecond": round(len(window) * s.batch_size / window_time, 2),
                }
                if now_eval is not None:
                    event["evalLoss"] = round(now_eval, 6)
                self.emit(event)
                last_loss, window, window_time = event["loss"], [], 0.0
            if step % self.save_every == 0:
                artifact = self._save(step)
                self.emit({"type": "checkpoint.saved", "step": step, "artifacts": [artifact]})
        if eval_loss is None or self.total % self.eval_every:
            eval_loss = model.loss(self.c.eval_batch)
        final = self._save(None)
        metrics = {
            "loss": last_loss,
            "evalLoss": round(eval_loss, 6),
            "evalOn": "train" if self.c.eval_on_train else "held-out",
            "steps": self.total,
            "epoch": round(self.sampler.seen / len(self.c.seqs), 4),
            "seconds": round(time.perf_counter() - self.began, 3),
            "trainSeconds": round(train_time, 3),
            "samplesPerSecond": round(self.sampler.seen / max(train_time, 1e-9), 2),
            "trainConversations": len(self.c.seqs),
            "evalConversations": self.c.eval_batch.tokens.shape[0],
            "vocabSize": len(model.vocab),
        }
        self.emit({"type": "training.completed", "metrics": metrics, "artifacts": [final]})
        return "completed"

    def _save(self, step: int | None) -> dict[str, Any]:
        path = checkpoint_path(self.data_dir, self.job_id, step)
        meta = {"jobId": self.job_id, "step": step or self.total, "model": self.s.model}
        try:
            size = self.c.model.save(path, meta)
        except OSError as exc:
            what = "final weights" if step is None else f"checkpoint {step}"
            reason = "disk full: " if exc.errno in (errno.ENOSPC, errno.EDQUOT) else ""
            raise TrainingFailure(
                f"{reason}cannot save {what}: {exc}", step=step or self.total
            ) from None
        return {"pathname": path.relative_to(self.data_dir).as_posix(), "bytes": size}
