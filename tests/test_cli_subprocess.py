"""``arkor-trio`` as a real process: the console script, Ctrl-C, serve, and no optional extras.

Each process is read line by line until the line a test waits for appears (no sleeps); a
watchdog kills a process that would otherwise hang the suite.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from arkor_trio import TrainingCancelled
from tests._cli_backend import BackgroundBackend, client_env

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

SCRIPT = Path(sys.executable).with_name("arkor-trio")
#: Run the CLI with the optional dependencies made unimportable.
WITHOUT_EXTRAS = (
    "import sys; sys.modules.update(dict.fromkeys(['numpy', 'rich', 'starlette', 'hypercorn']));"
    "from arkor_trio.cli import main; sys.exit(main())"
)


@pytest.fixture(scope="module")
def bg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackgroundBackend]:
    backend = BackgroundBackend(tmp_path_factory.mktemp("cli-subprocess")).start()
    yield backend
    backend.stop()


def command(*argv: str) -> list[str]:
    if SCRIPT.exists():
        return [str(SCRIPT), *argv]
    return [sys.executable, "-m", "arkor_trio.cli", *argv]


class Process:
    """A CLI process whose stdout is read line by line; killed after ``limit`` seconds."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path, limit: float = 60):
        self.proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            env={**env, "PYTHONUNBUFFERED": "1", "PYTHONIOENCODING": "utf-8"},
            cwd=cwd,
        )
        self.watchdog = threading.Timer(limit, self.proc.kill)
        self.watchdog.start()
        self.lines: list[str] = []

    def read_until(self, pattern: str) -> re.Match[str]:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            found = re.search(pattern, line)
            if found:
                return found
        raise AssertionError(f"{pattern!r} never appeared in:\n{''.join(self.lines)}")

    def finish(self) -> tuple[int, str, str]:
        out, err = self.proc.communicate()
        self.watchdog.cancel()
        return self.proc.returncode, "".join(self.lines) + out, err


def test_help_jobs_and_demo_without_the_server_extra(bg, tmp_path):
    env = {**client_env(bg), "HOME": str(tmp_path)}
    base = [sys.executable, "-c", WITHOUT_EXTRAS]

    done = subprocess.run([*base, "--help"], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=60, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "usage: arkor-trio" in done.stdout

    job_id = bg.train(steps=1)
    done = subprocess.run([*base, "jobs", "list", "--json"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert job_id in {job["id"] for job in json.loads(done.stdout)}

    done = subprocess.run([*base, "demo"], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=60, check=False)  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.startswith("arkor-trio: error: `arkor-trio demo` needs the server extra")
    assert "pip install 'arkor-trio[server]'" in done.stderr


def test_demo_end_to_end(tmp_path):
    process = Process(
        command("demo", "--steps", "20", "--data-dir", str(tmp_path / "data")),
        dict(os.environ),
        tmp_path,
    )
    code, out, err = process.finish()
    assert code == 0, err
    assert re.search(r"^step 10/20  loss \d", out, re.MULTILINE)
    first, last = map(
        float, re.findall(r"^loss: (\S+) \(first\) -> (\S+) \(last\)$", out, re.MULTILINE)[0]
    )
    assert last < first
    assert "final.npz" in out


TRAINER_FILE = """
from arkor_trio import BlobDataset, create_trainer

trainer = create_trainer(
    name="interrupt-me", model="unsloth/gemma-4-E4B-it", dataset=BlobDataset.demo(),
    max_steps=100_000, logging_steps=1,
)
"""


def test_ctrl_c_cancels_the_job_on_the_backend_and_exits_130(bg, tmp_path):
    path = tmp_path / "trainer.py"
    path.write_text(TRAINER_FILE)
    process = Process(command("run", str(path)), client_env(bg), tmp_path)
    job_id = process.read_until(r"^started job (job_\w+) ").group(1)
    process.read_until(r"^step +1/100000  loss ")
    interrupted = time.monotonic()
    process.proc.send_signal(signal.SIGINT)
    code, out, err = process.finish()
    took = time.monotonic() - interrupted
    assert code == 130, err
    assert f"interrupted: sent the cancel for job {job_id} to the backend" in out
    assert "arkor-trio: interrupted" in err
    assert "Traceback" not in err
    assert took < 10
    assert isinstance(bg.terminal_event(job_id), TrainingCancelled)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_serve_prints_the_exports_and_stops_on_ctrl_c_or_sigterm(tmp_path, signum):
    data_dir = tmp_path / "served"
    process = Process(
        command("serve", "--port", "0", "--data-dir", str(data_dir), "--ping-interval", "5"),
        dict(os.environ),
        tmp_path,
    )
    login = process.read_until(r"Live page \(one-time login link\): (\S+)").group(1)
    url = process.read_until(r"export ARKOR_CLOUD_API_URL=(\S+)").group(1)
    token = process.read_until(r"export ARKOR_TOKEN=(\S+)").group(1)
    assert url.startswith("http://127.0.0.1:")
    assert login.startswith(f"{url}/login?token=")
    assert token == (data_dir / "token").read_text().strip()
    # The TypeScript SDK's credentials, printed as the file's exact JSON.
    process.read_until(r"anonymous sign-in is off\):$")
    start = len(process.lines)
    process.read_until(r"^\}$")
    credentials = "".join(process.lines[start:])
    assert json.loads(credentials) == {
        "mode": "anon", "token": token, "anonymousId": "local", "arkorCloudApiUrl": url,
        "orgSlug": "local",
    }  # fmt: skip

    env = {**os.environ, "ARKOR_CLOUD_API_URL": url, "ARKOR_TOKEN": token, "HOME": str(tmp_path)}
    done = subprocess.run(command("jobs", "list"), env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=60, check=False)  # fmt: skip
    assert (done.returncode, done.stdout) == (0, "no jobs\n"), done.stderr

    process.proc.send_signal(signum)
    code, out, err = process.finish()
    assert code == 0, err
    assert "Traceback" not in err
    assert out.endswith("arkor-trio serve: stopped\n")


def test_sigterm_during_run_cancels_the_job_like_ctrl_c_and_exits_143(bg, tmp_path):
    path = tmp_path / "trainer.py"
    path.write_text(TRAINER_FILE)
    process = Process(command("run", str(path)), client_env(bg), tmp_path)
    job_id = process.read_until(r"^started job (job_\w+) ").group(1)
    process.read_until(r"^step +1/100000  loss ")
    process.proc.send_signal(signal.SIGTERM)
    code, out, err = process.finish()
    assert code == 143, err
    assert f"terminated: sent the cancel for job {job_id} to the backend" in out
    assert err.strip() == "arkor-trio: terminated (SIGTERM)"
    assert isinstance(bg.terminal_event(job_id), TrainingCancelled)


def run_command(env: dict[str, str], cwd: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command(*argv), env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=60, check=False)  # fmt: skip


def assert_one_line_error(done: subprocess.CompletedProcess[str], *fragments: str) -> None:
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("arkor-trio: error: ")
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.mark.parametrize("value", ["nan", "inf", "-1"])
def test_infer_with_a_non_finite_temperature_is_a_usage_error(bg, tmp_path, value):
    done = run_command(
        client_env(bg), tmp_path, "infer", "--job", "job_x", "--temperature", value, "hi"
    )
    assert done.returncode == 2
    assert_one_line_error(done, "temperature must be a number finite and >= 0")


def test_sys_exit_in_a_trainer_file_is_reported_not_silent(bg, tmp_path):
    at_import = tmp_path / "exits.py"
    at_import.write_text("import sys\nsys.exit(0)\n")
    done = run_command(client_env(bg), tmp_path, "run", str(at_import))
    assert (done.returncode, done.stdout) == (2, "")
    assert_one_line_error(done, "exits.py called sys.exit(0) while it was imported")

    in_callback = tmp_path / "exits_later.py"
    in_callback.write_text(
        TRAINER_FILE.replace(
            "logging_steps=1,", "logging_steps=1,\n    callbacks={'on_log': lambda ctx: exit(3)},"
        )
    )
    done = run_command(client_env(bg), tmp_path, "run", str(in_callback))
    assert done.returncode == 1
    job_id = re.search(r"^started job (job_\w+) ", done.stdout, re.MULTILINE).group(1)
    assert_one_line_error(done, f"called sys.exit(3) during the run; job {job_id} keeps running")
    bg.call(lambda client: client.cancel_job(job_id))


def test_serve_start_up_errors_are_one_line_exit_2(tmp_path):
    env = {**os.environ, "HOME": str(tmp_path)}
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_command(
            env, tmp_path, "serve", "--port", str(port), "--data-dir", str(tmp_path / "d")
        )
    assert (done.returncode, done.stdout) == (2, "")
    assert_one_line_error(done, f"cannot listen on 127.0.0.1:{port}", "--port")

    a_file = tmp_path / "a-file"
    a_file.write_text("")
    done = run_command(env, tmp_path, "serve", "--port", "0", "--data-dir", str(a_file / "data"))
    assert (done.returncode, done.stdout) == (2, "")
    assert_one_line_error(done, f"cannot use data dir {a_file / 'data'}", "Not a directory")


def test_v_logs_our_debug_messages_and_vv_adds_httpcore(bg, tmp_path):
    env = {**client_env(bg), "HOME": str(tmp_path)}
    quiet = run_command(env, tmp_path, "jobs", "list")
    verbose = run_command(env, tmp_path, "-v", "jobs", "list")
    very = run_command(env, tmp_path, "-vv", "jobs", "list")
    assert quiet.returncode == verbose.returncode == very.returncode == 0
    assert quiet.stderr == ""
    assert "arkor-trio: INFO arkor_trio.client: using org" in verbose.stderr
    assert "httpcore" not in verbose.stderr
    assert "DEBUG httpcore" in very.stderr
    assert "INFO arkor_trio.client" in very.stderr


def test_the_chaos_example_of_the_docs_reaches_the_event_stream(bg, tmp_path):
    job_id = bg.train(steps=6, logging_steps=1)
    upstream = bg.env()["ARKOR_CLOUD_API_URL"].removeprefix("http://")
    chaos = Process(
        command("chaos", "--upstream", upstream, "--listen", "0", "--only", "/events/stream",
                "--plan", "cut:3,mid:2,status:503:2:1"),
        dict(os.environ),
        tmp_path,
    )  # fmt: skip
    try:
        url = chaos.read_until(r"^arkor-trio chaos: (http://\S+) -> ").group(1)
        env = {**client_env(bg), "ARKOR_CLOUD_API_URL": url, "HOME": str(tmp_path)}
        follow = run_command(env, tmp_path, "jobs", "events", job_id, "--follow", "--json")
        direct = run_command(client_env(bg), tmp_path, "jobs", "events", job_id, "--json")
    finally:
        chaos.proc.send_signal(signal.SIGINT)
        code, out, _ = chaos.finish()
    assert follow.returncode == 0, follow.stderr
    events = [json.loads(line) for line in follow.stdout.splitlines()]
    assert events == [json.loads(line) for line in direct.stdout.splitlines()]
    assert events[-1]["type"] == "training.completed"
    assert code == 0
    stream_lines = [line for line in out.splitlines() if "/events/stream" in line]
    me_lines = [line for line in out.splitlines() if "/v1/me" in line]
    assert len(stream_lines) == 5  # cut, mid-frame cut, 503 twice, then the rest
    assert len(me_lines) == 1  # passed, without taking a step
