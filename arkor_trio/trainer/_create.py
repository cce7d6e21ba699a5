"""``create_trainer``: a run described with the SDK's keyword arguments, validated at once."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._trainer import Trainer
from ._validate import build_job_config, check_name

if TYPE_CHECKING:
    from ..stream import CursorStore, ReconnectPolicy
    from ..wire._client import ArkorClient
    from ..wire._feed import JobFeed
    from ._callbacks import CallbacksLike

__all__ = ["create_trainer"]


def create_trainer(
    *,
    name: str,
    model: str,
    dataset: Any,
    lora: Any = None,
    max_steps: int | None = None,
    num_train_epochs: float | None = None,
    learning_rate: float | None = None,
    batch_size: int | None = None,
    optim: str | None = None,
    lr_scheduler_type: str | None = None,
    weight_decay: float | None = None,
    warmup_steps: float | None = None,
    logging_steps: int | None = None,
    save_steps: int | None = None,
    eval_steps: int | None = None,
    train_on_responses_only: bool | None = None,
    dataset_format: Any = None,
    dataset_split: Any = None,
    dry_run: bool | None = None,
    callbacks: CallbacksLike | None = None,
    client: ArkorClient | None = None,
    reconnect: ReconnectPolicy | None = None,
    cursor_store: CursorStore | None = None,
    transport: str | JobFeed = "sse",
) -> Trainer:
    """Describe a training run; nothing is sent until ``start()``/``wait()``/``run()``.

    Training arguments map onto the wire's ``JobConfig`` (None is omitted). ``callbacks`` is a
    :class:`Callbacks` or a mapping with its keys; ``client`` defaults to one configured from the
    environment (``ARKOR_CLOUD_API_URL``, ``ARKOR_TOKEN``, ``~/.arkor/credentials.json``).
    ``transport`` is ``"sse"`` (default), ``"websocket"`` or a running :class:`JobFeed`.

    Raises:
        ConfigError: An invalid argument; ``field`` names it (empty name, ``max_steps=0``, a
            dataset that is not a dataset source, an unknown callback key, ...).
    """
    config = build_job_config(
        model=model,
        dataset=dataset,
        lora=lora,
        max_steps=max_steps,
        num_train_epochs=num_train_epochs,
        learning_rate=learning_rate,
        batch_size=batch_size,
        optim=optim,
        lr_scheduler_type=lr_scheduler_type,
        weight_decay=weight_decay,
        warmup_steps=warmup_steps,
        logging_steps=logging_steps,
        save_steps=save_steps,
        eval_steps=eval_steps,
        train_on_responses_only=train_on_responses_only,
        dataset_format=dataset_format,
        dataset_split=dataset_split,
        dry_run=dry_run,
    )
    return Trainer(
        name=check_name(name),
        config=config,
        callbacks=callbacks,
        client=client,
        reconnect=reconnect,
        cursor_store=cursor_store,
        transport=transport,
    )
