"""Browser tests of the live page: Playwright for Python driving Debian's Chromium.

Playwright's own browser download does not work here; the tests launch the system Chromium
(``apt-get install -y chromium``) and skip, saying so, where it is missing (fail in CI:
tests/_needs.py). The backend runs in
a thread with its own trio loop (Playwright's sync API owns the test's thread), or as an
``arkor-trio serve`` subprocess where a test kills it.
"""

from __future__ import annotations

import shutil
import socket
import threading
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import trio

from arkor_trio._version import USER_AGENT
from arkor_trio.server import LocalBackend, open_local_backend
from tests._needs import missing

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from playwright.sync_api import Browser, BrowserContext, Page

    from arkor_trio.server import Engine

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - the dev extra installs it
    sync_playwright = None  # type: ignore[assignment]

MISSING = (
    "browser tests need Chromium and Playwright: `apt-get install -y chromium` (Debian) "
    "and `pip install -e '.[dev]'`"
)

SCOPE = {"orgSlug": "local", "projectSlug": "default"}
#: How long a browser-side wait may take before the test fails (ms); generous for a busy box.
WAIT_MS = 20_000
#: The stub the page sees as window.Notification (headless Chromium ignores permission grants).
NOTIFICATION_STUB = """
window.__notifications = [];
window.Notification = class {
  static permission = "granted";
  static requestPermission() { return Promise.resolve("granted"); }
  constructor(title, options) { window.__notifications.push({ title, ...(options || {}) }); }
};
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class BackendThread:
    """A local backend on its own trio loop in a thread (start/stop; restartable)."""

    def __init__(self, data_dir: Path, engine: Engine | None, port: int) -> None:
        self.data_dir, self.engine, self.port = data_dir, engine, port
        self.backend: LocalBackend | None = None
        self._thread: threading.Thread | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event | None = None

    def start(self) -> LocalBackend:
        ready = threading.Event()
        failure: list[BaseException] = []

        async def main() -> None:
            self._token = trio.lowlevel.current_trio_token()
            self._stop = trio.Event()
            async with open_local_backend(self.data_dir, self.port, engine=self.engine) as b:
                self.backend = b
                ready.set()
                await self._stop.wait()

        def run() -> None:
            try:
                trio.run(main)
            except BaseException as exc:  # reported to the starting test
                failure.append(exc)
                ready.set()

        self._thread = threading.Thread(target=run, name="backend", daemon=True)
        self._thread.start()
        ready.wait(30)
        if failure:
            raise failure[0]
        assert self.backend is not None
        return self.backend

    def stop(self) -> None:
        if self._thread is None:
            return
        assert self._token is not None
        assert self._stop is not None
        self._token.run_sync_soon(self._stop.set)
        self._thread.join(30)
        self._thread = None

    def http(self) -> httpx.Client:
        assert self.backend is not None
        headers = {"Authorization": f"Bearer {self.backend.token}", "X-Arkor-Client": USER_AGENT}
        return httpx.Client(base_url=self.backend.base_url, headers=headers, verify=False)


# Package scope, not session: Playwright's sync API keeps an asyncio loop running in the main
# thread while it is started, which would make every later asyncio test (tests/test_aio.py) see
# "a running event loop". It is stopped when the browser tests are done.
@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    if CHROMIUM is None or sync_playwright is None:
        missing(MISSING)
    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                # A DNS-rebinding attacker's name that resolves to our loopback server.
                "--host-resolver-rules=MAP rebind.test 127.0.0.1",
            ],
        )
        yield b
        b.close()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    ctx = browser.new_context(viewport={"width": 1280, "height": 800})
    ctx.add_init_script(NOTIFICATION_STUB)
    ctx.set_default_timeout(WAIT_MS)
    yield ctx
    ctx.close()


@pytest.fixture
def fake_backend(tmp_path: Path) -> Iterator[tuple[BackendThread, Any]]:
    from tests.server.conftest import FakeEngine

    fake = FakeEngine()
    thread = BackendThread(tmp_path / "data", fake.engine(), free_port())
    thread.start()
    yield thread, fake
    for gate in fake.gates.values():
        gate.set()
    thread.stop()


def signed_in_page(context: BrowserContext, backend: LocalBackend) -> Page:
    """A page of ``context`` signed in through the backend's one-time login link."""
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.errors = errors  # type: ignore[attr-defined]
    page.goto(backend.login_url)
    assert page.url == backend.base_url + "/"
    return page


def wait_job_status(page: Page, status: str) -> None:
    """Wait for the job view to show ``status``; for a terminal one, once its stream ended.

    (The job's status comes first from ``GET /v1/jobs/:id``; the points, checkpoints and
    artifacts from the stream, which the page marks ``data-followed="done"`` at its end.)
    """
    page.wait_for_function(
        """(s) => {
            const job = document.querySelector('#job');
            const terminal = ['completed', 'failed', 'cancelled'].includes(s);
            return job?.dataset.status === s && (!terminal || job.dataset.followed === 'done');
        }""",
        arg=status,
    )


def wait_train_points(page: Page, count: int, *, at_least: bool = False) -> None:
    """Wait until the chart draws ``count`` train points (or more, with ``at_least``)."""
    page.wait_for_function(
        """([n, atLeast]) => {
            const raw = document.querySelector('#chart svg')?.dataset.trainSteps || '';
            const got = raw ? raw.split(' ').length : 0;
            return atLeast ? got >= n : got === n;
        }""",
        arg=[count, at_least],
    )


def wait_conn(page: Page, state: str) -> None:
    page.wait_for_function("(s) => document.querySelector('#conn').dataset.state === s", arg=state)


def wait_row_status(page: Page, job_id: str, status: str) -> None:
    page.wait_for_function(
        """([id, s]) => document.querySelector(`#job-list tr[data-job-id="${id}"]`)
                              ?.dataset.status === s""",
        arg=[job_id, status],
    )


def chart_steps(page: Page, which: str = "train") -> list[int]:
    raw = page.get_attribute("#chart svg", f"data-{which}-steps") or ""
    return [int(s) for s in raw.split()]


def log_steps(http: httpx.Client, job_id: str, key: str = "loss") -> list[int]:
    """Steps of the job's training.log events carrying ``key``, from the backend's log."""
    url = f"/v1/jobs/{job_id}/events/stream"
    with http.stream("GET", url, params=SCOPE) as response:
        text = response.read().decode()
    import json

    steps = []
    for block in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.split("\n") if ": " in line)
        if fields.get("event") == "training.log":
            data = json.loads(fields["data"])
            if data.get(key) is not None:
                steps.append(data["step"])
    return steps
