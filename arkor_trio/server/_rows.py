"""How the store's rows read: the job row's shape, its wire form, timestamps and compact JSON."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from ._redact import redact_config

__all__ = ["JobRow", "dump_json", "job_to_wire", "utc_now"]

#: A job row: (id, org_id, project_id, name, status, config, error, created_at, started_at,
#: completed_at, artifacts), JSON columns still as text.
JobRow = tuple[str, str, str, str, str, str, str | None, str, str | None, str | None, str | None]


def utc_now() -> str:
    """The current time as ISO 8601 UTC with milliseconds, e.g. ``2025-01-02T03:04:05.678Z``."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _finite(value: Any) -> Any:
    """Replace NaN/inf (not valid JSON) by None, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def dump_json(value: Any) -> str:
    """Compact one-line JSON; non-finite floats become null."""
    try:
        return json.dumps(value, separators=(",", ":"), allow_nan=False)
    except ValueError:
        return json.dumps(_finite(value), separators=(",", ":"), allow_nan=False)


def job_to_wire(row: JobRow) -> dict[str, Any]:
    """A job row as the wire's ``TrainingJob`` (camelCase; ``artifacts`` once completed)."""
    (job_id, org_id, project_id, name, status, config, error, created, started, done, arts) = row
    job: dict[str, Any] = {
        "id": job_id,
        "orgId": org_id,
        "projectId": project_id,
        "name": name,
        "status": status,
        "config": redact_config(json.loads(config)),
        "error": error,
        "createdAt": created,
        "startedAt": started,
        "completedAt": done,
    }
    if arts is not None:
        job["artifacts"] = json.loads(arts)
    return job
