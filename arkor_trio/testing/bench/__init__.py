"""The engine of ``arkor-trio bench``: any SSE client's resilience, measured from the outside.

A scripted SSE source, the chaos proxy in front with one fault profile at a time, the client
command run once per profile, and its deliveries (the bench protocol: one JSON line per event on
stdout) scored against what was sent (design.md section 16, docs/bench.md).
``benchmarks/reconnect.py`` uses the same profiles, gaps and harness.
"""

from ._client import become_subreaper as become_subreaper
from ._html import render_html as render_html
from ._profiles import DEFAULT_PROFILES as DEFAULT_PROFILES
from ._profiles import K_RANGE as K_RANGE
from ._profiles import PROFILES as PROFILES
from ._profiles import STALL_LONG as STALL_LONG
from ._profiles import Profile as Profile
from ._profiles import make_plan as make_plan
from ._profiles import parse_profiles as parse_profiles
from ._report import gap_figures as gap_figures
from ._report import render_table as render_table
from ._report import to_json as to_json
from ._run import FAIL_ON as FAIL_ON
from ._run import BenchConfig as BenchConfig
from ._run import BenchReport as BenchReport
from ._run import ProfileResult as ProfileResult
from ._run import Trial as Trial
from ._run import check_command as check_command
from ._run import run_bench as run_bench
from ._run import run_through_proxy as run_through_proxy
from ._score import Gap as Gap
from ._score import LeidCheck as LeidCheck
from ._score import gaps_of as gaps_of
from ._score import percentile as percentile
from ._source import SentEvent as SentEvent
from ._source import Source as Source
from ._source import layout as layout
from ._source import script as script

__all__ = [
    "DEFAULT_PROFILES",
    "FAIL_ON",
    "K_RANGE",
    "PROFILES",
    "STALL_LONG",
    "BenchConfig",
    "BenchReport",
    "Gap",
    "LeidCheck",
    "Profile",
    "ProfileResult",
    "SentEvent",
    "Source",
    "Trial",
    "become_subreaper",
    "check_command",
    "gap_figures",
    "gaps_of",
    "layout",
    "make_plan",
    "parse_profiles",
    "percentile",
    "render_html",
    "render_table",
    "run_bench",
    "run_through_proxy",
    "script",
    "to_json",
]
