"""``arkor-trio credentials --local``: point the Arkor TypeScript SDK at a local backend.

Writes ``~/.arkor/credentials.json`` (mode 0600, atomically) with the local backend's token, as
``arkor-trio serve`` prints it. It never replaces a file that points elsewhere (a cloud login)
or that it cannot read, unless ``--force``.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._errors import ConfigError

if TYPE_CHECKING:
    import argparse

__all__ = ["add_parser", "cmd_credentials", "write_local_credentials"]

_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def add_parser(commands: Any, default_data_dir: Path) -> None:
    """Add the ``credentials`` subcommand to ``arkor-trio``'s subparsers."""
    parser = commands.add_parser(
        "credentials", help="write ~/.arkor/credentials.json for the TypeScript SDK"
    )
    parser.add_argument("--local", action="store_true", required=True,
                        help="point it at the local backend (the only mode)")  # fmt: skip
    parser.add_argument("--host", default="127.0.0.1", help="the backend's host (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8787, help="the backend's port (8787)")
    parser.add_argument(
        "--data-dir", type=Path, default=default_data_dir,
        help=f"the backend's data dir, for its token ({default_data_dir})",
    )  # fmt: skip
    parser.add_argument("--force", action="store_true", help="replace a cloud credentials file")
    parser.set_defaults(handler=cmd_credentials)


def _points_at_loopback(existing: Any) -> bool:
    if not isinstance(existing, dict):
        return False
    url = existing.get("arkorCloudApiUrl")
    if not isinstance(url, str):
        return False
    return urllib.parse.urlsplit(url).hostname in _LOOPBACK


def write_local_credentials(
    path: Path, base_url: str, token: str, *, force: bool = False
) -> dict[str, str]:
    """Write the SDK credentials for ``base_url`` to ``path``; the content written.

    Raises:
        ConfigError: ``path`` holds credentials for another server (or unreadable ones)
            and ``force`` is false.
    """
    from ..server import sdk_credentials  # needs the server extra

    if path.exists() and not force:
        try:
            existing = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            existing = None
        if not _points_at_loopback(existing):
            raise ConfigError(
                f"{path} holds credentials for another server (a cloud login?); "
                "pass --force to replace them",
                field="force",
            )
    content = sdk_credentials(base_url, token)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(json.dumps(content, indent=2) + "\n")
    os.replace(tmp, path)
    return content


def cmd_credentials(args: argparse.Namespace) -> int:
    """Write the TypeScript SDK's credentials for the local backend; exit code 0."""
    from ..server import load_or_create_token

    data_dir = Path(args.data_dir).expanduser()
    data_dir.mkdir(parents=True, exist_ok=True)
    token = load_or_create_token(data_dir)
    host = f"[{args.host}]" if ":" in args.host else args.host
    path = Path.home() / ".arkor" / "credentials.json"
    write_local_credentials(path, f"http://{host}:{args.port}", token, force=args.force)
    print(f"wrote {path} for the local backend at http://{host}:{args.port}", file=sys.stdout)
    return 0
