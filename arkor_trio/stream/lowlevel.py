"""Building blocks of the channel layer, for layers and tools built on it (as ``trio.lowlevel``).

Applications use :func:`~arkor_trio.stream.open_sse` and a cursor store; what is here is what
the layers above it (the Arkor job stream, the job feed, the trainer) are made of. The same
names stay importable from ``arkor_trio.stream`` for code written before this module existed.

* :class:`SSEChannel`: the class under ``open_sse`` (a decoder hook, a ``settle`` hook, status
  hooks; see its docstring);
* :class:`Ledger`: the exactly-once rule of one follower of one key (commit rule, dedupe, the
  replay guard, forgetting read-ahead, the lease check);
* :class:`DuplicateFilter`, :class:`RecentIds`: the dedupe window and replay guard a ledger
  hands each stream;
* :class:`EventQueue`, :class:`Backoff`, :class:`StreamCounters`, :class:`GapLog`;
* the older store surface: :func:`commit_cursor`, :func:`commit_cursor_async`,
  :func:`is_finished`, :func:`hold_follower` (superseded by ``store.commit`` and
  ``store.lease``), :class:`SyncStoreAdapter`, :func:`as_cursor_store`;
* :func:`keep_lease`: the holder's side of a lease, for a store of your own.
"""

from ._channel import SSEChannel as SSEChannel
from ._cursor import commit_cursor as commit_cursor
from ._cursor import commit_cursor_async as commit_cursor_async
from ._cursor import hold_follower as hold_follower
from ._cursor import is_finished as is_finished
from ._dedupe import DuplicateFilter as DuplicateFilter
from ._dedupe import RecentIds as RecentIds
from ._ledger import Ledger as Ledger
from ._queue import EventQueue as EventQueue
from ._reconnect import Backoff as Backoff
from ._stats import GapLog as GapLog
from ._stats import StreamCounters as StreamCounters
from ._store import SyncStoreAdapter as SyncStoreAdapter
from ._store import as_cursor_store as as_cursor_store
from ._store import keep_lease as keep_lease

__all__ = [
    "Backoff",
    "DuplicateFilter",
    "EventQueue",
    "GapLog",
    "Ledger",
    "RecentIds",
    "SSEChannel",
    "StreamCounters",
    "SyncStoreAdapter",
    "as_cursor_store",
    "commit_cursor",
    "commit_cursor_async",
    "hold_follower",
    "is_finished",
    "keep_lease",
]
