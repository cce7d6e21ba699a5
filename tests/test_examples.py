"""Every recipe in examples/ runs against a real local backend (NumPy engine, real sockets).

Each test imports the recipe and calls its ``main(client, ...)`` with small step counts, then
checks what the recipe claims: the stop, the exit code, the posts, the labels, no repeats.
"""

from __future__ import annotations

import importlib
import math
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import trio

from arkor_trio import FileCursorStore, Trainer, TrainingLog
from arkor_trio.server import open_local_backend
from tests._receiver import Receiver

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from arkor_trio import ArkorClient

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


@pytest.fixture
def load(monkeypatch: pytest.MonkeyPatch):
    """Import a recipe module by name, as ``python examples/<name>.py`` would see it."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    monkeypatch.delenv("ARKOR_CLOUD_API_URL", raising=False)
    monkeypatch.delenv("SLACK_WEBHOOK_URL", raising=False)
    return importlib.import_module


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[ArkorClient]:
    async with open_local_backend(tmp_path / "backend") as backend, backend.client() as c:
        yield c


def test_every_recipe_has_a_main_and_a_script_entry(load) -> None:
    recipes = sorted(p.stem for p in EXAMPLES.glob("*.py") if not p.stem.startswith("_"))
    assert recipes == [
        "attach_resume",
        "ci_run",
        "early_stopping",
        "fastapi_service",
        "midrun_eval",
        "notifications",
        "slack_fleet",
        "structured_outputs",
        "training_service",
    ]
    for name in recipes:
        module = load(name)
        assert callable(module.main), name
        assert 'if __name__ == "__main__":' in (EXAMPLES / f"{name}.py").read_text(), name


# --- early stopping ----------------------------------------------------------------------------


def test_early_stopping_rules(load) -> None:
    es = load("early_stopping")
    nan = es.EarlyStopping()
    assert not nan.observe(1, 4.0)
    assert not nan.observe(2, None)  # a log without loss is ignored
    assert nan.observe(3, math.nan)
    assert (nan.step, nan.reason) == (3, "loss is nan")
    assert nan.observe(4, 1.0)  # stays tripped

    ceiling = es.EarlyStopping(ceiling=10.0)
    assert ceiling.observe(1, 12.5)
    assert "ceiling" in ceiling.reason

    patience = es.EarlyStopping(window=2, patience=3, tolerance=0.05)
    falling_then_rising = [4.0, 3.0, 2.0, 2.0, 2.5, 2.6, 2.7]
    tripped = [patience.observe(i, x) for i, x in enumerate(falling_then_rising, start=1)]
    assert tripped == [False] * 6 + [True]
    assert patience.step == 7
    assert "rolling mean" in patience.reason

    # a new best resets the strikes: up, new best, up, then up again trips patience=2
    reset = es.EarlyStopping(window=1, patience=2, tolerance=0.05)
    assert [reset.observe(i, x) for i, x in enumerate([2.0, 3.0, 1.5, 2.0, 2.0], 1)] == [
        False, False, False, False, True,
    ]  # fmt: skip
    assert reset.step == 5


async def test_early_stopping_leaves_the_wait_and_cancels_the_job(load, client) -> None:
    es = load("early_stopping")
    report = await es.main(client, max_steps=200)
    assert report.stopped_at == 2  # the learning rate of 50 makes step 2's loss explode
    assert "ceiling" in report.reason
    assert report.status == "cancelled"
    assert report.cancelled_callbacks == 1
    assert report.last_step_seen < 200  # stopped long before the run would have ended
    jobs = await client.list_jobs()
    assert [j.status for j in jobs] == ["cancelled"]


# --- mid-run evaluation ------------------------------------------------------------------------


async def test_midrun_eval_asks_every_checkpoint(load, client) -> None:
    mre = load("midrun_eval")
    evaluator = await mre.main(client, max_steps=40, save_steps=20)
    assert evaluator.errors == []
    assert [(s.step, s.prompt) for s in evaluator.samples] == [
        (step, prompt) for step in (20, 40) for prompt in mre.PROMPTS
    ]
    assert all(isinstance(s.answer, str) for s in evaluator.samples)
    assert isinstance(evaluator.streamed, str)


# --- notifications -----------------------------------------------------------------------------


async def test_notifications_post_progress_samples_and_outcomes(load, client, nursery) -> None:
    notifications = load("notifications")
    receiver = await Receiver().start(nursery)
    statuses = await notifications.main(
        client,
        webhook_url=receiver.url("/hook"),
        slack_url=receiver.url("/slack"),
        max_steps=20,
        save_steps=20,
    )
    assert statuses == ["completed", "failed"]
    hook = [r.json for r in receiver.requests if r.path == "/hook"]
    slack = [r.json["text"] for r in receiver.requests if r.path == "/slack"]
    assert [(p["event"], p.get("step")) for p in hook] == [
        ("progress", 10),
        ("progress", 20),
        ("completed", None),
        ("failed", None),
    ]
    assert "arkor-trio-missing.jsonl" in hook[-1]["error"]
    assert len(slack) == 3
    assert slack[0].startswith("Training *notify-demo*: sample at checkpoint step 20.")
    assert "completed" in slack[1]
    assert slack[2].startswith("<!here> ")
    assert sum("<!here>" in text for text in slack) == 1


async def test_notifications_script_mode_posts_to_its_own_receiver(load, client, capsys) -> None:
    notifications = load("notifications")
    async with notifications.printing_receiver() as base:
        statuses = await notifications.main(
            client, webhook_url=f"{base}/hook", max_steps=10, save_steps=10
        )
    assert statuses == ["completed", "failed"]
    printed = capsys.readouterr().out
    assert printed.count("POST /hook: ") == 3  # progress at 10, completed, failed


async def test_slack_fleet_posts_each_completion_once_across_three_replicas(
    load, client, nursery, tmp_path: Path
) -> None:
    from tests._redis import redis_server

    slack_fleet = load("slack_fleet")
    receiver = await Receiver().start(nursery)
    (tmp_path / "redis").mkdir()
    with redis_server(tmp_path / "redis") as redis:
        completed = await slack_fleet.main(
            client, redis_url=redis.url, slack_url=receiver.url("/slack"), max_steps=10
        )
    assert len(completed) == 3
    posts = [r.json["text"] for r in receiver.requests if r.path == "/slack"]
    assert len(posts) == 3  # one completion message per job, from whichever replica
    assert all("completed" in text for text in posts)
    for job_id in completed:
        assert sum(job_id in text for text in posts) == 1


# --- programmatic runs -------------------------------------------------------------------------


async def test_ci_run_exit_code_for_a_completed_run(load, client) -> None:
    ci = load("ci_run")
    assert await ci.main(client, max_steps=20) == 0


async def test_ci_run_timeout_cancels_the_job(load, client) -> None:
    ci = load("ci_run")
    assert await ci.main(client, max_steps=5000, timeout=1.0) == ci.TIMED_OUT
    [job] = await client.list_jobs()
    # run() sent the backend cancel before returning; follow the job to see it land.
    with trio.fail_after(10):
        result = await Trainer.attach(job.id, client=client).wait()
    assert result.job.status == "cancelled"


def test_ci_run_as_a_script_starts_its_own_backend(tmp_path: Path) -> None:
    env = {"PATH": "", "HOME": str(tmp_path), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "ci_run.py")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "started a local backend" in done.stdout
    assert "finished with status=completed" in done.stdout


async def test_training_service_runs_one_job_per_request(load, client) -> None:
    service = load("training_service")
    runs = await service.main(client, max_steps=15)
    assert len({r["job_id"] for r in runs}) == 2
    assert sorted(r["name"] for r in runs) == ["svc-a", "svc-b"]
    assert [(r["status"], r["step"]) for r in runs] == [("completed", 15)] * 2
    assert len(await client.list_jobs()) == 2


async def test_training_service_rejects_bad_requests(load, client) -> None:
    service = load("training_service")
    async with service.open_training_service(client) as svc, trio.open_nursery() as nursery:
        base = await nursery.start(service.serve_http, svc)
        async with httpx.AsyncClient(base_url=base) as http:
            bad: dict[str, Any] = {"name": "x", "max_steps": 0}
            response = await http.post("/runs", json=bad)
            assert response.status_code == 400
            assert response.json()["field"] == "max_steps"
            response = await http.post("/runs", content=b"not json")
            assert response.status_code == 400
            assert (await http.get("/runs/nope")).status_code == 404
            assert (await http.get("/runs")).json() == {"runs": []}
        nursery.cancel_scope.cancel()
    assert await client.list_jobs() == []


# --- structured outputs ------------------------------------------------------------------------


async def test_structured_outputs_answers_one_of_the_labels(load, client) -> None:
    so = load("structured_outputs")
    labels = await so.main(client, max_steps=20)
    assert list(labels) == list(so.TICKETS)
    assert set(labels.values()) <= set(so.LABELS)


# --- attach + FileCursorStore ------------------------------------------------------------------


async def test_attach_resumes_from_the_cursor_file_without_repeats(load, client, tmp_path) -> None:
    ar = load("attach_resume")
    path = tmp_path / "cursors.json"
    followed = await ar.main(client, cursor_file=path, max_steps=30, stop_at=10)
    assert followed.first_steps == list(range(1, 11))
    assert followed.second_steps == list(range(11, 31))
    assert followed.final_status == "completed"

    # The two followers together saw exactly what the job logged, as a full replay shows.
    async with client.events(followed.job_id) as stream:
        replay = [e async for e in stream]
    logged = [e.step for e in replay if isinstance(e, TrainingLog)]
    assert followed.first_steps + followed.second_steps == logged
    # The file holds the id of the last event dispatched: the terminal one.
    assert FileCursorStore(path).peek(followed.job_id).id == replay[-1].event_id
    assert followed.cursor_after_first == next(
        e.event_id for e in replay if isinstance(e, TrainingLog) and e.step == 10
    )
