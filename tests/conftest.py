from __future__ import annotations

import os
import tempfile
from typing import TYPE_CHECKING, Any

import pytest
import trio
from hypothesis import settings
from hypothesis.configuration import set_hypothesis_home_dir

from arkor_trio import ArkorClient, Callbacks
from tests.sse_script_server import ScriptServer

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

# Hypothesis in `make test` and CI: the same examples on every run (derandomize) and no example
# database, so a checkout never collects state that changes what the next run does; its caches go
# to a temporary directory removed at exit, not to `.hypothesis/` in the checkout. The "thorough"
# profile is the exploratory run outside CI (`make properties`): fresh random examples, a far
# larger budget (ARKOR_HYPOTHESIS_EXAMPLES, default 50,000 per test), still no database.
_HYPOTHESIS_HOME = tempfile.TemporaryDirectory(prefix="arkor-hypothesis-")
set_hypothesis_home_dir(_HYPOTHESIS_HOME.name)
settings.register_profile("arkor", max_examples=200, deadline=None, database=None, derandomize=True)
settings.register_profile(
    "thorough",
    max_examples=int(os.environ.get("ARKOR_HYPOTHESIS_EXAMPLES", "50000")),
    deadline=None,
    database=None,
    derandomize=False,
)
settings.load_profile(os.environ.get("ARKOR_HYPOTHESIS_PROFILE", "arkor"))


@pytest.fixture
def server() -> ScriptServer:
    return ScriptServer()


@pytest.fixture
async def running_server(server: ScriptServer) -> AsyncIterator[ScriptServer]:
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        yield server
        nursery.cancel_scope.cancel()


@pytest.fixture
async def client(running_server: ScriptServer) -> AsyncIterator[ArkorClient]:
    async with ArkorClient(
        base_url=running_server.url, token="test-token", org_slug="o", project_slug="p"
    ) as c:
        yield c


class Recorder:
    """Records every callback as (name, detail) in call order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def callbacks(self, **overrides: Any) -> Callbacks:
        def rec(name: str, detail: Any) -> None:
            self.calls.append((name, detail))

        base: dict[str, Any] = {
            "on_started": lambda ctx: rec("started", ctx.job.status),
            "on_log": lambda ctx: rec("log", ctx.step),
            "on_checkpoint": lambda ctx: rec("checkpoint", ctx.step),
            "on_completed": lambda ctx: rec("completed", len(ctx.artifacts)),
            "on_failed": lambda ctx: rec("failed", ctx.error),
            "on_cancelled": lambda ctx: rec("cancelled", ctx.job.status),
        }
        base.update(overrides)
        return Callbacks(**base)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()
