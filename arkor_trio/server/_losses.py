"""``GET /v1/local/losses``: each job's loss curve in a few points, for the page's sparklines.

A local-backend extension (the cloud has no such route). For every job of the scope it answers
up to :data:`POINTS` train-loss values, evenly sampled from the job's ``training.log`` events.
The events are read incrementally: each job's curve is cached with the last event id read, and
one call reads at most :data:`PAGES_PER_CALL` non-empty pages of events in all (the rest on the
next poll), so a poll stays cheap however many and however long the runs; a cached curve keeps
at most :data:`MAX_KEPT` values (halved, evenly, when it grows past that). ``loading`` lists the
jobs whose curve this call did not read to the end (the page draws those as loading, not as
"no data").
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from starlette.routing import Route

from ._http import json_response, require_project_scope

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

    from ._store import Store

__all__ = ["POINTS", "losses_route"]

POINTS = 40
PAGE = 1000
PAGES_PER_CALL = 5
#: Values a cached curve keeps at most.
MAX_KEPT = 4096
#: Jobs (newest first) whose curves one call answers.
MAX_JOBS = 200


def _sample(values: list[float], count: int) -> list[float]:
    if len(values) <= count:
        return values
    last = len(values) - 1
    return [values[round(i * last / (count - 1))] for i in range(count)]


def losses_route(store: Store) -> Route:
    """The route (its cache lives as long as the app)."""
    cache: dict[str, tuple[int, list[float]]] = {}

    def curve(job_id: str, budget: list[int], loading: list[str]) -> list[float]:
        seq, values = cache.get(job_id, (0, []))
        done = False
        while budget[0] > 0:
            rows = store.events_after(job_id, seq, PAGE)
            if not rows:
                done = True
                break  # nothing new: an indexed lookup, free of the budget
            budget[0] -= 1
            for row_seq, kind, payload in rows:
                seq = row_seq
                if kind != "training.log":
                    continue
                loss = json.loads(payload).get("loss")
                if isinstance(loss, int | float) and not isinstance(loss, bool):
                    values.append(float(loss))
            if len(values) > MAX_KEPT:
                values = values[::2]
            if len(rows) < PAGE:
                done = True
                break
        if not done:
            loading.append(job_id)
        cache[job_id] = (seq, values)
        return _sample(values, POINTS)

    async def endpoint(request: Request) -> Response:
        project_id = require_project_scope(request)
        jobs = [row[0] for row in store.list_jobs() if row[2] == project_id][:MAX_JOBS]
        budget = [PAGES_PER_CALL]  # pages this call may read, over all its jobs
        loading: list[str] = []
        losses = {job_id: curve(job_id, budget, loading) for job_id in jobs}
        return json_response({"losses": losses, "loading": loading})

    return Route("/v1/local/losses", endpoint, methods=["GET"])
