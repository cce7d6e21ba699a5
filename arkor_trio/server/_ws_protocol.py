"""The job-feed WebSocket protocol of the local backend: close codes, limits, message parsing.

Every message is a JSON object whose ``type`` names it; a text message holds one, or a JSON array
of them (a batch, in order), both ways (docs/websocket.md).

Client -> server: ``subscribe {job, after}`` (``after``: the last event id the client holds, a
string of digits, or null) and ``unsubscribe {job}``.
Server -> client: ``subscribed {job, recovered}``, ``event {job, id, event, data}``,
``reset {job, reason}``, ``end {job}``, ``error {job, status, error}`` and ``ping {}``.

The socket's query may carry ``max_batch=N`` (1 or more; absent: the server's bound): the most
messages the server puts in the socket's first batch; each later batch may hold twice as many as
the one before, up to the server's own bound. A client lowers it after a socket that broke
before anything of use got through (docs/websocket.md, "Batches and slow links").

Close codes mirror HTTP statuses as ``4000 + status`` so that a client applies the same
permanent/transient rule as for an HTTP answer: 4400 bad scope (or ``max_batch``), 4401 bad
token, 4404 unknown org/project, 4426 client too old (all final); 4408 a consumer too far behind
(reconnect and resume). 1001 (going away) and 1012 (service restart) ask for an immediate
reconnect; 1009 is hypercorn's answer to a message larger than :data:`MAX_MESSAGE_BYTES`.
"""

from __future__ import annotations

import json
import re
from typing import Any

import attrs

from ._replay import cursor_id

__all__ = [
    "CLOSE_BAD_SCOPE",
    "CLOSE_BAD_TOKEN",
    "CLOSE_GOING_AWAY",
    "CLOSE_NO_SCOPE",
    "CLOSE_POLICY",
    "CLOSE_TOO_SLOW",
    "CLOSE_UPGRADE",
    "MAX_MESSAGE_BYTES",
    "BadMessage",
    "Subscribe",
    "Unsubscribe",
    "WsLimits",
    "encode",
    "error_message",
    "event_message",
    "parse_client_messages",
    "parse_max_batch",
    "parse_message",
]

CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008
CLOSE_BAD_SCOPE = 4400
CLOSE_BAD_TOKEN = 4401
CLOSE_NO_SCOPE = 4404
CLOSE_TOO_SLOW = 4408
CLOSE_UPGRADE = 4426

#: Largest message a client may send (hypercorn closes with 1009 while reading a larger one).
MAX_MESSAGE_BYTES = 64 * 1024
#: Longest job id accepted in a message.
MAX_JOB_ID = 200
_MAX_BATCH = re.compile(r"[0-9]{1,9}")


@attrs.frozen(kw_only=True)
class WsLimits:
    """Per-socket limits of ``GET /v1/events/ws``.

    Args:
        max_subscriptions: Jobs one socket may follow at once; one more is answered with
            ``error {status: 429}``.
        send_queue: Messages queued for one socket; producers (replay, live events, errors)
            wait while it is full, so a slow reader slows only its own socket.
        send_timeout: A socket whose send queue stays full for this long (the client reads
            more slowly than its jobs produce) is closed with 4408 (too far behind); the client
            resumes from its cursors. (hypercorn shields each socket write, so a client that
            reads nothing at all holds its socket until TCP gives up on it; memory stays bounded
            by the queue and the kernel buffers.)
        max_total_subscriptions: Jobs all sockets together may follow at once; one more is
            answered with ``error {status: 429}`` (each costs a task and its buffers).
        max_errors_per_message: ``error`` answers one client message (a batch) may draw;
            the rest are counted in one more ``error`` (so bad input is never amplified).
        max_errors_per_socket: ``error`` answers one socket may draw in all (a batch's
            summary counts one); then it is closed with 1008 (policy violation).
    """

    max_subscriptions: int = 10_000
    send_queue: int = 4096
    send_timeout: float = 30.0
    max_total_subscriptions: int = 20_000
    max_errors_per_message: int = 8
    max_errors_per_socket: int = 1000


class BadMessage(ValueError):
    """A client message the protocol cannot accept: answered with ``error {status: 400}``."""

    def __init__(self, message: str, job: str | None = None) -> None:
        super().__init__(message)
        self.job = job


@attrs.frozen
class Subscribe:
    job: str
    after: int | None


@attrs.frozen
class Unsubscribe:
    job: str


def _job_field(message: dict[str, Any]) -> str:
    job = message.get("job")
    if not isinstance(job, str) or not job or len(job) > MAX_JOB_ID:
        raise BadMessage(f"'job' must be a job id (a string of 1 to {MAX_JOB_ID} characters)")
    if not job.isascii():  # job ids are ASCII; a lone surrogate is not even text
        raise BadMessage("'job' must be a job id (ASCII letters, digits and '_')")
    return job


def parse_client_messages(raw: str | bytes | None) -> list[Subscribe | Unsubscribe | BadMessage]:
    """Decode one text message: a message object, or a JSON array of them (a batch).

    Each element is a parsed message or the :class:`BadMessage` it raised, in order.

    Raises:
        BadMessage: Binary, not JSON (or nested too deeply to decode), or neither an object
            nor an array.
    """
    if not isinstance(raw, str):
        raise BadMessage("binary messages are not part of the protocol; send JSON text")
    try:
        decoded = json.loads(raw)
    except ValueError as exc:
        raise BadMessage(f"malformed JSON: {exc}") from None
    except RecursionError:
        raise BadMessage("malformed message: JSON nested too deeply") from None
    out: list[Subscribe | Unsubscribe | BadMessage] = []
    for message in decoded if isinstance(decoded, list) else [decoded]:
        try:
            out.append(parse_message(message))
        except BadMessage as exc:
            out.append(exc)
    return out


def parse_message(message: Any) -> Subscribe | Unsubscribe:
    """Validate one decoded client message.

    Raises:
        BadMessage: Not an object, an unknown ``type``, or a bad field.
    """
    if not isinstance(message, dict):
        raise BadMessage(f"a message must be a JSON object, got {type(message).__name__}")
    kind = message.get("type")
    if kind == "subscribe":
        job = _job_field(message)
        after = message.get("after")
        if after is None:
            return Subscribe(job, None)
        cursor = cursor_id(after) if isinstance(after, str) else None
        if cursor is None:
            raise BadMessage(
                "'after' must be null or an event id of this backend (a string of digits), "
                f"got {after!r}",
                job,
            )
        return Subscribe(job, cursor)
    if kind == "unsubscribe":
        return Unsubscribe(_job_field(message))
    shown = kind if isinstance(kind, str) and len(kind) <= 40 else type(kind).__name__
    raise BadMessage(f"unknown message type {shown!r}; expected 'subscribe' or 'unsubscribe'")


def parse_max_batch(raw: str | None) -> int | None:
    """The ``max_batch`` query parameter of a socket: a whole number from 1, or None if absent.

    Raises:
        BadMessage: Not a whole number from 1 (at most 9 digits).
    """
    if raw is None:
        return None
    if not _MAX_BATCH.fullmatch(raw) or int(raw) < 1:
        raise BadMessage(f"'max_batch' must be a whole number from 1, got {raw[:20]!r}")
    return int(raw)


def encode(message: dict[str, Any]) -> str:
    """Compact JSON text of a server message."""
    return json.dumps(message, separators=(",", ":"))


def event_message(job_json: str, seq: int, event_type: str, payload: str) -> str:
    """An ``event`` message from a stored row (``payload`` is already JSON text)."""
    type_json = _TYPE_JSON.get(event_type)
    if type_json is None:
        type_json = json.dumps(event_type)
        if len(_TYPE_JSON) < _TYPE_JSON_MAX:
            _TYPE_JSON[event_type] = type_json
    return f'{{"type":"event","job":{job_json},"id":"{seq}","event":{type_json},"data":{payload}}}'


#: Event types as JSON text: a job's log holds a handful of types, encoded once each.
_TYPE_JSON: dict[str, str] = {}
_TYPE_JSON_MAX = 1024


def error_message(job: str | None, status: int, error: str) -> str:
    """An ``error`` message (``job`` null for errors about the message itself)."""
    return encode({"type": "error", "job": job, "status": status, "error": error})
