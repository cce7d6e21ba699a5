"""``FileCursorStore`` against a hostile local user (issue 18 item 12): what is planted where the
store keeps its files (a FIFO, a symbolic link, a directory) or a directory it cannot write is a
``ConfigError`` naming the path, at once: never a hang, a raw ``OSError``, or a write through a
link."""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING

import pytest

from arkor_trio import ConfigError
from arkor_trio.stream import FileCursorStore

if TYPE_CHECKING:
    from pathlib import Path


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def _within(seconds: float, call: object) -> BaseException | object:
    """Run ``call()`` in a thread; its result or exception, or fail if it is still blocked."""
    assert callable(call)
    outcome: list[BaseException | object] = []

    def run() -> None:
        try:
            outcome.append(call())
        except BaseException as exc:  # handed back to the test
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():  # before the fix: blocked in open() until a writer comes
        with open(_fifo_of[0], "wb"):  # a writer unblocks it; then fail
            pass
        thread.join(seconds)
        pytest.fail(f"still blocked after {seconds} s")
    return outcome[0]


_fifo_of: list[Path] = []


def test_a_fifo_as_the_cursor_file_is_refused_not_waited_on(tmp_path: Path) -> None:
    # Before: the constructor opened the FIFO for reading and waited for a writer forever.
    path = _fifo(tmp_path / "cursors.json")
    _fifo_of[:] = [path]
    caught = _within(10, lambda: FileCursorStore(path))
    assert isinstance(caught, ConfigError)
    assert "FIFO" in str(caught)
    assert str(path) in str(caught)


def test_a_read_only_directory_is_a_config_error_naming_the_path(tmp_path: Path) -> None:
    if os.geteuid() == 0:  # root writes anywhere: take the permission away another way
        pytest.skip("root ignores directory permissions")
    directory = tmp_path / "ro"
    directory.mkdir()
    (directory / "cursors.json").write_text('{"cursors": {"a": "1"}, "finished": []}')
    directory.chmod(0o500)
    try:
        with pytest.raises(ConfigError) as caught:
            FileCursorStore(directory / "cursors.json")
        assert str(directory) in str(caught.value)
    finally:
        directory.chmod(0o700)


def test_a_lock_file_that_cannot_be_opened_is_a_config_error(tmp_path: Path) -> None:
    """The same path as a read-only directory, for root too: the lock file is a directory."""
    (tmp_path / "cursors.json.lock").mkdir()
    with pytest.raises(ConfigError, match="directory") as caught:
        FileCursorStore(tmp_path / "cursors.json")
    assert "cursors.json.lock" in str(caught.value)


def test_a_planted_tmp_symlink_is_not_written_through(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    store = FileCursorStore(tmp_path / "cursors.json")
    (tmp_path / "cursors.json.tmp").symlink_to(victim)
    with pytest.raises(ConfigError, match="symbolic link") as caught:
        store.commit_nowait("job", "1")
    assert "cursors.json.tmp" in str(caught.value)
    assert victim.read_text() == "precious"
    assert (tmp_path / "cursors.json.tmp").is_symlink()  # left for the user to look at


def test_a_tmp_that_is_a_directory_is_a_config_error(tmp_path: Path) -> None:
    store = FileCursorStore(tmp_path / "cursors.json")
    store.commit_nowait("job", "1")
    (tmp_path / "cursors.json.tmp").mkdir()
    with pytest.raises(ConfigError, match="directory") as caught:
        store.commit_nowait("job", "2")
    assert "cursors.json.tmp" in str(caught.value)
    assert store.peek("job").id == "1"


def test_a_planted_claim_symlink_is_not_truncated(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    store = FileCursorStore(tmp_path / "cursors.json")
    release = store.try_claim("other")  # creates the followers directory
    assert release is not None
    release()
    store._claim_path("job").symlink_to(victim)
    with pytest.raises(ConfigError, match="symbolic link"):
        store.try_claim("job")
    assert victim.read_text() == "precious"
    assert store.claim_holder("job") == ""  # not read through the link either


def test_a_fifo_as_the_claim_file_is_refused(tmp_path: Path) -> None:
    store = FileCursorStore(tmp_path / "cursors.json")
    release = store.try_claim("other")
    assert release is not None
    release()
    _fifo_of[:] = [_fifo(store._claim_path("job"))]
    assert _within(10, lambda: store.claim_holder("job")) == ""  # before: waited forever
    with pytest.raises(ConfigError, match="FIFO"):
        store.try_claim("job")
