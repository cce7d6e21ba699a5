"""``arkor-trio sessions revoke``: sign every browser out of the local backend's live page."""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._errors import ConfigError

if TYPE_CHECKING:
    import argparse

__all__ = ["add_parser", "cmd_sessions"]


def add_parser(commands: Any, default_data_dir: Path) -> None:
    """Add the ``sessions`` subcommand to ``arkor-trio``'s subparsers."""
    parser = commands.add_parser(
        "sessions",
        help="the live page's browser sessions",
        description="The live page's browser sessions (docs/local-backend.md, Threat model).",
    )
    actions = parser.add_subparsers(dest="sessions_command", required=True, metavar="ACTION")
    revoke = actions.add_parser(
        "revoke",
        help="sign every browser out (a running backend refuses their cookies at once)",
        description="Sign every browser out of the live page: delete all sessions. A running "
        "backend refuses their cookies at the next request; open the login link again.",
    )
    revoke.add_argument(
        "--data-dir", type=Path, default=default_data_dir,
        help=f"the backend's data dir (default: {default_data_dir})",
    )  # fmt: skip
    parser.set_defaults(handler=cmd_sessions)


def cmd_sessions(args: argparse.Namespace) -> int:
    """Revoke every session; exit code 0."""
    from ..server import revoke_sessions  # needs the server extra

    try:
        ended = revoke_sessions(args.data_dir)
    except sqlite3.Error as exc:
        raise ConfigError(f"cannot revoke the sessions: {exc}", field="data_dir") from exc
    print(f"revoked {ended} browser session(s)", file=sys.stdout)
    return 0
