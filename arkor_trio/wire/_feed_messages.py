"""The job feed's protocol messages: decoding what the server sends, building what the client sends.

A text message from the server holds one message object, or a JSON array of them (a batch, in
queue order); the client's messages are compact JSON objects (docs/websocket.md).
"""

from __future__ import annotations

import json
from json.encoder import encode_basestring_ascii as _string
from typing import Any

from ._codec import load_json

__all__ = [
    "MAX_AFTER",
    "MAX_JOB_ID",
    "decode_messages",
    "encode",
    "subscribe_message",
    "unsubscribe_message",
]

#: The longest job id the server accepts in a message (it answers a longer one with an error,
#: and closes the socket with 1009 on a message over 64 KiB): refused before sending.
MAX_JOB_ID = 200
#: The longest ``after`` sent (the local backend's ids are at most 18 digits).
MAX_AFTER = 200


def decode_messages(raw: str | bytes) -> list[Any] | None:
    """The messages of one text message, in order; None when it is not JSON.

    Nesting deeper than the parser goes (``RecursionError``) is "not JSON" too: a hostile
    server's message is skipped, never raised into the feed.
    """
    try:
        # orjson for text: a batch of 512 events parses in less than half the time
        decoded = load_json(raw) if isinstance(raw, str) else json.loads(raw)
    except (ValueError, RecursionError):
        return None
    if isinstance(decoded, list):  # a batch: several messages in queue order
        return decoded
    return [decoded]


def subscribe_message(job_id: str, after: str | None) -> str:
    """``subscribe {job, after}`` as compact JSON text (built directly: a reconnect sends one
    per followed job, 100,000 of them for a large feed)."""
    after_json = "null" if after is None else _string(after)
    return f'{{"type":"subscribe","job":{_string(job_id)},"after":{after_json}}}'


def unsubscribe_message(job_id: str) -> str:
    """``unsubscribe {job}`` as compact JSON text."""
    return f'{{"type":"unsubscribe","job":{_string(job_id)}}}'


def encode(message: dict[str, Any]) -> str:
    """Compact JSON text of a client message."""
    return json.dumps(message, separators=(",", ":"))
