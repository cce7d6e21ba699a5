"""Which replica of a fleet follows which job: one pure function, the same on every replica.

Every replica computes the assignment from the same inputs (the live members, the jobs to
follow in the backend's creation order, who holds what according to the members' heartbeats),
so they agree without talking to each other; where views differ for a moment, the job's lease
still lets only one follow it. The rules:

* a job stays with the member holding it while that member holds no more than its fair share
  plus one, ``ceil(jobs / members) + 1``, so a healthy fleet does not move jobs around as jobs
  end (a member sheds only what is beyond that);
* but a member below ``floor(jobs / members)`` (a new one, say) takes the newest jobs of the
  most loaded until it is not, so a fresh replica gets its share without anyone restarting;
* every other job goes to the least loaded member; ties go to the member the job's position in
  the project (``index``) points at, round robin, so jobs that arrive one by one are dealt
  evenly (10/10/10 for 30 jobs and 3 replicas);
* a new member starts with nothing and receives jobs as they are created or as the others
  shed what is over the cap.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = ["assign"]


def assign(
    members: Sequence[str], jobs: Sequence[tuple[int, str]], holders: Mapping[str, str]
) -> dict[str, str]:
    """Map each job id to the member that should follow it.

    Args:
        members: The live members, in one order every replica shares (sorted names).
        jobs: ``(index, job_id)`` of the jobs to follow; ``index`` is the job's position among
            all the project's jobs in creation order.
        holders: Job id -> the member whose heartbeat says it holds the job.
    """
    if not members:
        return {}
    cap = math.ceil(len(jobs) / len(members)) + 1
    load = dict.fromkeys(members, 0)
    out: dict[str, str] = {}
    for _, job in jobs:
        holder = holders.get(job)
        if holder is not None and holder in load and load[holder] < cap:
            out[job] = holder
            load[holder] += 1
    n = len(members)
    for index, job in jobs:
        if job in out:
            continue
        least = min(load.values())
        first = index % n
        for step in range(n):
            member = members[(first + step) % n]
            if load[member] == least:
                out[job] = member
                load[member] += 1
                break
    floor = len(jobs) // n
    while True:
        low = min(members, key=lambda m: (load[m], members.index(m)))
        high = max(members, key=lambda m: (load[m], -members.index(m)))
        if load[low] >= floor or load[high] - load[low] <= 1:
            return out
        newest = next(job for _, job in reversed(jobs) if out[job] == high)
        out[newest] = low
        load[high] -= 1
        load[low] += 1
