"""Layer 1: the resumable channel (knows no Arkor names).

An SSE endpoint followed as one channel keyed by ``Last-Event-ID``: reconnects with backoff,
dedupe by id, an idle watchdog, cursor stores for resuming across processes (design.md section 10).
"""

from ._channel import SSEChannel as SSEChannel
from ._connect import Headers as Headers
from ._cursor import CursorStore as CursorStore
from ._cursor import FileCursorStore as FileCursorStore
from ._cursor import MemoryCursorStore as MemoryCursorStore
from ._dedupe import DuplicateFilter as DuplicateFilter
from ._open import SSEStream as SSEStream
from ._open import open_sse as open_sse
from ._reconnect import ReconnectPolicy as ReconnectPolicy
from ._stats import StreamCounters as StreamCounters
from ._stats import StreamStats as StreamStats

__all__ = [
    "CursorStore",
    "DuplicateFilter",
    "FileCursorStore",
    "Headers",
    "MemoryCursorStore",
    "ReconnectPolicy",
    "SSEChannel",
    "SSEStream",
    "StreamCounters",
    "StreamStats",
    "open_sse",
]
