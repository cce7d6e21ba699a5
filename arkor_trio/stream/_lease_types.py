"""The cursor-store protocol's values (design.md section 14): ``Cursor``, ``Lease``, ``LeaseLost``.

(Placeholder until the one-cursor issue's protocol lands; the Redis store is written to it.)
"""

from __future__ import annotations

import attrs
import trio

from .._errors import StreamError

__all__ = ["Cursor", "Lease", "LeaseLost"]


class LeaseLost(StreamError):
    """The follower's lease on a key was taken over or lapsed: it must stop dispatching it."""


@attrs.frozen
class Cursor:
    """A key's committed cursor: the last handled event id, and whether the key is finished."""

    id: str | None = None
    finished: bool = False


@attrs.define(eq=False)
class Lease:
    """A follower's hold on one key, with its fencing token."""

    key: str
    token: int
    holder: str
    ttl: float
    renewed_at: float
    lost: trio.Event = attrs.field(factory=trio.Event)

    @property
    def expires_at(self) -> float:
        """When the lease lapses by this process's clock, unless renewed before."""
        return self.renewed_at + self.ttl

    def renewed(self, asked_at: float) -> None:
        self.renewed_at = max(self.renewed_at, asked_at)

    def lose(self) -> None:
        self.lost.set()

    def check(self) -> None:
        """Raise :class:`LeaseLost` unless the lease is held by this process's clock."""
        if self.lost.is_set() or trio.current_time() >= self.expires_at:
            self.lost.set()
            raise LeaseLost(f"{self.key}: lease (token {self.token}) lost")
