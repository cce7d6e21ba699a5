"""Cursor stores shared by several objects, crashes mid-write, custom stores (issue 14, 1-5).

In one process; tests/test_cursor_processes.py runs the same guarantees across real processes.
"""

from __future__ import annotations

import json
import os
import stat

import pytest
import trio
import trio.testing

from arkor_trio import ConfigError, FileCursorStore, MemoryCursorStore
from arkor_trio.stream._cursor import (
    commit_cursor,
    commit_cursor_async,
    hold_follower,
    is_finished,
)

# --- 1. every write is a read-modify-write under the lock ---------------------------------------


def test_two_objects_on_one_file_keep_each_others_cursors(tmp_path):
    path = tmp_path / "c.json"
    a, b = FileCursorStore(path), FileCursorStore(path)
    a.save("job-a", "1")
    b.save("job-b", "7")
    a.save("job-a", "2")
    assert json.loads(path.read_text())["cursors"] == {"job-a": "2", "job-b": "7"}
    assert (b.peek("job-a").id, a.peek("job-b").id) == ("2", "7")  # each sees the other's writes
    b.commit_nowait("job-b", "8", finished=True)
    assert is_finished(a, "job-b")
    assert not is_finished(a, "job-a")


def test_commits_from_many_threads_lose_nothing(tmp_path):
    path = tmp_path / "c.json"
    stores = [FileCursorStore(path) for _ in range(4)]

    async def main():
        async with trio.open_nursery() as nursery:
            for n, store in enumerate(stores):
                for step in range(25):
                    key, cursor = f"job-{n}-{step % 5}", str(step)
                    nursery.start_soon(trio.to_thread.run_sync, store.save, key, cursor)

    trio.run(main)
    cursors = FileCursorStore(path).peek
    assert all(cursors(f"job-{n}-{k}").id is not None for n in range(4) for k in range(5))


# --- 3/5. one atomic commit, and the default for stores with only load/save -------------------


def test_commit_moves_cursor_and_finished_mark_in_one_write(tmp_path, monkeypatch):
    path = tmp_path / "c.json"
    store = FileCursorStore(path)
    store.save("j", "4")
    replaced = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda s, d: (replaced.append(d), real_replace(s, d)))
    commit_cursor(store, "j", "5", finished=True)
    assert replaced == [path.with_name("c.json.prev"), path]  # one new file, renamed in once
    assert json.loads(path.read_text()) == {"version": 1, "cursors": {"j": "5"}, "finished": ["j"]}
    commit_cursor(store, "j", None, finished=True)  # None keeps the cursor
    assert store.peek("j").id == "5"


def test_a_store_with_only_load_and_save_gets_the_two_step_default():
    calls = []

    class Minimal:
        def load(self, job_id):
            return None

        def save(self, job_id, cursor):
            calls.append(("save", job_id, cursor))

    class WithMark(Minimal):
        def mark_finished(self, job_id):
            calls.append(("mark", job_id))

    commit_cursor(Minimal(), "j", "3", finished=True)
    commit_cursor(WithMark(), "j", "4", finished=True)
    commit_cursor(WithMark(), "j", None, finished=False)
    assert calls == [("save", "j", "3"), ("save", "j", "4"), ("mark", "j")]
    assert not is_finished(Minimal(), "j")


async def test_a_blocking_store_commits_in_a_thread_even_while_cancelled(tmp_path):
    store = FileCursorStore(tmp_path / "c.json", fsync=True)
    assert store.blocking
    with trio.CancelScope() as scope:
        scope.cancel()
        await commit_cursor_async(store, "j", "9", finished=True)  # shielded: it happens
    assert (store.peek("j").id, store.finished("j")) == ("9", True)
    assert not FileCursorStore(tmp_path / "d.json").blocking


# --- 4. durability and recovery -----------------------------------------------------------------


def test_fsync_mode_syncs_the_file_and_then_its_directory(tmp_path, monkeypatch):
    store = FileCursorStore(tmp_path / "c.json", fsync=True)
    synced = []
    real_fsync = os.fsync

    def record(fd):
        synced.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", record)
    store.save("j", "1")
    assert synced == ["file", "dir"]
    synced.clear()
    FileCursorStore(tmp_path / "d.json").save("j", "1")
    assert synced == []  # the default mode never syncs


@pytest.mark.parametrize("damage", ["empty", "truncated", "spaces"])
def test_a_damaged_file_recovers_from_the_kept_previous_version(tmp_path, damage, caplog):
    path = tmp_path / "c.json"
    store = FileCursorStore(path)
    store.save("a", "1")
    store.save("b", "2")
    store.save("a", "3")  # .prev now holds {"a": "1", "b": "2"}
    text = path.read_text()
    path.write_text({"empty": "", "truncated": text[: len(text) // 2], "spaces": "  \n"}[damage])
    again = FileCursorStore(path)
    assert (again.peek("a").id, again.peek("b").id) == ("1", "2")  # the last commit lost
    assert "previous version" in caplog.text
    again.save("c", "5")  # the next commit writes a healthy file, keeping the good .prev
    assert json.loads(path.read_text())["cursors"] == {"a": "1", "b": "2", "c": "5"}
    assert json.loads(path.with_name("c.json.prev").read_text())["cursors"] == {"a": "1", "b": "2"}


def test_a_crash_between_the_two_renames_keeps_the_commit(tmp_path, monkeypatch):
    path = tmp_path / "c.json"
    store = FileCursorStore(path)
    store.save("a", "1")
    store.save("b", "2")
    real_replace = os.replace

    def die_on_the_second(src, dst):
        if str(src).endswith(".tmp"):
            raise KeyboardInterrupt  # the process goes away after moving the file to .prev
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", die_on_the_second)
    with pytest.raises(KeyboardInterrupt):
        store.save("a", "3")
    monkeypatch.undo()
    assert not path.exists()
    again = FileCursorStore(path)
    assert (again.peek("a").id, again.peek("b").id) == ("3", "2")  # from the complete .tmp
    again.save("c", "1")
    assert json.loads(path.read_text())["cursors"] == {"a": "3", "b": "2", "c": "1"}
    assert json.loads(path.with_name("c.json.prev").read_text())["cursors"] == {"a": "1", "b": "2"}


def test_an_empty_file_without_a_previous_version_is_an_empty_store(tmp_path):
    path = tmp_path / "c.json"
    path.write_text("")  # the very first write was lost to a power cut
    store = FileCursorStore(path)
    assert store.peek("j").id is None
    store.save("j", "1")
    assert FileCursorStore(path).peek("j").id == "1"


def test_both_copies_damaged_is_a_clear_error(tmp_path):
    path = tmp_path / "c.json"
    path.write_text('{"cursors": {"j": "1"')
    path.with_name("c.json.prev").write_text("")
    with pytest.raises(ConfigError) as info:
        FileCursorStore(path)
    message = str(info.value)
    assert "c.json is not valid JSON" in message
    assert "c.json.prev is empty" in message
    assert "Delete both files" in message


def test_deleting_the_file_starts_over_and_drops_a_stale_previous_version(tmp_path):
    path = tmp_path / "c.json"
    store = FileCursorStore(path)
    store.save("a", "1")
    store.save("a", "2")
    path.unlink()
    assert store.peek("a").id is None
    store.save("b", "1")
    assert not path.with_name("c.json.prev").exists()
    path.write_text("")  # and a later damage finds no stale state to resurrect
    assert FileCursorStore(path).peek("a").id is None


# --- 2. one follower per key per store -----------------------------------------------------------


@pytest.mark.parametrize("kind", ["memory", "file"])
def test_try_claim_is_exclusive_until_released(tmp_path, kind):
    def make():
        return FileCursorStore(tmp_path / "c.json") if kind == "file" else shared

    shared = MemoryCursorStore()
    a, b = make(), make()
    release = a.try_claim("job-1")
    assert release is not None
    assert b.try_claim("job-1") is None
    other = b.try_claim("job-2")  # another key is independent
    assert other is not None
    release()
    again = b.try_claim("job-1")
    assert again is not None
    again()
    other()
    if kind == "file":
        assert list((tmp_path / "c.json.followers").iterdir()) == []  # released: no file left


def test_a_file_claim_names_its_holder(tmp_path):
    store = FileCursorStore(tmp_path / "c.json")
    release = store.try_claim("job-1")
    assert release is not None
    assert store.claim_holder("job-1").startswith(f"pid {os.getpid()} on ")
    release()
    assert store.claim_holder("job-1") == ""


async def test_a_second_follower_waits_and_its_scope_cancels_the_wait(autojump_clock, tmp_path):
    store = FileCursorStore(tmp_path / "c.json")
    order = []
    first_in, first_out = trio.Event(), trio.Event()

    async def first():
        async with hold_follower(store, "job-1"):
            order.append("first in")
            first_in.set()
            await first_out.wait()
            order.append("first out")

    async def second():
        await first_in.wait()
        with trio.move_on_after(5) as scope:  # gives up: cancellable while waiting
            async with hold_follower(FileCursorStore(tmp_path / "c.json"), "job-1"):
                order.append("never")
        assert scope.cancelled_caught
        order.append("second gave up")
        async with hold_follower(FileCursorStore(tmp_path / "c.json"), "job-1"):
            order.append("second in")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(first)
        nursery.start_soon(second)
        await trio.testing.wait_all_tasks_blocked()
        await trio.sleep(10)
        first_out.set()
    assert order == ["first in", "second gave up", "first out", "second in"]


async def test_a_store_without_try_claim_excludes_nobody():
    class Minimal:
        def load(self, job_id):
            return None

        def save(self, job_id, cursor):
            pass

    store = Minimal()
    async with hold_follower(store, "j"), hold_follower(store, "j"):
        pass
