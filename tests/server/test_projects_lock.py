"""Reads never wait for a project write's lock (issue 18, item 5).

While another connection holds SQLite's write lock, ``ProjectStore.create`` waits in a worker
thread (up to its busy timeout, 5 s); the lookups every scoped request makes on the event loop
(``id_of``, ``list``, ``job_project``) must answer at once meanwhile.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from typing import TYPE_CHECKING

from arkor_trio.server._projects import ProjectStore
from arkor_trio.server._store import Store

if TYPE_CHECKING:
    from pathlib import Path

_LOCK_TYPE = type(threading.Lock())


def _a_lock_is_held(projects: ProjectStore) -> bool:
    return any(isinstance(v, _LOCK_TYPE) and v.locked() for v in vars(projects).values())


def test_lookups_answer_while_a_create_waits_for_the_database(tmp_path: Path) -> None:
    store = Store.in_dir(tmp_path)
    projects = ProjectStore(store.path)
    blocker = sqlite3.connect(store.path, isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")  # another writer holds SQLite's write lock
        outcome: list[object] = []
        writer = threading.Thread(
            target=lambda: outcome.append(_create_or_error(projects)), daemon=True
        )
        writer.start()
        deadline = time.monotonic() + 4
        while not _a_lock_is_held(projects):  # the create is inside its write
            assert time.monotonic() < deadline, "the create never started"
            time.sleep(0.005)
        answers: list[object] = []
        reader = threading.Thread(
            target=lambda: answers.extend(
                [projects.id_of("default"), len(projects.list()), projects.job_project("j")]
            ),
            daemon=True,
        )
        start = time.monotonic()
        reader.start()
        reader.join(timeout=2)
        assert not reader.is_alive(), "a lookup waited for the writer's lock"
        assert answers == ["proj_default", 1, None]
        assert time.monotonic() - start < 2
        blocker.execute("ROLLBACK")
        writer.join(timeout=10)
        assert len(outcome) == 1
        assert outcome[0] is not None
    finally:
        blocker.close()
        projects.close()
        store.close()


def _create_or_error(projects: ProjectStore) -> object:
    try:
        return projects.create("busy", "busy")
    except sqlite3.OperationalError as exc:
        return exc
