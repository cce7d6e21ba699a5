"""Chat datasets for the local engine: fetching, JSONL parsing, rendering and the vocabulary.

A conversation ``{"messages": [{"role", "content"}, ...]}`` is rendered as plain text with one
special character per role marker and one end marker per message::

    \\x02How do I log in?\\x05\\x03Next step: reset your password.\\x05

The engine predicts every character of that text from the characters before it. The assistant
mask marks the characters that belong to assistant replies (their content and end marker), which
is what ``trainOnResponsesOnly`` trains on.
"""

from __future__ import annotations

import json
import string
import urllib.parse
from collections import Counter
from typing import TYPE_CHECKING, Any

import attrs

from ._dataset_read import ReadError, fetch_http, file_path, read_file

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence

__all__ = [
    "ASSISTANT",
    "BASE_CHARS",
    "END",
    "PAD",
    "ROLE_MARKERS",
    "SPECIALS",
    "UNK",
    "DatasetError",
    "Rendered",
    "build_vocab",
    "parse_jsonl",
    "read_source",
    "render",
]

PAD = "\x00"
"""Left padding of the context window (never predicted)."""
ROLE_MARKERS: dict[str, str] = {
    "system": "\x01",
    "user": "\x02",
    "assistant": "\x03",
    "tool": "\x04",
}
ASSISTANT = ROLE_MARKERS["assistant"]
END = "\x05"
"""Closes every message; generation stops when the model samples it."""
UNK = "\x1a"
"""Stands for any character the vocabulary does not hold."""
SPECIALS = PAD + "".join(ROLE_MARKERS.values()) + END + UNK
BASE_CHARS = SPECIALS + "\n\t" + "".join(c for c in string.printable if c.isprintable())
"""Always in the vocabulary, so an untrained model can read any ASCII prompt."""
MAX_EXTRA_CHARS = 1000
MAX_DATASET_BYTES = 64 * 1024 * 1024


class DatasetError(Exception):
    """The dataset could not be read or is malformed; the message says where and why."""


@attrs.frozen
class Rendered:
    """A conversation rendered to text, with ``mask[i]`` true for assistant characters."""

    text: str
    mask: tuple[bool, ...]


def render(messages: Sequence[Mapping[str, Any]], *, prompt: bool = False) -> Rendered:
    """Render chat messages with the role markers.

    Args:
        messages: ``{"role", "content"}`` mappings (already validated); ``content`` may be a
            string, None, or a list of OpenAI text parts.
        prompt: Append an open assistant marker, as generation and choice scoring need.

    Returns:
        The text and its assistant mask. Special characters inside content are dropped, so a
        message can never forge a marker.
    """
    parts: list[str] = []
    mask: list[bool] = []
    for message in messages:
        body = _content_text(message.get("content"))
        body = "".join(c for c in body if c not in SPECIALS)
        is_assistant = message["role"] == "assistant"
        parts.append(ROLE_MARKERS[message["role"]])
        mask.append(False)
        parts.append(body + END)
        mask.extend([is_assistant] * (len(body) + 1))
    if prompt:
        parts.append(ASSISTANT)
        mask.append(False)
    return Rendered("".join(parts), tuple(mask))


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(p.get("text", ""))
            for p in content
            if isinstance(p, dict) and p.get("type") == "text"
        )
    return str(content)


def check_messages(messages: Any, where: str) -> list[Mapping[str, Any]]:
    """Validate chat messages; raise :class:`DatasetError` naming ``where`` and the problem."""
    if not isinstance(messages, list) or not messages:
        raise DatasetError(f"{where}: 'messages' must be a non-empty list")
    for number, message in enumerate(messages, start=1):
        if not isinstance(message, dict):
            raise DatasetError(f"{where}: message {number} is not an object")
        role = message.get("role")
        if role not in ROLE_MARKERS:
            known = ", ".join(ROLE_MARKERS)
            raise DatasetError(f"{where}: message {number} has role {role!r} (expected {known})")
        content = message.get("content")
        if content is not None and not isinstance(content, str | list):
            raise DatasetError(f"{where}: message {number} 'content' must be a string")
    return messages


def parse_jsonl(
    text: str, *, should_stop: Callable[[], bool] = lambda: False
) -> list[list[Mapping[str, Any]]] | None:
    """Parse chatml JSONL: one ``{"messages": [...]}`` object per non-blank line.

    Returns:
        The message lists in file order, or None if ``should_stop()`` turned true meanwhile.

    Raises:
        DatasetError: A line is not JSON or not a conversation (the message names the 1-based
            line number), or the file holds no conversation at all.
    """
    conversations: list[list[Mapping[str, Any]]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if number % 2048 == 0 and should_stop():
            return None
        if not line.strip():
            continue
        where = f"line {number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{where}: invalid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(row, dict) or "messages" not in row:
            raise DatasetError(f'{where}: expected an object with a "messages" list')
        conversations.append(check_messages(row["messages"], where))
    if not conversations:
        raise DatasetError("the dataset is empty: no conversations found")
    return conversations


def build_vocab(texts: Iterable[str]) -> str:
    """:data:`BASE_CHARS` followed by the dataset's other characters, most frequent first.

    At most :data:`MAX_EXTRA_CHARS` extra characters are kept (ties broken by code point, so the
    result is deterministic); rarer ones read as :data:`UNK`.
    """
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(text)
    base = set(BASE_CHARS)
    extra = sorted((c for c in counts if c not in base), key=lambda c: (-counts[c], ord(c)))
    return BASE_CHARS + "".join(extra[:MAX_EXTRA_CHARS])


def read_source(url: str, token: str | None, should_stop: Callable[[], bool]) -> str | None:
    """Read a dataset from a ``file://`` URL or a loopback ``http(s)://`` URL.

    Returns:
        The decoded text, or None if ``should_stop()`` turned true while reading.

    Raises:
        DatasetError: The file is missing, unreadable or not a regular file, the server
            answered an error or did not finish in time, the body is not UTF-8, or it is larger
            than 64 MiB (see ``_dataset_read`` for the bounds).
    """
    try:
        if urllib.parse.urlsplit(url).scheme == "file":
            data = read_file(file_path(url), should_stop, MAX_DATASET_BYTES)
        else:
            data = fetch_http(url, token, should_stop, MAX_DATASET_BYTES)
    except ReadError as exc:
        raise DatasetError(str(exc)) from None
    if data is None:
        return None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DatasetError(f"the dataset is not UTF-8 (byte {exc.start})") from None
