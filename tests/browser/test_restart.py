"""The page survives a backend kill -9 and restart on the same data dir: no gap, no duplicate."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from arkor_trio import BlobDataset
from arkor_trio._version import USER_AGENT

from .conftest import (
    SCOPE,
    chart_steps,
    free_port,
    log_steps,
    wait_conn,
    wait_job_status,
    wait_train_points,
)

CLI = Path(sys.executable).with_name("arkor-trio")


def _serve(data_dir: Path, port: int) -> tuple[subprocess.Popen[str], dict[str, str]]:
    """``arkor-trio serve`` in a subprocess; its banner's URLs once it listens."""
    proc = subprocess.Popen(
        [str(CLI), "serve", "--port", str(port), "--data-dir", str(data_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    banner: dict[str, str] = {}
    for line in proc.stdout:
        if line.startswith("Live page"):
            banner["login"] = line.rsplit(" ", 1)[1].strip()
        if line.startswith("  export ARKOR_TOKEN="):
            banner["token"] = line.split("=", 1)[1].strip()
            break
    assert banner.keys() == {"login", "token"}, banner
    return proc, banner


def test_backend_kill_and_restart_keeps_every_point_once(context, tmp_path):
    data_dir, port = tmp_path / "data", free_port()
    base = f"http://127.0.0.1:{port}"
    proc, banner = _serve(data_dir, port)
    try:
        headers = {"Authorization": f"Bearer {banner['token']}", "X-Arkor-Client": USER_AGENT}
        with httpx.Client(base_url=base, headers=headers) as http:
            config = {
                "model": "unsloth/gemma-4-E4B-it",
                "datasetSource": {"type": "blob", "url": BlobDataset.demo().url},
                "maxSteps": 100_000, "loggingSteps": 1, "evalSteps": 100_000, "saveSteps": 100_000,
            }  # fmt: skip
            job = http.post("/v1/jobs", params=SCOPE, json={"name": "long", "config": config})
            job_id = job.json()["job"]["id"]

        page = context.new_page()
        page.goto(banner["login"])
        page.goto(f"{base}/#job={job_id}")
        wait_train_points(page, 8, at_least=True)
        assert page.text_content("#stream-line") == "stream: 0 reconnects"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()
        page.wait_for_function(
            "() => document.querySelector('#conn').dataset.state === 'reconnecting'"
        )

        proc, banner2 = _serve(data_dir, port)  # same data dir and port; a new one-time link
        assert banner2["token"] == banner["token"]
        # The same session cookie still works: the page resumes from its last event id.
        wait_conn(page, "resumed")
        wait_job_status(page, "failed")
        assert "backend restarted" in page.text_content("#job-error")
        # The quiet line under the chart counts the reconnect and its gap (the restart's).
        line = page.text_content("#stream-line") or ""
        assert line.startswith("stream: 1 reconnect · last gap "), line
        assert float(line.rsplit(" ", 2)[-2]) > 0
        with httpx.Client(base_url=base, headers=headers) as http:
            logged = log_steps(http, job_id)
        drawn = chart_steps(page)
        assert len(logged) >= 8
        assert drawn == logged == list(range(1, len(logged) + 1))
        page.locator(".toast.failed").wait_for()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
