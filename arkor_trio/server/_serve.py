"""Running the local backend: in-process (:func:`open_local_backend`) or as a server."""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack, asynccontextmanager, contextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import trio

from .._errors import ConfigError
from .._groups import collapse_groups
from ._app import AppState, build_app
from ._auth import load_or_create_token
from ._browser import BrowserAccess
from ._engine import Engine, default_engine
from ._events import EventHub
from ._listen import DEFAULT_BACKLOG, serve_contained
from ._metrics import BackendMetrics
from ._projects import ProjectStore
from ._runner import RESTARTED, JobRunner, recover_unfinished
from ._sdk import sdk_credentials
from ._sessions import SessionStore
from ._store import RECOVERY_ID_GAP, Store
from ._ws_guard import GuardedConfig
from ._ws_protocol import MAX_MESSAGE_BYTES, WsLimits

if TYPE_CHECKING:
    from ..wire._client import ArkorClient

__all__ = ["LocalBackend", "open_local_backend", "serve"]

log = logging.getLogger("arkor_trio.server")

#: How long hypercorn lets requests finish after shutdown starts. Our own streams end at once
#: (the hub's ``closing`` event); this only bounds anything else still in flight.
GRACEFUL_TIMEOUT = 0.2
LOCK_FILE = "lock"


def local_client(base_url: str, token: str, /, **kwargs: Any) -> ArkorClient:
    """An :class:`~arkor_trio.ArkorClient` for a local backend at ``base_url`` (its one scope).

    Args:
        base_url: The backend's URL.
        token: Its bearer token.
        **kwargs: Passed on to ``ArkorClient`` (e.g. ``http=``), overriding the defaults.
    """
    from ..wire._client import ArkorClient

    options: dict[str, Any] = {
        "base_url": base_url,
        "token": token,
        "org_slug": "local",
        "project_slug": "default",
    }
    options.update(kwargs)
    return ArkorClient(**options)


@attrs.define(eq=False)
class LocalBackend:
    """A running local backend (from :func:`open_local_backend`).

    Attributes:
        base_url: ``http://<host>:<port>`` it listens on.
        token: The bearer token clients must send.
        data_dir: Where the database, the token and the checkpoints live.
        login_url: The live page's one-time login link (it sets the browser's session).
    """

    base_url: str
    token: str = attrs.field(repr=False)
    data_dir: Path
    login_url: str = attrs.field(repr=False)
    _stop: Callable[[], None] = attrs.field(alias="stop", repr=False)
    _stopped: trio.Event = attrs.field(alias="stopped", repr=False)
    _hub: EventHub = attrs.field(alias="hub", repr=False)

    def client(self, **kwargs: Any) -> ArkorClient:
        """An :class:`~arkor_trio.ArkorClient` for this backend (scope ``local``/``default``).

        Args:
            **kwargs: Passed on to ``ArkorClient`` (e.g. ``http=``), overriding the defaults.
        """
        return local_client(self.base_url, self.token, **kwargs)

    async def aclose(self) -> None:
        """Stop serving: end open streams, stop the server and the job threads. Idempotent.

        Returns once the server has stopped and the job threads were joined (bounded); the
        database is closed when the ``async with`` block exits.
        """
        self._stop()
        await self._stopped.wait()


@contextmanager
def _exclusive(root: Path) -> Iterator[None]:
    """Hold ``<root>/lock`` so that two backends never share a data dir.

    (A second one would mark the first one's running jobs failed as "backend restarted".)
    Not enforced on Windows (no ``fcntl``).
    """
    if sys.platform == "win32":
        yield
        return
    import fcntl

    fd = os.open(root / LOCK_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "a") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(
                f"the data dir {root} is in use by another local backend; stop it or pick "
                "another --data-dir",
                field="data_dir",
            ) from None
        yield


def _prepare_dir(path: Path) -> Path:
    """Create the data dir if missing and make it private (0700): it holds the token."""
    root = path.expanduser().resolve()
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        root.chmod(0o700)
    except OSError as exc:  # not ours: still usable, but say why it is not private
        log.warning("cannot make the data dir %s private (0700): %s", root, exc)
    return root


def _remove_stale_temp_files(root: Path) -> None:
    """Delete checkpoint temp files a killed process left (we hold the dir's lock: none is live)."""
    for tmp in (root / "models").glob("*/.*.npz.*.tmp"):
        try:
            tmp.unlink()
        except OSError as exc:
            log.warning("cannot remove the stale temporary file %s: %s", tmp, exc)


def _bind(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


@asynccontextmanager
async def open_local_backend(
    data_dir: Path | str | None = None,
    port: int = 0,
    *,
    host: str = "127.0.0.1",
    ping_interval: float = 15.0,
    engine: Engine | None = None,
    max_concurrent_jobs: int = 1,
    join_timeout: float = 10.0,
    busy_timeout: float = 5.0,
    allow_anonymous: bool = False,
    retain_events: int | None = None,
    ws_limits: WsLimits | None = None,
    backlog: int = DEFAULT_BACKLOG,
) -> AsyncIterator[LocalBackend]:
    """Run the local backend in this trio run for the duration of the block.

    Args:
        data_dir: Where to keep the database, token and checkpoints (created if missing);
            None uses a temporary directory removed at exit.
        port: TCP port (0 picks a free one; read ``backend.base_url``).
        host: Interface to bind (loopback by default).
        ping_interval: Seconds of idleness after which an event stream sends a ping.
        engine: The training/inference engine (tests pass a fake); None is the NumPy one.
        max_concurrent_jobs: How many jobs train at once; later ones wait ``queued``.
        join_timeout: How long exit waits for training threads to stop.
        busy_timeout: How long a database write waits for another process holding SQLite's
            write lock before it fails with "database locked" (a 503, or the job failing).
        allow_anonymous: Answer ``POST /v1/auth/anonymous`` (loopback clients without an
            ``Origin`` header get the token; see docs/local-backend.md).
        retain_events: Keep only the last N events of each job (None: all). A feed subscriber
            whose cursor is older gets ``reset``, then the kept events.
        ws_limits: Per-socket limits of ``GET /v1/events/ws`` (None: the defaults).
        backlog: The listen backlog: connections the kernel queues until the server accepts
            them, e.g. a herd of streams reconnecting after a restart (capped by
            ``net.core.somaxconn``; a SYN that finds the queue full is retried by the client
            only after 1 s).

    Yields:
        The running :class:`LocalBackend`.

    Raises:
        ConfigError: Another backend (in any process) is using ``data_dir``.
        OSError: The data dir cannot be created, or the port cannot be bound.

    On exit, open streams end, the server stops within ``GRACEFUL_TIMEOUT`` and the training
    threads are told to stop and joined (bounded by ``join_timeout``) before the database is
    closed. Jobs interrupted that way are marked failed ("backend restarted") on the next start.
    """
    engine = default_engine() if engine is None else engine
    with ExitStack() as resources:
        if data_dir is None:
            data_dir = resources.enter_context(
                tempfile.TemporaryDirectory(prefix="arkor-local-", ignore_cleanup_errors=True)
            )
        root = _prepare_dir(Path(data_dir))
        resources.enter_context(_exclusive(root))
        _remove_stale_temp_files(root)
        token = load_or_create_token(root)
        hub = EventHub()
        metrics = BackendMetrics()
        store = Store.in_dir(
            root,
            on_append=hub.notify,
            busy_timeout=busy_timeout,
            retain_events=retain_events,
            observer=metrics,
        )
        metrics.watch_jobs(store.job_counts)
        projects = ProjectStore(store.path)
        sessions: SessionStore | None = None
        try:
            sessions = SessionStore(store.path, token)
            recovered, refused = recover_unfinished(store)
            if recovered:
                log.warning("marked %d unfinished job(s) failed: %s", len(recovered), recovered)
            with collapse_groups():
                async with trio.open_nursery() as nursery:
                    backend = await nursery.start(
                        _serve_all, store, projects, hub, engine, root,
                        BrowserAccess(token, allow_anonymous=allow_anonymous, sessions=sessions),
                        host, port,
                        ping_interval, max_concurrent_jobs, join_timeout, refused,
                        ws_limits or WsLimits(), metrics, backlog,
                    )  # fmt: skip
                    try:
                        yield backend
                    finally:
                        await backend.aclose()
        finally:
            if sessions is not None:
                sessions.close()
            projects.close()
            store.close()


async def _serve_all(
    store: Store,
    projects: ProjectStore,
    hub: EventHub,
    engine: Engine,
    root: Path,
    access: BrowserAccess,
    host: str,
    port: int,
    ping_interval: float,
    max_concurrent: int,
    join_timeout: float,
    unrecorded: list[str],
    ws_limits: WsLimits,
    metrics: BackendMetrics,
    backlog: int,
    *,
    task_status: trio.TaskStatus[LocalBackend],
) -> None:
    """Serve (hypercorn's protocols, our connection loop) and run the job runner until stopped.

    Reports the backend once it listens. No single connection can end the server (``_listen``).
    """
    runner = JobRunner(
        store, engine, root, max_concurrent=max_concurrent, join_timeout=join_timeout
    )
    app = build_app(
        AppState(
            store=store,
            hub=hub,
            runner=runner,
            engine=engine,
            data_dir=root,
            ping_interval=ping_interval,
            projects=projects,
            ws_limits=ws_limits,
            metrics=metrics,
        ),
        access.token,
        access,
    )
    config = GuardedConfig()
    config.bind = [_bind(host, port)]
    config.backlog = backlog
    config.graceful_timeout = GRACEFUL_TIMEOUT
    config.websocket_max_message_size = MAX_MESSAGE_BYTES
    config.loglevel = "WARNING"
    config.accesslog = None
    shutdown = trio.Event()
    stopped = trio.Event()

    def stop() -> None:
        hub.closing.set()
        shutdown.set()
        runner.stop()

    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(runner.run)
            for job_id in unrecorded:  # recovery could not write: the runner retries
                runner.record_later(job_id, RESTARTED, skip=RECOVERY_ID_GAP)
            binds = await nursery.start(
                partial(serve_contained, app, config, shutdown_trigger=shutdown.wait)
            )
            base_url = str(binds[0])
            backend = LocalBackend(
                base_url=base_url, token=access.token, data_dir=root,
                login_url=base_url + access.login_path, stop=stop, stopped=stopped, hub=hub,
            )  # fmt: skip
            task_status.started(backend)
    finally:
        stop()
        stopped.set()


async def serve(
    host: str = "127.0.0.1",
    port: int = 8787,
    data_dir: Path | str | None = None,
    ping_interval: float = 15.0,
    *,
    engine: Engine | None = None,
    allow_anonymous: bool = False,
    retain_events: int | None = None,
    max_concurrent_jobs: int = 1,
    backlog: int = DEFAULT_BACKLOG,
    ws_limits: WsLimits | None = None,
    task_status: trio.TaskStatus[LocalBackend] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the local backend until cancelled, printing how a client connects to it.

    Args:
        host: Interface to bind.
        port: TCP port (0 picks a free one).
        data_dir: Where state lives; None uses a temporary directory (lost at exit).
        ping_interval: Seconds of idleness after which an event stream sends a ping.
        engine: The engine (None: the NumPy one).
        allow_anonymous: Answer ``POST /v1/auth/anonymous`` for loopback clients.
        retain_events: Keep only the last N events of each job (None: all).
        max_concurrent_jobs: How many jobs train at once; later ones wait ``queued`` (FIFO).
        backlog: The listen backlog (see :func:`open_local_backend`).
        ws_limits: Limits of ``GET /v1/events/ws`` (None: the defaults), e.g. how many jobs
            one feed and all feeds may follow (``serve --feed-max-subscriptions N``).
        task_status: Receives the :class:`LocalBackend` once it listens.
    """
    async with open_local_backend(
        data_dir, port, host=host, ping_interval=ping_interval, engine=engine,
        allow_anonymous=allow_anonymous, retain_events=retain_events,
        max_concurrent_jobs=max_concurrent_jobs, backlog=backlog, ws_limits=ws_limits,
    ) as backend:  # fmt: skip
        credentials = json.dumps(sdk_credentials(backend.base_url, backend.token), indent=2)
        anonymous = "on (--allow-anonymous)" if allow_anonymous else "off"
        print(
            f"arkor-trio local backend listening on {backend.base_url}\n"
            f"data directory: {backend.data_dir}\n"
            f"Live page (one-time login link): {backend.login_url}\n"
            "Point a client at it with:\n"
            f"  export ARKOR_CLOUD_API_URL={backend.base_url}\n"
            f"  export ARKOR_TOKEN={backend.token}\n"
            "TypeScript SDK: ~/.arkor/credentials.json (`arkor-trio credentials --local` writes "
            f"it; anonymous sign-in is {anonymous}):\n{credentials}",
            file=sys.stdout,
            flush=True,
        )
        task_status.started(backend)
        await trio.sleep_forever()
