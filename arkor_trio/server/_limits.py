"""The local backend's limits on what a request may hold, and the checks that enforce them.

Every limit here is documented in ``docs/local-backend.md`` ("Limits"). A request over a limit is
answered 400 (or 413 for the body size, 429 for concurrency) naming the field, never a 500.
The checks run on the parsed JSON before any route looks at it, so nothing downstream (SQLite,
NumPy, ``json.dumps``) meets a value it cannot handle.

This module has no dependencies inside the server (``_http`` raises the HTTP errors), so every
other module may import it.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = [
    "MAX_CHOICES",
    "MAX_CHOICE_CHARS",
    "MAX_CONCURRENT_INFERENCE",
    "MAX_JSON_DEPTH",
    "MAX_MESSAGES",
    "MAX_NAME_CHARS",
    "MAX_PROMPT_CHARS",
    "MAX_SEED",
    "LimitError",
    "check_json_value",
    "job_name_problem",
]

#: Deepest nesting of arrays/objects accepted in a request body (the body itself is level 1).
MAX_JSON_DEPTH = 32
#: Longest job name, in characters.
MAX_NAME_CHARS = 256
#: Chat inference: the messages' content, in characters, all messages together.
MAX_PROMPT_CHARS = 32_768
#: Chat inference: how many messages one request may hold.
MAX_MESSAGES = 1024
#: Chat inference: how many ``structuredOutputs.choice`` entries, and how long each may be.
MAX_CHOICES = 32
MAX_CHOICE_CHARS = 256
#: Chat inference requests served at once; one more is a 429.
MAX_CONCURRENT_INFERENCE = 4
#: Largest ``seed`` (chat and job config): seeds are 0 .. 2**63 - 1.
MAX_SEED = 2**63 - 1

_SURROGATE = re.compile(r"[\ud800-\udfff]")


class LimitError(ValueError):
    """A value breaks a limit; ``field`` names it (a dotted wire path) when known."""

    def __init__(self, message: str, field: str | None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


def _join(path: str, key: str) -> str:
    return key if not path else f"{path}.{key}"


def check_json_value(body: Any) -> None:
    """Raise :class:`LimitError` for a value nested too deeply or holding a lone surrogate.

    JSON's ``\\ud800`` escapes decode to lone surrogates, which are not text: SQLite and UTF-8
    encoders refuse them later. The walk is iterative, so it cannot itself recurse too deeply.
    """
    stack: list[tuple[Any, str, int]] = [(body, "", 1)]
    while stack:
        value, path, depth = stack.pop()
        where = path or "the body"
        if isinstance(value, str):
            if _SURROGATE.search(value):
                raise LimitError(f"{where} holds a lone surrogate (not valid Unicode text)", path)
            continue
        if not isinstance(value, dict | list):
            continue
        if depth > MAX_JSON_DEPTH:
            raise LimitError(f"{where} is nested deeper than {MAX_JSON_DEPTH} levels", path)
        if isinstance(value, dict):
            for key, item in value.items():
                if _SURROGATE.search(key):
                    raise LimitError(f"a key in {where} holds a lone surrogate", path)
                stack.append((item, _join(path, key), depth + 1))
        else:
            stack.extend((item, f"{path}[{i}]", depth + 1) for i, item in enumerate(value))


def job_name_problem(name: Any) -> str | None:
    """Why ``name`` is not an acceptable job name, or None when it is."""
    if not isinstance(name, str) or not name.strip():
        return "name must be a non-empty string"
    if len(name) > MAX_NAME_CHARS:
        return f"name must be at most {MAX_NAME_CHARS} characters (got {len(name)})"
    return None
