"""Layer 1: the resumable channel (knows no Arkor names).

An SSE endpoint followed as one channel keyed by ``Last-Event-ID``: reconnects with backoff,
dedupe by id, an idle watchdog, cursor stores for resuming across processes (design.md section 10).
``open_sse`` is the entry point for applications; the other names are the building blocks the
layers above (the Arkor job stream, the job feed, the trainer) use, public so that no layer
reaches into another's private modules.
"""

from ._channel import SSEChannel as SSEChannel
from ._connect import Headers as Headers
from ._connect import certificate_problem as certificate_problem
from ._cursor import DEFAULT_LEASE_TTL as DEFAULT_LEASE_TTL
from ._cursor import FileCursorStore as FileCursorStore
from ._cursor import MemoryCursorStore as MemoryCursorStore
from ._cursor import SyncCursorStore as SyncCursorStore
from ._cursor import commit_cursor as commit_cursor
from ._cursor import commit_cursor_async as commit_cursor_async
from ._cursor import hold_follower as hold_follower
from ._cursor import is_finished as is_finished
from ._dedupe import DuplicateFilter as DuplicateFilter
from ._dedupe import RecentIds as RecentIds
from ._ledger import Ledger as Ledger
from ._open import SSEStream as SSEStream
from ._open import open_sse as open_sse
from ._queue import EventQueue as EventQueue
from ._reconnect import PERMANENT_STATUSES as PERMANENT_STATUSES
from ._reconnect import Backoff as Backoff
from ._reconnect import ReconnectPolicy as ReconnectPolicy
from ._reconnect import parse_retry_after as parse_retry_after
from ._redis_store import RedisCursorStore as RedisCursorStore
from ._redis_store import StoreUnavailable as StoreUnavailable
from ._state import ConnectionState as ConnectionState
from ._stats import GapLog as GapLog
from ._stats import StreamCounters as StreamCounters
from ._stats import StreamStats as StreamStats
from ._store import Cursor as Cursor
from ._store import CursorStore as CursorStore
from ._store import Delivery as Delivery
from ._store import Lease as Lease
from ._store import LeaseLost as LeaseLost
from ._store import SyncStoreAdapter as SyncStoreAdapter
from ._store import as_cursor_store as as_cursor_store
from ._store import keep_lease as keep_lease

__all__ = [
    "DEFAULT_LEASE_TTL",
    "PERMANENT_STATUSES",
    "Backoff",
    "ConnectionState",
    "Cursor",
    "CursorStore",
    "Delivery",
    "DuplicateFilter",
    "EventQueue",
    "FileCursorStore",
    "GapLog",
    "Headers",
    "Lease",
    "LeaseLost",
    "Ledger",
    "MemoryCursorStore",
    "RecentIds",
    "ReconnectPolicy",
    "RedisCursorStore",
    "SSEChannel",
    "SSEStream",
    "StoreUnavailable",
    "StreamCounters",
    "StreamStats",
    "SyncCursorStore",
    "SyncStoreAdapter",
    "as_cursor_store",
    "certificate_problem",
    "commit_cursor",
    "commit_cursor_async",
    "hold_follower",
    "is_finished",
    "keep_lease",
    "open_sse",
    "parse_retry_after",
]
