"""``arkor-trio bench`` against hostile client processes, and the command's exit status.

Whatever the client does (never prints, prints garbage, floods stdout, ignores SIGTERM, forks and
leaves a child behind, never exits), its profile gets a verdict, no process of it survives, and
the next profile runs. Deadlines are short; nothing here waits for more than a few seconds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from arkor_trio.cli import main
from arkor_trio.testing import bench as bench_engine
from arkor_trio.testing.bench import BenchConfig, BenchReport, run_bench

if TYPE_CHECKING:
    from collections.abc import Sequence

CLIENT = Path(__file__).resolve().parent / "sse_client.py"
EVENTS = 20


async def bench(
    tmp_path: Path, profiles: Sequence[str], *client: str, deadline: float = 10.0
) -> BenchReport:
    command = (sys.executable, str(CLIENT), "{url}", "--log", str(tmp_path), *client)
    config = BenchConfig(
        command=command, profiles=tuple(profiles), events=EVENTS, deadline=deadline
    )
    return await run_bench(config)


async def test_a_client_that_never_prints_and_the_next_profile_still_runs(tmp_path) -> None:
    report = await bench(tmp_path, ["clean", "reset"], "--misbehave", "silent", deadline=1.0)
    assert [r.profile for r in report.results] == ["clean", "reset"]
    for result in report.results:
        assert result.ended == "no output, killed at deadline"
        assert result.deliveries == 0
        assert result.returncode == -15  # it took the SIGTERM
        assert not result.completed
    assert _left(tmp_path) == []


async def test_garbage_output_is_ignored(tmp_path: Path) -> None:
    report = await bench(tmp_path, ["clean"], "--misbehave", "garbage")
    (result,) = report.results
    assert result.ended == "no bench lines, exit 3 before the final event"
    assert result.ignored_lines == 51
    assert result.lost == EVENTS + 1  # it ended on its own without a single event


async def test_a_client_that_floods_stdout_is_read_in_bounded_memory(tmp_path: Path) -> None:
    tracemalloc.start()
    try:
        report = await bench(tmp_path, ["clean"], "--misbehave", "flood", deadline=1.5)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    (result,) = report.results
    assert result.ended == "no bench lines, killed at deadline"
    assert result.stdout_bytes > 8 << 20  # it did read the flood...
    assert result.oversized_lines >= 1
    assert peak < 6 << 20, peak  # ...without keeping it (a line is dropped past 1 MiB)


async def test_a_client_that_ignores_sigterm_is_killed(tmp_path: Path) -> None:
    report = await bench(tmp_path, ["clean"], "--misbehave", "ignore-term", deadline=1.0)
    (result,) = report.results
    assert result.ended == "no output, killed at deadline (ignored SIGTERM)"
    assert result.returncode == -9
    assert _left(tmp_path) == []


async def test_a_client_that_never_exits_after_its_final_event(tmp_path: Path) -> None:
    report = await bench(tmp_path, ["clean"], "--misbehave", "linger")
    (result,) = report.results
    assert result.ended == "completed, but did not exit (stopped)"
    assert result.lost == result.dup == result.corrupt == 0
    assert result.returncode == -15
    assert _left(tmp_path) == []


def test_a_child_the_client_forked_does_not_survive_it(tmp_path: Path) -> None:
    """The real command in its own process: it is the subreaper of what the client leaves."""
    report = tmp_path / "report.json"
    command = [sys.executable, str(CLIENT), "{url}", "--log", str(tmp_path), "--misbehave", "fork"]
    done = subprocess.run(
        [sys.executable, "-m", "arkor_trio.cli", "bench", "--profiles", "clean", "--events",
         str(EVENTS), "--json", str(report), "--", *command],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (profile,) = json.loads(report.read_text())["profiles"]
    assert profile["ended"] == "no bench lines, exit 0 before the final event"
    child = int((tmp_path / "child.pid").read_text())
    # Killed with its process group and reaped by the bench: gone, not even a zombie.
    assert not Path(f"/proc/{child}").exists()


@pytest.mark.parametrize("program", ["no-such-sse-client-anywhere", "/nonexistent/sse-client"])
def test_a_client_command_that_does_not_exist(program: str, capsys) -> None:
    assert main(["bench", "--", program, "{url}"]) == 2
    out, err = capsys.readouterr()
    assert err.splitlines() == [f"arkor-trio bench: client command not found: {program}"]
    assert out == ""


def test_fail_on_names_the_counts_that_fail_the_run(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setattr(bench_engine, "become_subreaper", lambda: False)  # not for pytest itself
    argv = ["bench", "--profiles", "clean", "--events", str(EVENTS), "--deadline", "1"]
    client = ["--", sys.executable, str(CLIENT), "{url}", "--defect", "no-leid"]
    assert main([*argv, "--fail-on", "dup,last-event-id", *client]) == 1
    out, err = capsys.readouterr()
    assert "| clean " in out
    assert "failing on dup in clean, last-event-id in clean" in err
    assert main([*argv, "--fail-on", "corrupt,order", *client]) == 0
    assert main([*argv, "--fail-on", "everything", *client]) == 2
    assert "unknown count 'everything'" in capsys.readouterr().err


def _left(tmp_path: Path) -> list[int]:
    """Processes still running the test client for this test."""
    left = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if str(CLIENT) in cmdline and str(tmp_path) in cmdline:
            left.append(int(pid))
    return left


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--events", "0"], "--events: must be above 0"),
        (["--events", "2000000"], "at most 1e+06"),
        (["--deadline", "nan"], "--deadline: must be above 0"),
        (["--profiles", "clean,nope"], "unknown profile 'nope' (known: none, clean"),
        ([], "no client command after --"),
    ],
)
def test_bad_options_exit_2_with_one_line(option: list[str], message: str, capsys) -> None:
    command = [] if not option else ["--", sys.executable, str(CLIENT), "{url}"]
    assert main(["bench", *option, *command]) == 2
    assert message in capsys.readouterr().err


def test_a_report_that_cannot_be_written_exits_2(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setattr(bench_engine, "become_subreaper", lambda: False)
    argv = ["bench", "--profiles", "clean", "--events", "5", "--json", str(tmp_path / "no" / "r")]
    client = ["--", sys.executable, str(CLIENT), "{url}", "--misbehave", "garbage"]
    assert main([*argv, *client]) == 2
    assert "arkor-trio bench: cannot write the report:" in capsys.readouterr().err
