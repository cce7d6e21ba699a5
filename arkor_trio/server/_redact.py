"""Keeping dataset secrets out of what the local backend stores, answers and logs.

A job config may carry secrets: ``datasetSource.token`` (sent as a bearer token to an HTTP
dataset), any header- or credential-like key, and a password or query string inside a dataset
URL. The runner keeps the real config in memory for the run; the database, every response
(``POST``/``GET /v1/jobs``, the job list) and log lines only ever see :func:`redact_config`'s copy.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ._dataset_read import redact_url

__all__ = ["REDACTED", "redact_config"]

REDACTED = "[redacted]"
_SECRET_KEY = re.compile(
    r"token|headers?|authorization|password|passwd|secret|api[_-]?key|credentials?|cookie",
    re.IGNORECASE,
)


def _redact(value: Any, key: str) -> Any:
    if _SECRET_KEY.fullmatch(key) and value is not None:
        return REDACTED
    if isinstance(value, Mapping):
        return {k: _redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v, "") for v in value]
    if key == "url" and isinstance(value, str):
        return redact_url(value)
    return value


def redact_config(config: Any) -> Any:
    """A copy of a job config with every secret replaced by ``"[redacted]"`` (see module doc)."""
    return _redact(config, "")
