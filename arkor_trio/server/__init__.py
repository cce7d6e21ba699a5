"""The local reference backend: the cloud's routes over a SQLite store and a NumPy trainer.

``async with open_local_backend() as backend:`` runs it inside a trio program (tests, demos);
:func:`serve` runs it as a server (``arkor-trio serve``). See ``docs/`` and design section 7.
"""

from ._auth import load_or_create_token as load_or_create_token
from ._engine import Engine as Engine
from ._listen import DEFAULT_BACKLOG as DEFAULT_BACKLOG
from ._sdk import sdk_credentials as sdk_credentials
from ._serve import LocalBackend as LocalBackend
from ._serve import open_local_backend as open_local_backend
from ._serve import serve as serve
from ._sessions import revoke_sessions as revoke_sessions
from ._ws_protocol import WsLimits as WsLimits

__all__ = [
    "DEFAULT_BACKLOG",
    "Engine",
    "LocalBackend",
    "WsLimits",
    "load_or_create_token",
    "open_local_backend",
    "revoke_sessions",
    "sdk_credentials",
    "serve",
]
