from __future__ import annotations

import json
import os

import pytest

from arkor_trio import ConfigError, CursorStore, FileCursorStore, MemoryCursorStore


def test_memory_store():
    s = MemoryCursorStore()
    assert isinstance(s, CursorStore)
    assert s.peek("j").id is None
    s.save("j", "3")
    s.save("k", "1")
    assert (s.peek("j").id, s.peek("k").id) == ("3", "1")


def test_file_store_survives_a_new_instance(tmp_path):
    path = tmp_path / "sub" / "cursors.json"
    a = FileCursorStore(path)
    assert isinstance(a, CursorStore)
    a.save("job-1", "17")
    a.save("job-2", "4")
    a.save("job-1", "18")
    b = FileCursorStore(path)
    assert (b.peek("job-1").id, b.peek("job-2").id, b.peek("nope").id) == ("18", "4", None)
    assert json.loads(path.read_text()) == {
        "version": 1,
        "cursors": {"job-1": "18", "job-2": "4"},
        "finished": [],
    }


def test_file_store_writes_atomically_and_leaves_no_temp_files(tmp_path, monkeypatch):
    path = tmp_path / "c.json"
    store = FileCursorStore(path, fsync=True)
    store.save("j", "1")

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        store.save("j", "2")
    monkeypatch.undo()
    assert json.loads(path.read_text())["cursors"] == {"j": "1"}  # the old file is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.json", "c.json.lock"]


@pytest.mark.parametrize("content", ["not json", "[]", '{"cursors": {"j": 3}}'])
def test_file_store_rejects_a_foreign_file(tmp_path, content):
    path = tmp_path / "c.json"
    path.write_text(content)
    with pytest.raises(ConfigError) as info:
        FileCursorStore(path)
    assert str(path) in str(info.value)
    assert path.read_text() == content  # nothing overwritten


def test_repr(tmp_path):
    assert "c.json" in repr(FileCursorStore(tmp_path / "c.json"))
    assert repr(MemoryCursorStore()) == "MemoryCursorStore(0 jobs)"


def test_finished_marker_survives_a_new_instance(tmp_path):
    from arkor_trio.stream._cursor import is_finished, mark_finished

    path = tmp_path / "c.json"
    a = FileCursorStore(path)
    a.save("j", "9")
    assert not is_finished(a, "j")
    mark_finished(a, "j")
    b = FileCursorStore(path)
    assert is_finished(b, "j")
    assert not is_finished(b, "k")
    assert b.peek("j").id == "9"
    m = MemoryCursorStore()
    mark_finished(m, "j")
    assert is_finished(m, "j")

    class Minimal:  # a user store with only load/save never claims a job finished
        def load(self, job_id):
            return None

        def save(self, job_id, cursor):
            pass

    mark_finished(Minimal(), "j")
    assert not is_finished(Minimal(), "j")


def test_a_version_one_file_without_finished_still_loads(tmp_path):
    path = tmp_path / "c.json"
    path.write_text('{"version": 1, "cursors": {"j": "3"}}')
    assert FileCursorStore(path).peek("j").id == "3"
