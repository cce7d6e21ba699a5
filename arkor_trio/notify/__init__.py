"""Ready-made notifiers: lifecycle events fanned out to Slack, Discord, Teams or any JSON endpoint.

Each factory returns a :class:`~arkor_trio.Callbacks` to combine with your own::

    callbacks = Callbacks(on_log=print_loss) + notify.slack() + notify.discord()

``Callbacks.merge`` / ``+`` run every callback of an event in the order given, so above your
``on_log`` runs first, then Slack's, then Discord's.

What every notifier guarantees:

- **A side effect, never the outcome.** Every failure of a post (connect error, DNS, TLS, a
  non-2xx answer, a timeout, a URL httpx rejects, a custom ``payload`` builder that raises, a
  sample inference that fails) is caught inside the callback and logged; it never reaches
  ``Trainer.wait()``. The one thing that does pass through is :class:`trio.Cancelled` from a scope
  around the wait: cancelling the wait is never mistaken for a failed post.
- **Bounded time, no retries.** Each post, connect included, runs under
  ``trio.move_on_after(post_timeout)`` (default 5 s) and httpx's own timeouts; a post is never
  retried, so a dead endpoint costs at most ``post_timeout`` per event. Checkpoint samples run
  ``ctx.infer`` first, bounded by :data:`SAMPLE_TIMEOUT` per prompt.
- **The stream keeps draining.** Callbacks run on the trainer's dispatcher task; the reader is a
  separate task that keeps reading the socket (and the idle watchdog keeps running) while a post
  waits, so a slow webhook delays later callbacks, never the stream itself.
- **Secrets stay out of code and logs.** URLs default to ``SLACK_WEBHOOK_URL``,
  ``DISCORD_WEBHOOK_URL`` and ``TEAMS_WEBHOOK_URL``, read when the factory is called. A missing or
  non-http(s) URL disables that notifier (every hook None) with one ``WARNING``, never an error.
  Logs and reprs show the URL as ``scheme://host/***``.
- **Logged once.** Log records go to the ``arkor_trio.notify`` logger. The first failure of a
  notifier is a ``WARNING``; later ones are ``DEBUG`` records carrying a running count, so a dead
  webhook does not flood the log. Successful posts are ``DEBUG``.

What is posted: ``completed`` (job name, id, artifact count), ``failed`` (the backend's error
string, with ``<!here>`` on Slack / ``@here`` on Discord, the only mention ever sent),
``cancelled`` (quiet), and optionally ``progress`` (every ``progress_every`` steps from
``on_log``; ``NOTIFY_PROGRESS=1`` turns it on at :data:`DEFAULT_PROGRESS_EVERY` when the argument
is None, ``progress_every=0`` turns it off regardless) and ``sample`` (for each prompt in
``samples``, the checkpoint's answer). ``on_started`` is never used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._errors import ConfigError
from ._messages import EventKind as EventKind
from ._messages import Sample as Sample
from ._messages import discord_body, generic_body, slack_body, teams_body
from ._notifier import DEFAULT_PROGRESS_EVERY as DEFAULT_PROGRESS_EVERY
from ._notifier import SAMPLE_MAX_TOKENS as SAMPLE_MAX_TOKENS
from ._notifier import SAMPLE_TIMEOUT as SAMPLE_TIMEOUT
from ._notifier import PayloadBuilder as PayloadBuilder
from ._notifier import make_callbacks

if TYPE_CHECKING:
    from collections.abc import Sequence

    import httpx

    from ..trainer._callbacks import Callbacks

__all__ = [
    "DEFAULT_PROGRESS_EVERY",
    "SAMPLE_MAX_TOKENS",
    "SAMPLE_TIMEOUT",
    "EventKind",
    "PayloadBuilder",
    "Sample",
    "discord",
    "slack",
    "teams",
    "webhook",
]


def slack(
    url: str | None = None,
    *,
    progress_every: int | None = None,
    samples: Sequence[str] | None = None,
    post_timeout: float = 5.0,
    http: httpx.AsyncClient | None = None,
) -> Callbacks:
    """Post to a Slack incoming webhook: ``{"text": ...}`` in mrkdwn, ``<!here>`` only on failure.

    Args:
        url: The webhook URL; defaults to ``$SLACK_WEBHOOK_URL``. Missing or not http(s): the
            notifier is disabled with one warning (all hooks None).
        progress_every: Post a progress line from ``on_log`` when ``step % progress_every == 0``;
            None follows ``NOTIFY_PROGRESS``, 0 disables.
        samples: Prompts to run on each checkpoint (``ctx.infer``, one user message each); each
            answer is posted.
        post_timeout: Seconds one post may take, connect included.
        http: A client to post with (its connection pool is reused); one per post when None.

    Returns:
        Callbacks with ``on_completed``, ``on_failed``, ``on_cancelled`` and, when enabled,
        ``on_log`` and ``on_checkpoint``. They never raise except ``trio.Cancelled``.

    Raises:
        ConfigError: A non-positive ``post_timeout``, a negative ``progress_every``, ``samples``
            that is not a sequence of strings, or a ``url``/``http`` of the wrong type.
    """
    return make_callbacks(
        "slack",
        url,
        "SLACK_WEBHOOK_URL",
        slack_body,
        progress_every=progress_every,
        samples=samples,
        post_timeout=post_timeout,
        http=http,
    )


def discord(
    url: str | None = None,
    *,
    progress_every: int | None = None,
    samples: Sequence[str] | None = None,
    post_timeout: float = 5.0,
    http: httpx.AsyncClient | None = None,
) -> Callbacks:
    """Post to a Discord webhook: ``{"content": ...}``, ``@here`` (allowed to ping) only on failure.

    Arguments, result and errors as :func:`slack`; the URL defaults to ``$DISCORD_WEBHOOK_URL``.
    Mentions inside outside text (job name, error, answers) are disarmed.
    """
    return make_callbacks(
        "discord",
        url,
        "DISCORD_WEBHOOK_URL",
        discord_body,
        progress_every=progress_every,
        samples=samples,
        post_timeout=post_timeout,
        http=http,
    )


def teams(
    url: str | None = None,
    *,
    progress_every: int | None = None,
    samples: Sequence[str] | None = None,
    post_timeout: float = 5.0,
    http: httpx.AsyncClient | None = None,
) -> Callbacks:
    """Post an Adaptive Card to a Microsoft Teams webhook (Workflows or incoming webhook).

    Arguments, result and errors as :func:`slack`; the URL defaults to ``$TEAMS_WEBHOOK_URL``.
    Failures are marked by an ``Attention``-coloured headline (Teams webhooks cannot @-mention
    a channel).
    """
    return make_callbacks(
        "teams",
        url,
        "TEAMS_WEBHOOK_URL",
        teams_body,
        progress_every=progress_every,
        samples=samples,
        post_timeout=post_timeout,
        http=http,
    )


def webhook(
    url: str | None,
    *,
    payload: PayloadBuilder | None = None,
    progress_every: int | None = None,
    samples: Sequence[str] | None = None,
    post_timeout: float = 5.0,
    http: httpx.AsyncClient | None = None,
) -> Callbacks:
    """POST JSON to any HTTP endpoint.

    Args:
        url: The endpoint (no environment default). None, empty or not http(s): disabled with
            one warning.
        payload: ``(kind, ctx) -> Mapping | None`` building the body, None to skip that event.
            If it raises, the failure is logged like a failed post. Default: ``{"event": kind,
            "job": {"id", "name", "status"}, "text": ...}`` plus ``artifact_count`` (completed),
            ``error`` (failed), ``step``/``loss``/``eval_loss``/``learning_rate``/``epoch``
            (progress) or ``step``/``prompt``/``answer`` (sample).
        progress_every: As for :func:`slack`.
        samples: As for :func:`slack`.
        post_timeout: As for :func:`slack`.
        http: As for :func:`slack`.

    Returns:
        Callbacks as for :func:`slack`.

    Raises:
        ConfigError: As for :func:`slack`, or a ``payload`` that is not callable.
    """
    if payload is not None and not callable(payload):
        raise ConfigError(
            "payload must be a callable (kind, ctx) -> Mapping | None", field="payload"
        )
    return make_callbacks(
        "webhook",
        url,
        None,
        payload or generic_body,
        progress_every=progress_every,
        samples=samples,
        post_timeout=post_timeout,
        http=http,
    )
