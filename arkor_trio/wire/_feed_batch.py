"""How large a batch the job feed asks the server for (``max_batch``): progress on slow links.

The server writes queued messages as batches (one WebSocket message holding a JSON array); a
batch is of no use until it is complete. Through a link that cuts every connection after a few
KiB, a first batch larger than what gets through is never complete, and every reconnect asks
for the same replay: a livelock where SSE, whose frames count one by one, progresses. So the
feed asks, per socket, for ``max_batch``: the most messages in the socket's first batch (the
server doubles the bound with every batch it sends, up to its own 512). The feed halves it after
a socket that broke (no close frame, or the idle timeout) without progress, down to 1 (a single
event per WebSocket message, as small as an SSE frame), and doubles it after a socket that made
progress, up to :data:`MAX_BATCH`.
"""

from __future__ import annotations

__all__ = ["MAX_BATCH", "BatchSize"]

#: The largest ``max_batch`` asked (the local backend's own bound).
MAX_BATCH = 512


class BatchSize:
    """The ``max_batch`` the next socket asks for."""

    def __init__(self, ceiling: int = MAX_BATCH) -> None:
        self.ceiling = ceiling
        self.value = ceiling

    def after_socket(self, *, progress: bool, broken: bool) -> None:
        """Adapt to how the last socket went (``broken``: it ended without a close frame)."""
        if progress:
            self.value = min(self.ceiling, self.value * 2)
        elif broken:
            self.value = max(1, self.value // 2)

    def url(self, url: str) -> str:
        """``url`` with the ``max_batch`` query parameter."""
        return f"{url}{'&' if '?' in url else '?'}max_batch={self.value}"
