"""What the store raises when SQLite refuses a write, with the short reason a job fails with."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import sqlite3
    from pathlib import Path

__all__ = ["StoreClosed", "StoreError", "store_error"]


class StoreClosed(RuntimeError):
    """The store was closed (the backend shut down) while a thread still wrote to it."""


class StoreError(RuntimeError):
    """SQLite refused a write (disk full, database locked, I/O error); nothing was written.

    ``reason`` is the short cause (``"disk full"``, ``"database locked"``, ...), which also
    starts the message.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


#: SQLite result code names -> the reason a StoreError reports.
_REASONS = {
    "SQLITE_FULL": "disk full",
    "SQLITE_BUSY": "database locked",
    "SQLITE_LOCKED": "database locked",
    "SQLITE_IOERR": "disk I/O error",
    "SQLITE_READONLY": "database read-only",
    "SQLITE_CANTOPEN": "database cannot be opened",
    "SQLITE_CORRUPT": "database corrupt",
}
_MESSAGE_REASONS = (
    ("disk is full", "disk full"),
    ("locked", "database locked"),
    ("disk i/o", "disk I/O error"),
    ("readonly", "database read-only"),
)


def store_error(exc: sqlite3.Error, path: Path, busy_timeout: float) -> StoreError:
    name = str(getattr(exc, "sqlite_errorname", "") or "")
    # Extended codes (SQLITE_IOERR_WRITE, SQLITE_BUSY_SNAPSHOT) map as their primary code.
    reason = _REASONS.get("_".join(name.split("_")[:2]), "")
    if not reason:
        text = str(exc).lower()
        reason = next((r for word, r in _MESSAGE_REASONS if word in text), "database error")
    detail = str(exc)
    if reason == "database locked":
        detail = (
            f"another connection held the write lock of {path} for more than "
            f"{busy_timeout:g} s ({exc})"
        )
    elif reason == "disk full":
        detail = f"no space left for {path} ({exc})"
    return StoreError(reason, f"{reason}: {detail}")
