"""The fault profiles of ``arkor-trio bench`` and ``benchmarks/reconnect.py``: one seeded plan each.

Every cut and stall happens after a seeded draw of 4..16 complete frames, so a profile exercises
its fault many times over a few hundred events. ``restart`` is the one profile the proxy does not
make: the proxy passes everything and the source itself restarts (see ``_source.py``).
"""

from __future__ import annotations

import attrs

from ..._errors import ConfigError
from .._plan import CutAfterEvents, Fault, Plan, Refuse, Stall, Status

__all__ = [
    "DEFAULT_PROFILES",
    "K_RANGE",
    "PROFILES",
    "STALL_LONG",
    "Profile",
    "make_plan",
    "parse_profiles",
]

#: Each cut and stall happens after a seeded draw of this many complete frames.
K_RANGE = (4, 16)
#: How long the proxy keeps a stalled connection open in the dead-connection benchmark.
STALL_LONG = 8.0
_CLEAN = CutAfterEvents(0, mode="clean", graceful=True)


@attrs.frozen
class Profile:
    """One fault profile: what it injects (in words), the seeded steps and their weights."""

    name: str
    description: str
    kinds: tuple[Fault, ...] = ()
    weights: tuple[float, ...] | None = None
    restart: bool = False


_ALL = (
    Profile("none", "no fault"),
    Profile("clean", "clean end of body after k frames", (_CLEAN,)),
    Profile("mid-frame", "cut inside frame k+1", (CutAfterEvents(0, mode="mid_frame"),)),
    Profile("reset", "TCP RST inside frame k+1", (CutAfterEvents(0, mode="reset"),)),
    Profile(
        "after-id", "cut after the id line of frame k+1", (CutAfterEvents(0, mode="after_id"),)
    ),
    Profile(
        "503",
        "clean cuts; 1 in 3 draws: two 503s with Retry-After: 1",
        (_CLEAN, Status(code=503, count=2, retry_after=1)),
        (2, 1),
    ),
    Profile("stall", "stall after k frames; the proxy closes after 1 s", (Stall(seconds=1.0),)),
    Profile(
        "refuse",
        "RST cuts; 1 in 5 draws: refuse connections for 50 ms",
        (CutAfterEvents(0, mode="reset"), Refuse(ms=50)),
        (4, 1),
    ),
    Profile(
        "restart",
        "the source restarts after k events: its connections drop, 200 ms of 502s",
        restart=True,
    ),
    Profile(
        "mix",
        "all of the proxy's faults, seeded draw per connection",
        (
            _CLEAN,
            CutAfterEvents(0, mode="clean"),
            CutAfterEvents(0, mode="mid_frame"),
            CutAfterEvents(0, mode="reset"),
            CutAfterEvents(0, mode="after_id"),
            Status(code=503, count=1, retry_after=1),
            Refuse(ms=50),
            Stall(seconds=1.0),
        ),
        (3, 3, 3, 3, 3, 0.3, 0.5, 0.5),
    ),
    Profile(
        "stall-long",
        f"stall after k frames; the proxy closes after {STALL_LONG:g} s",
        (Stall(seconds=STALL_LONG),),
    ),
)
#: Every profile by name.
PROFILES: dict[str, Profile] = {p.name: p for p in _ALL}
#: What ``arkor-trio bench`` runs unless ``--profiles`` says otherwise (design.md section 16).
DEFAULT_PROFILES = (
    "clean", "mid-frame", "reset", "after-id", "503", "stall", "refuse", "restart", "mix",
)  # fmt: skip


def make_plan(name: str, seed: int) -> Plan:
    """The proxy's plan for profile ``name``: a seeded draw per connection (none: pass all)."""
    profile = PROFILES[name]
    if not profile.kinds:
        return Plan()
    weights = None if profile.weights is None else list(profile.weights)
    return Plan.random(profile.kinds, seed, weights=weights, events=K_RANGE)


def parse_profiles(text: str) -> list[str]:
    """``"clean,503"`` -> the profile names, in order, each once.

    Raises:
        ConfigError: An unknown name (the message lists the known ones), or none at all.
    """
    names: list[str] = []
    for name in (n.strip().lower() for n in text.split(",")):
        if not name or name in names:
            continue
        if name not in PROFILES:
            known = ", ".join(PROFILES)
            raise ConfigError(f"unknown profile {name!r} (known: {known})", field="profiles")
        names.append(name)
    if not names:
        raise ConfigError("--profiles names no profile", field="profiles")
    return names
