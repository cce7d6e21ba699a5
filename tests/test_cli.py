"""``arkor-trio`` in-process: ``cli.main([...])`` against a local backend in a background thread.

The CLI runs its own ``trio.run``, so these are plain (sync) tests; see tests/_cli_backend.py.
"""

from __future__ import annotations

import json
import re
import sys
import textwrap
import threading
from typing import TYPE_CHECKING

import pytest

from arkor_trio import BlobDataset, CheckpointSaved, TrainingCancelled, create_trainer
from arkor_trio.cli import main
from tests._cli_backend import FOREVER, MODEL, BackgroundBackend

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


@pytest.fixture(scope="module")
def bg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackgroundBackend]:
    backend = BackgroundBackend(tmp_path_factory.mktemp("cli-backend")).start()
    yield backend
    backend.stop()


@pytest.fixture(scope="module")
def done_job(bg: BackgroundBackend) -> str:
    """A completed 4-step job with checkpoints at steps 2 and 4."""
    return bg.train(steps=4, logging_steps=1, eval_steps=2, save_steps=2)


@pytest.fixture(autouse=True)
def env(bg: BackgroundBackend, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key, value in bg.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.arkor/credentials.json
    monkeypatch.chdir(tmp_path)  # no .arkor/state.json
    monkeypatch.setattr(sys, "path", list(sys.path))  # `run` prepends the file's directory


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(err: str, *fragments: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("arkor-trio: error: ")
    for fragment in fragments:
        assert fragment in lines[0]


# --- parsing -----------------------------------------------------------------------------------


def test_help_lists_every_command(capsys):
    code, out, _ = run_cli(capsys, "--help")
    assert code == 0
    for command in ("demo", "serve", "run", "jobs", "infer", "chaos"):
        assert command in out
    assert "ARKOR_CLOUD_API_URL" in out


@pytest.mark.parametrize(
    "argv",
    [[], ["jobs"], ["demo", "--steps", "0"], ["infer", "hello"], ["nope"], ["serve", "--port=x"]],
)
def test_usage_errors_exit_2(capsys, argv):
    code, _, err = run_cli(capsys, *argv)
    assert code == 2
    assert "usage: arkor-trio" in err


@pytest.mark.parametrize(
    "argv",
    [
        ["demo"], ["serve"], ["run"], ["jobs"], ["jobs", "list"], ["jobs", "show"],
        ["jobs", "cancel"], ["jobs", "events"], ["infer"], ["chaos"],
    ],
)  # fmt: skip
def test_every_subcommand_help_has_a_description_and_shows_defaults(capsys, argv):
    code, out, _ = run_cli(capsys, *argv, "--help")
    assert code == 0
    usage, description = out.split("\n\n")[:2]
    assert usage.startswith(f"usage: arkor-trio {' '.join(argv)}")
    assert description[0].isupper()
    assert description.rstrip().endswith(".")
    assert "(default: None)" not in out
    defaults = {
        "demo": "(default: 300)",
        "serve": "(default: 8787)",
        "infer": "(default: 0.0)",
        "chaos": "(default: 0)",
    }
    if argv[0] in defaults:
        assert defaults[argv[0]] in " ".join(out.split())
    if argv == ["infer"]:
        assert "characters on the local backend" in " ".join(out.split())


def test_version(capsys):
    code, out, _ = run_cli(capsys, "--version")
    assert code == 0
    assert re.fullmatch(r"arkor-trio \S+\n", out)


# --- jobs --------------------------------------------------------------------------------------


def test_jobs_list_as_table_and_json(capsys, done_job):
    code, out, _ = run_cli(capsys, "jobs", "list")
    assert code == 0
    header, *rows = out.splitlines()
    assert header.split() == ["ID", "STATUS", "NAME", "CREATED"]
    assert any(row.split()[:3] == [done_job, "completed", "cli-test"] for row in rows)

    code, out, _ = run_cli(capsys, "jobs", "list", "--json")
    assert code == 0
    jobs = {job["id"]: job for job in json.loads(out)}
    assert jobs[done_job]["status"] == "completed"
    assert jobs[done_job]["config"]["maxSteps"] == 4


def test_jobs_show_as_text_and_json(capsys, done_job):
    code, out, _ = run_cli(capsys, "jobs", "show", done_job)
    assert code == 0
    fields = dict(line.split(None, 1) for line in out.splitlines())
    assert fields["id"] == done_job
    assert fields["status"] == "completed"
    assert fields["model"] == "unsloth/gemma-4-E4B-it"
    assert "maxSteps=4" in fields["config"]
    assert re.fullmatch(r"models/\S+/final\.npz \(\d+\.\d MB\)", fields["artifact"])
    assert "(artifact paths are relative to the backend's data dir)" in out
    assert fields["checkpoints"] == "2, 4"
    assert fields["ended"]  # not labelled "completed": failed and cancelled jobs end too

    code, out, _ = run_cli(capsys, "jobs", "show", done_job, "--json")
    assert code == 0
    assert json.loads(out)["completedAt"]


@pytest.fixture(scope="module")
def cancelled_job(bg: BackgroundBackend) -> str:
    """A job cancelled after its checkpoints at steps 2 and 4: it has no final adapter."""

    async def run(client):
        trainer = create_trainer(
            name="cli-cancelled", model=MODEL, dataset=BlobDataset.demo(), max_steps=FOREVER,
            logging_steps=FOREVER, eval_steps=FOREVER, save_steps=2, client=client,
        )  # fmt: skip
        job_id = await trainer.start()
        async with client.events(job_id) as stream:
            async for event in stream:
                if isinstance(event, CheckpointSaved) and event.step == 4:
                    break
        await client.cancel_job(job_id)
        return job_id

    job_id = bg.call(run)
    assert isinstance(bg.terminal_event(job_id), TrainingCancelled)
    return job_id


def test_jobs_show_of_a_cancelled_job_lists_its_checkpoints(capsys, cancelled_job):
    code, out, _ = run_cli(capsys, "jobs", "show", cancelled_job)
    assert code == 0
    fields = dict(line.split(None, 1) for line in out.splitlines())
    assert (fields["status"], fields["checkpoints"]) == ("cancelled", "2, 4")
    assert fields["ended"]


def test_unknown_job_is_a_one_line_error_exit_1(capsys):
    code, out, err = run_cli(capsys, "jobs", "show", "job_missing")
    assert code == 1
    assert out == ""
    assert_one_line_error(err, "job_missing", "404")


def test_missing_token_is_a_configuration_error_exit_2(capsys, monkeypatch):
    monkeypatch.delenv("ARKOR_TOKEN")
    code, _, err = run_cli(capsys, "jobs", "list")
    assert code == 2
    assert_one_line_error(err, "ARKOR_TOKEN")


def test_unreachable_backend_is_a_one_line_error_exit_1(capsys, monkeypatch):
    monkeypatch.setenv("ARKOR_CLOUD_API_URL", "http://127.0.0.1:1")
    code, _, err = run_cli(capsys, "jobs", "list")
    assert code == 1
    assert_one_line_error(err, "127.0.0.1:1")


def test_jobs_events_of_a_finished_job_print_everything_to_the_terminal_event(capsys, done_job):
    code, out, _ = run_cli(capsys, "jobs", "events", done_job)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:2] == ["1", "training.started"]
    assert lines[-1].split()[1] == "training.completed"
    assert sum(" training.log " in line for line in lines) == 4
    assert sum(" checkpoint.saved " in line for line in lines) == 2
    assert "step=2 loss=" in out

    code, out, _ = run_cli(capsys, "jobs", "events", done_job, "--json", "--after", "2")
    assert code == 0
    events = [json.loads(line) for line in out.splitlines()]
    ids = [int(event["id"]) for event in events]
    assert ids == list(range(3, len(lines) + 1))
    assert events[-1]["type"] == "training.completed"
    assert all(event["jobId"] == done_job for event in events)


def test_jobs_events_without_follow_stop_after_the_backlog_of_a_running_job(capsys, bg):
    job_id = bg.start_idle_job()
    try:
        code, out, _ = run_cli(capsys, "jobs", "events", job_id)
        assert code == 0
        assert [line.split()[1] for line in out.splitlines()] == [
            "training.started",
            "training.log",
        ]
    finally:
        code, out, _ = run_cli(capsys, "jobs", "cancel", job_id)
    assert code == 0
    # The backend may finish the cancel before the command reads the status back.
    assert re.fullmatch(
        rf"cancel requested for job {job_id} \(status: (running|cancelled)\)\n", out
    )
    assert isinstance(bg.terminal_event(job_id), TrainingCancelled)


class CancelOnFirstLog:
    """A stdout that cancels the job (from another thread) once a training.log line is printed."""

    def __init__(self, bg: BackgroundBackend, job_id: str) -> None:
        self.bg, self.job_id, self.text = bg, job_id, ""
        self.thread: threading.Thread | None = None

    def write(self, text: str) -> int:
        self.text += text
        if "training.log" in text and self.thread is None:
            cancel = self.bg.call
            self.thread = threading.Thread(
                target=cancel, args=(lambda c: c.cancel_job(self.job_id),)
            )
            self.thread.start()
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


def test_jobs_events_follow_runs_until_the_job_ends(bg, monkeypatch):
    job_id = bg.start_idle_job()
    out = CancelOnFirstLog(bg, job_id)
    monkeypatch.setattr(sys, "stdout", out)
    assert main(["jobs", "events", job_id, "--follow"]) == 0
    assert out.thread is not None
    out.thread.join(30)
    types = [line.split()[1] for line in out.text.splitlines()]
    assert types == ["training.started", "training.log", "training.cancelled"]


def test_jobs_cancel_of_a_finished_job_is_not_an_error(capsys, done_job):
    code, out, _ = run_cli(capsys, "jobs", "cancel", done_job)
    assert code == 0
    assert out == f"job {done_job} already ended (status: completed)\n"
    code, out, _ = run_cli(capsys, "jobs", "cancel", done_job, "--json")
    assert code == 0
    assert json.loads(out) == {"id": done_job, "cancelRequested": False, "status": "completed"}


# --- infer -------------------------------------------------------------------------------------


def test_infer_streams_the_answer_of_the_final_adapter(capsys, done_job):
    code, out, _ = run_cli(
        capsys, "infer", "--job", done_job, "--max-tokens", "12", "--temperature", "0", "hi"
    )
    assert code == 0
    assert out.endswith("\n")
    assert 1 <= len(out.rstrip("\n")) <= 12


def test_infer_json_from_a_checkpoint(capsys, done_job):
    argv = ["infer", "--job", done_job, "--step", "2", "--max-tokens", "5", "--json"]
    code, out, _ = run_cli(capsys, *argv, "--system", "triage", "hi")
    assert code == 0
    completion = json.loads(out)
    assert completion["object"] == "chat.completion"
    assert completion["choices"][0]["message"]["role"] == "assistant"


def test_infer_on_a_missing_checkpoint_is_a_one_line_error(capsys, done_job):
    code, out, err = run_cli(capsys, "infer", "--job", done_job, "--step", "3", "hi")
    assert code == 1
    assert out == ""
    assert_one_line_error(err, "HTTP 404", "no checkpoint at step 3; saved steps: 2, 4")


def test_infer_on_a_job_without_a_final_adapter_uses_its_last_checkpoint(capsys, cancelled_job):
    code, out, err = run_cli(capsys, "infer", "--job", cancelled_job, "--max-tokens", "5", "hi")
    assert code == 0
    assert 1 <= len(out.rstrip("\n")) <= 5
    assert err == (
        f"note: job {cancelled_job} has no final adapter (it is cancelled); "
        "answering with its last checkpoint, step 4\n"
    )
    code, out, _ = run_cli(capsys, "infer", "--job", cancelled_job, "--json", "hi")
    assert json.loads(out)["model"] == f"adapter:{cancelled_job}@4"


def test_infer_defaults_to_the_greedy_answer(capsys, done_job):
    answers = set()
    for _ in range(2):
        code, out, _ = run_cli(capsys, "infer", "--job", done_job, "--json", "hi")
        assert code == 0
        completion = json.loads(out)
        answers.add(completion["choices"][0]["message"]["content"])
        assert completion["usage"]["completion_tokens"] <= 80
    assert len(answers) == 1  # temperature 0: the same, most likely answer every time


# --- run ---------------------------------------------------------------------------------------

TRAINER_FILE = """
from arkor_trio import BlobDataset, create_trainer

def on_log(ctx):
    print(f"user callback: step {{ctx.step}}")

{name} = create_trainer(
    name="from-file", model="unsloth/gemma-4-E4B-it", dataset={dataset},
    max_steps=3, logging_steps=1, eval_steps=3, save_steps=3, callbacks={{"on_log": on_log}},
)
"""


def trainer_file(tmp_path: Path, name: str = "trainer", dataset: str = "BlobDataset.demo()"):
    path = tmp_path / "my_trainer.py"
    path.write_text(TRAINER_FILE.format(name=name, dataset=dataset))
    return path


def test_run_a_trainer_file_to_completion(capsys, tmp_path):
    code, out, _ = run_cli(capsys, "run", str(trainer_file(tmp_path)), "--sample", "Hi?")
    assert code == 0
    lines = out.splitlines()
    # the file's own callback runs first for each event, then the display's line
    first = lines.index("user callback: step 1")
    assert lines[first + 1].startswith("step 1/3  loss ")
    assert "  > Hi?" in lines
    assert re.search(r"^loss: (\S+) \(first\) -> (\S+) \(last\)$", out, re.MULTILINE)
    assert re.search(r"^job job_\w+: completed$", out, re.MULTILINE)


def test_run_json_prints_only_the_result_on_stdout(capsys, tmp_path):
    code, out, err = run_cli(capsys, "run", str(trainer_file(tmp_path, name="arkor")), "--json")
    assert code == 0
    result = json.loads(out)  # the whole of stdout is the JSON document
    assert result["job"]["status"] == "completed"
    assert result["artifacts"][0]["pathname"].endswith("final.npz")
    assert result["lastLoss"] < result["firstLoss"]
    assert "step 3/3" in err  # the progress went to stderr


def test_run_exits_1_when_the_job_fails(capsys, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [}\n')
    path = trainer_file(tmp_path, name="my_only_trainer", dataset=f"BlobDataset({bad.as_uri()!r})")
    code, out, _ = run_cli(capsys, "run", str(path))
    assert code == 1
    assert re.search(r"^failed job job_\w+: dataset: .*line 1", out, re.MULTILINE)
    assert re.search(r"^job job_\w+: failed$", out, re.MULTILINE)


def test_run_detach_submits_with_settings_and_exits_at_once(capsys, tmp_path, bg):
    # A sweep from one file: each --detach submits a job with its own settings and returns;
    # FOREVER steps would never finish, so a run that followed the job would hang the test.
    path = str(trainer_file(tmp_path))
    code, out, _ = run_cli(
        capsys, "run", path, "--detach", "--json", "--name", "sweep-a",
        "--set", f"max_steps={FOREVER}", "--set", "learning_rate=0.002", "--set", "optim=adamw",
    )  # fmt: skip
    assert code == 0
    submitted = json.loads(out)
    assert (submitted["name"], submitted["status"]) == ("sweep-a", "queued")
    job_id = submitted["id"]

    async def get(client, job_id):
        return await client.get_job(job_id)

    job = bg.call(get, job_id)
    assert job.name == "sweep-a"
    assert job.config["maxSteps"] == FOREVER
    assert job.config["learningRate"] == 0.002
    assert job.config["optim"] == "adamw"
    assert job.config["loggingSteps"] == 1  # the file's own settings are kept
    code, out, _ = run_cli(capsys, "run", path, "--detach")
    assert code == 0
    assert re.match(r"submitted job job_\w+ \(from-file, queued\)", out)
    assert "arkor-trio jobs cancel job_" in out
    other = out.split()[2]
    for job in (job_id, other):
        assert run_cli(capsys, "jobs", "cancel", job)[0] == 0


@pytest.mark.parametrize(
    ("setting", "fragment"),
    [
        ("max_steps=0", "max_steps"),
        ("max_stepz=3", "unknown training setting 'max_stepz'"),
        ("learning_rate=fast", "learning_rate"),
    ],
)
def test_run_set_with_a_bad_setting_is_a_usage_error(capsys, tmp_path, setting, fragment):
    code, _, err = run_cli(capsys, "run", str(trainer_file(tmp_path)), "--set", setting)
    assert code == 2
    assert_one_line_error(err, fragment)


def test_serve_max_concurrent_jobs_parses():
    from arkor_trio.cli import build_parser

    args = build_parser().parse_args(["serve", "--max-concurrent-jobs", "3"])
    assert args.max_concurrent_jobs == 3
    assert build_parser().parse_args(["serve"]).max_concurrent_jobs == 1


def test_serve_backlog_parses_and_must_be_positive(capsys):
    from arkor_trio.cli import build_parser

    assert build_parser().parse_args(["serve", "--backlog", "4096"]).backlog == 4096
    assert build_parser().parse_args(["serve"]).backlog is None  # the server's DEFAULT_BACKLOG
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--backlog", "0"])


def test_serve_feed_subscription_caps_reach_the_backend_limits():
    from arkor_trio.cli import build_parser
    from arkor_trio.cli._commands import _ws_limits
    from arkor_trio.server import WsLimits

    assert _ws_limits(build_parser().parse_args(["serve"])) is None  # the defaults
    args = build_parser().parse_args(["serve", "--feed-max-total-subscriptions", "100000"])
    assert _ws_limits(args) == WsLimits(max_total_subscriptions=100_000)
    args = build_parser().parse_args(
        ["serve", "--feed-max-subscriptions", "100000", "--feed-max-total-subscriptions", "200000"]
    )
    limits = _ws_limits(args)
    assert (limits.max_subscriptions, limits.max_total_subscriptions) == (100_000, 200_000)


def test_run_without_a_trainer_or_file_is_a_usage_error(capsys, tmp_path):
    empty = tmp_path / "empty.py"
    empty.write_text("x = 1\n")
    code, _, err = run_cli(capsys, "run", str(empty))
    assert code == 2
    assert_one_line_error(err, "defines no Trainer")

    two = tmp_path / "two.py"
    two.write_text(
        textwrap.dedent("""
        from arkor_trio import BlobDataset, create_trainer
        a = create_trainer(name="a", model="m", dataset=BlobDataset.demo())
        b = create_trainer(name="b", model="m", dataset=BlobDataset.demo())
        """)
    )
    code, _, err = run_cli(capsys, "run", str(two))
    assert code == 2
    assert_one_line_error(err, "several Trainers (a, b)")

    code, _, err = run_cli(capsys, "run", str(tmp_path / "missing.py"))
    assert code == 2
    assert_one_line_error(err, "no such file")


def test_run_shows_the_traceback_of_a_file_that_raises(capsys, tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('user bug')\n")
    code, _, err = run_cli(capsys, "run", str(broken))
    assert code == 1
    assert "Traceback" in err
    assert "RuntimeError: user bug" in err


# --- demo, serve, chaos --------------------------------------------------------------------------


def test_demo_trains_samples_charts_and_keeps_artifacts_in_the_data_dir(capsys, tmp_path):
    data_dir = tmp_path / "demo-data"
    code, out, _ = run_cli(capsys, "demo", "--steps", "6", "--data-dir", str(data_dir))
    assert code == 0
    assert f"data dir {data_dir}" in out
    assert re.search(
        r"live page \(one-time login link\): http://127\.0\.0\.1:\d+/login\?token=\S+", out
    )
    assert out.count("checkpoint at step") == 3  # save_steps = 6 // 3
    assert out.count("  > Why was my card charged twice for the Pro plan?") == 3
    assert "eval loss" in out
    assert "└" in out  # the chart
    assert "• train loss   ◆ eval loss" in out
    first, last = map(float, re.findall(r"^loss: (\S+) \(first\) -> (\S+)", out, re.MULTILINE)[0])
    assert last < first
    artifact = re.findall(r"^  (/\S+final\.npz) \(", out, re.MULTILINE)
    assert len(artifact) == 1
    assert artifact[0].startswith(str(data_dir))
    assert (data_dir / "models").is_dir()


def test_serve_on_a_data_dir_in_use_is_a_configuration_error(capsys, bg):
    code, _, err = run_cli(capsys, "serve", "--port", "0", "--data-dir", str(bg.data_dir))
    assert code == 2
    assert_one_line_error(err, "in use by another local backend")


def test_credentials_local_writes_the_sdk_file_and_keeps_a_cloud_login(
    capsys, tmp_path, monkeypatch
):
    monkeypatch.setenv("HOME", str(tmp_path))
    data_dir = tmp_path / "backend"
    args = ("credentials", "--local", "--port", "9123", "--data-dir", str(data_dir))
    code, out, _ = run_cli(capsys, *args)
    assert code == 0
    path = tmp_path / ".arkor" / "credentials.json"
    assert str(path) in out
    written = json.loads(path.read_text())
    assert written == {
        "mode": "anon", "token": (data_dir / "token").read_text().strip(), "anonymousId": "local",
        "arkorCloudApiUrl": "http://127.0.0.1:9123", "orgSlug": "local",
    }  # fmt: skip
    cloud = '{"mode": "oauth", "accessToken": "a", "arkorCloudApiUrl": "https://api.arkor.ai"}'
    path.write_text(cloud)
    code, _, err = run_cli(capsys, *args)
    assert code == 2
    assert_one_line_error(err, "--force")
    assert path.read_text() == cloud
    code, _, _ = run_cli(capsys, *args, "--force")
    assert code == 0
    assert json.loads(path.read_text()) == written
    code, _, _ = run_cli(capsys, "credentials")  # --local is required (the only mode)
    assert code == 2


@pytest.mark.parametrize(
    ("plan", "upstream", "fragment"),
    [("cut:x", "127.0.0.1:9", "bad token 'cut:x'"), ("", "nohost", "upstream")],
)
def test_chaos_configuration_errors_exit_2(capsys, plan, upstream, fragment):
    code, _, err = run_cli(capsys, "chaos", "--upstream", upstream, "--plan", plan)
    assert code == 2
    assert_one_line_error(err, fragment)
