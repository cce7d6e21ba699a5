"""A real NumPy run followed in the page, asked from its final adapter, and photographed.

The screenshot goes to the test's tmp dir; ``ARKOR_UPDATE_SCREENSHOT=1`` also copies it to
docs/live-page.png (a normal run never touches the repo).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from arkor_trio import BlobDataset

from .conftest import SCOPE, BackendThread, chart_steps, free_port, log_steps, wait_job_status

DOCS_PNG = Path(__file__).resolve().parents[2] / "docs" / "live-page.png"


def test_real_run_live_then_ask_the_final_adapter(context, tmp_path):
    thread = BackendThread(tmp_path / "data", None, free_port())
    backend = thread.start()
    try:
        with thread.http() as http:
            config = {
                "model": "unsloth/gemma-4-E4B-it",
                "datasetSource": {"type": "blob", "url": BlobDataset.demo().url},
                "maxSteps": 90, "loggingSteps": 2, "evalSteps": 15, "saveSteps": 30,
            }  # fmt: skip
            job = http.post(
                "/v1/jobs", params=SCOPE, json={"name": "support-triage", "config": config}
            )
            job_id = job.json()["job"]["id"]
            page = context.new_page()
            page.goto(backend.login_url)
            page.goto(f"{backend.base_url}/#job={job_id}")
            wait_job_status(page, "completed")
            assert chart_steps(page) == log_steps(http, job_id)
            assert chart_steps(page, "eval") == log_steps(http, job_id, "evalLoss")
            page.select_option("#ask-adapter", "final")
            page.fill("#prompt", "My invoice was charged twice this month.")
            page.click("#ask-send")
            page.wait_for_function(
                "() => document.querySelector('#answer').dataset.state === 'done'"
            )
            assert page.text_content("#answer").strip()
            page.mouse.move(900, 430)  # a readout on the chart
            shot = tmp_path / "live-page.png"
            page.screenshot(path=str(shot))
            assert shot.stat().st_size > 10_000
            if os.environ.get("ARKOR_UPDATE_SCREENSHOT") == "1":
                shutil.copyfile(shot, DOCS_PNG)
    finally:
        thread.stop()
