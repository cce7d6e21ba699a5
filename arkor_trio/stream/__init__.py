"""Layer 1: the resumable channel (knows no Arkor names).

An SSE endpoint followed as one channel keyed by ``Last-Event-ID``: reconnects with backoff,
dedupe by id, an idle watchdog, cursor stores for resuming across processes (design.md section 10).
"""

from ._cursor import CursorStore as CursorStore
from ._cursor import FileCursorStore as FileCursorStore
from ._cursor import MemoryCursorStore as MemoryCursorStore
from ._reconnect import ReconnectPolicy as ReconnectPolicy
from ._stats import StreamStats as StreamStats

__all__ = [
    "CursorStore",
    "FileCursorStore",
    "MemoryCursorStore",
    "ReconnectPolicy",
    "StreamStats",
]
