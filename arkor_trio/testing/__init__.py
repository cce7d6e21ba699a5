"""Test helpers: a fault-injecting proxy to run clients (and your callbacks) under network faults.

``open_chaos_proxy`` sits between an HTTP client and a backend and, per connection and seeded,
cuts event streams at or inside frames or after a number of bytes, resets, stalls, refuses,
answers 503/429, adds latency or throttles, and records what it did and when (design.md
section 8). ``arkor_trio.testing.bench`` is the engine of ``arkor-trio bench`` (design.md
section 16) on top of it.
"""

from ._cli import chaos_main as chaos_main
from ._plan import CutAfterBytes as CutAfterBytes
from ._plan import CutAfterEvents as CutAfterEvents
from ._plan import CutMode as CutMode
from ._plan import DropInHeaders as DropInHeaders
from ._plan import Fault as Fault
from ._plan import Latency as Latency
from ._plan import PassThrough as PassThrough
from ._plan import Plan as Plan
from ._plan import Refuse as Refuse
from ._plan import Stall as Stall
from ._plan import Status as Status
from ._plan import Throttle as Throttle
from ._proxy import ChaosProxy as ChaosProxy
from ._proxy import open_chaos_proxy as open_chaos_proxy
from ._records import ConnectionRecord as ConnectionRecord
from ._records import CutKind as CutKind

from . import bench as bench  # last: the engine uses the names above  # isort: skip

__all__ = [
    "ChaosProxy",
    "ConnectionRecord",
    "CutAfterBytes",
    "CutAfterEvents",
    "CutKind",
    "CutMode",
    "DropInHeaders",
    "Fault",
    "Latency",
    "PassThrough",
    "Plan",
    "Refuse",
    "Stall",
    "Status",
    "Throttle",
    "bench",
    "chaos_main",
    "open_chaos_proxy",
]
