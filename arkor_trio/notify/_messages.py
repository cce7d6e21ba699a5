"""What the notifiers say: one message per event kind, rendered for each platform.

A message is built from a callback context in two steps: :func:`describe` turns the event into a
platform-neutral :class:`_Message` (a headline, an optional detail, whether it is urgent), then a
renderer turns that into the JSON body one platform expects. Text that comes from outside (job
name, error string, prompts, model answers) is escaped for the platform so it can neither break the
markup nor smuggle in a mention; the only mention ever sent is ours, on failure.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal, TypeAlias

import attrs

from ..trainer._contexts import CheckpointContext, LogContext
from ..wire._models import TrainingJob  # noqa: TC001  # attrs fields resolve it

__all__ = [
    "EventKind",
    "Sample",
    "describe",
    "discord_body",
    "generic_body",
    "slack_body",
    "teams_body",
]

#: The events a notifier posts about; ``kind`` as passed to a custom ``payload`` builder.
EventKind: TypeAlias = Literal["progress", "sample", "completed", "failed", "cancelled"]

#: Longest piece of outside text (error, prompt, answer) put into a message, in characters.
MAX_FIELD_CHARS = 1500
#: Discord rejects ``content`` longer than this.
DISCORD_MAX_CHARS = 2000


@attrs.frozen(kw_only=True)
class Sample:
    """One checkpoint sample: the context of a ``"sample"`` post.

    Attributes:
        checkpoint: The checkpoint the prompt was run on.
        prompt: The prompt, as given in ``samples``.
        answer: The model's text (None when it answered only with tool calls).
    """

    checkpoint: CheckpointContext
    prompt: str
    answer: str | None

    @property
    def job(self) -> TrainingJob:
        """The job the checkpoint belongs to."""
        return self.checkpoint.job

    @property
    def step(self) -> int:
        """The checkpoint's step."""
        return self.checkpoint.step


@attrs.frozen
class _Message:
    headline: str
    detail: str | None = None
    urgent: bool = False


@attrs.frozen
class _Markup:
    bold: Callable[[str], str]
    code: Callable[[str], str]
    escape: Callable[[str], str]


def _clip(text: str, limit: int = MAX_FIELD_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _slack_escape(text: str) -> str:
    # Slack's three control characters; escaping "<" also disarms "<!here>" in outside text.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _discord_escape(text: str) -> str:
    # A zero-width space after "@" disarms @here, @everyone and <@id> mentions in outside text.
    return text.replace("@", "@\u200b")


_SLACK = _Markup(bold=lambda s: f"*{s}*", code=lambda s: f"`{s}`", escape=_slack_escape)
_DISCORD = _Markup(bold=lambda s: f"**{s}**", code=lambda s: f"`{s}`", escape=_discord_escape)
_TEAMS = _Markup(bold=lambda s: f"**{s}**", code=lambda s: s, escape=lambda s: s)
_PLAIN = _Markup(bold=lambda s: s, code=lambda s: s, escape=lambda s: s)


def _progress(ctx: LogContext) -> str:
    max_steps = ctx.job.config.get("maxSteps")
    parts = [f"step {ctx.step}" + (f"/{max_steps}" if isinstance(max_steps, int) else "")]
    for label, value in (("loss", ctx.loss), ("eval loss", ctx.eval_loss)):
        if value is not None:
            parts.append(f"{label} {value:.4g}")
    return ", ".join(parts)


def describe(kind: EventKind, ctx: Any, markup: _Markup = _PLAIN) -> _Message:
    """The platform-neutral message for one event, with outside text escaped by ``markup``."""
    job: TrainingJob = ctx.job
    name = markup.bold(markup.escape(_clip(job.name, 200)))
    job_ref = f"job {markup.code(markup.escape(_clip(job.id, 200)))}"
    if kind == "completed":
        count = len(ctx.artifacts)
        plural = "" if count == 1 else "s"
        return _Message(f"\u2705 Training {name} completed ({job_ref}, {count} artifact{plural}).")
    if kind == "failed":
        return _Message(
            f"\u274c Training {name} failed ({job_ref}).",
            markup.escape(_clip(str(ctx.error))),
            urgent=True,
        )
    if kind == "cancelled":
        return _Message(f"Training {name} was cancelled ({job_ref}).")
    if kind == "progress":
        return _Message(f"Training {name}: {_progress(ctx)}.")
    answer = "(no text)" if ctx.answer is None else _clip(ctx.answer)
    return _Message(
        f"Training {name}: sample at checkpoint step {ctx.step}.",
        f"Prompt: {markup.escape(_clip(ctx.prompt))}\nAnswer: {markup.escape(answer)}",
    )


def _joined(message: _Message) -> str:
    if message.detail is None:
        return message.headline
    return f"{message.headline}\n{message.detail}"


def slack_body(kind: EventKind, ctx: Any) -> Mapping[str, Any]:
    """A Slack incoming-webhook body: ``text`` in mrkdwn, ``<!here>`` first only on failure."""
    message = describe(kind, ctx, _SLACK)
    text = _joined(message)
    return {"text": f"<!here> {text}" if message.urgent else text, "mrkdwn": True}


def discord_body(kind: EventKind, ctx: Any) -> Mapping[str, Any]:
    """A Discord webhook body: ``content``, ``@here`` first and allowed to ping only on failure."""
    message = describe(kind, ctx, _DISCORD)
    text = _joined(message)
    if message.urgent:
        text = f"@here {text}"
    return {
        "content": _clip(text, DISCORD_MAX_CHARS),
        "allowed_mentions": {"parse": ["everyone"] if message.urgent else []},
    }


def teams_body(kind: EventKind, ctx: Any) -> Mapping[str, Any]:
    """A Teams (Workflows / incoming webhook) message carrying one Adaptive Card.

    The headline is bold, coloured ``Attention`` on failure and ``Good`` on completion; Teams
    has no channel-wide mention for webhooks, so failures are marked by colour only.
    """
    message = describe(kind, ctx, _TEAMS)
    headline: dict[str, Any] = {
        "type": "TextBlock",
        "text": message.headline,
        "weight": "Bolder",
        "wrap": True,
    }
    colour = {"failed": "Attention", "completed": "Good"}.get(kind)
    if colour is not None:
        headline["color"] = colour
    body: list[dict[str, Any]] = [headline]
    if message.detail is not None:
        # A lone "\n" does not break a line in a Teams TextBlock; a blank line does.
        detail = message.detail.replace("\n", "\n\n")
        body.append({"type": "TextBlock", "text": detail, "wrap": True})
    card = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": body,
    }
    return {
        "type": "message",
        "attachments": [
            {
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": None,
                "content": card,
            }
        ],
    }


def generic_body(kind: EventKind, ctx: Any) -> Mapping[str, Any]:
    """The default ``webhook()`` body: ``{"event", "job": {id, name, status}, "text", ...}``.

    Extra keys by kind: completed ``artifact_count``; failed ``error``; progress ``step``,
    ``loss``, ``eval_loss``, ``learning_rate``, ``epoch``; sample ``step``, ``prompt``,
    ``answer``; cancelled none.
    """
    job: TrainingJob = ctx.job
    body: dict[str, Any] = {
        "event": kind,
        "job": {"id": job.id, "name": job.name, "status": job.status},
        "text": _joined(describe(kind, ctx)),
    }
    if kind == "completed":
        body["artifact_count"] = len(ctx.artifacts)
    elif kind == "failed":
        body["error"] = str(ctx.error)
    elif kind == "progress":
        for key in ("step", "loss", "eval_loss", "learning_rate", "epoch"):
            body[key] = getattr(ctx, key)
    elif kind == "sample":
        body.update(step=ctx.step, prompt=ctx.prompt, answer=ctx.answer)
    return body
