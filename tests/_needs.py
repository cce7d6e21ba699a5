"""A test that needs something the machine lacks: skip locally, fail in CI.

`.ci/run` installs what the tests need (Chromium, redis-server, iproute2) and exports ``CI``;
there, a missing piece is a failure naming it, never a silent skip.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def missing(what: str) -> NoReturn:
    """Skip the test (outside CI) or fail it (in CI), saying what is missing."""
    if in_ci():
        pytest.fail(f"{what} (CI installs it: see .ci/run)", pytrace=False)
    pytest.skip(what)
