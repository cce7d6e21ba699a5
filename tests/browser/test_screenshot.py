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
                "maxSteps": 150, "loggingSteps": 2, "evalSteps": 25, "saveSteps": 50,
            }  # fmt: skip
            job = http.post(
                "/v1/jobs", params=SCOPE, json={"name": "support-triage", "config": config}
            )
            job_id = job.json()["job"]["id"]
            page = context.new_page()
            page.set_viewport_size({"width": 1280, "height": 960})  # the answer in the picture
            page.goto(backend.login_url)
            page.goto(f"{backend.base_url}/#job={job_id}")
            page.set_default_timeout(180_000)  # 150 real steps on a shared machine
            wait_job_status(page, "completed")
            assert chart_steps(page) == log_steps(http, job_id)
            assert chart_steps(page, "eval") == log_steps(http, job_id, "evalLoss")
            page.select_option("#ask-adapter", "final")
            # A support ticket, as the demo data holds (temperature 0.2, the page's default):
            # the toy model answers those in words, and nothing else (docs/live-page.md).
            assert page.input_value("#temperature") == "0.2"
            page.fill("#prompt", "Why was my card charged twice for the Pro plan?")
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
