"""The live page on a long run, at 900 px and 1,600 px wide, photographed.

A run at step 2,500 of 100,000 planned is simulated by the fake engine emitting the events a
real run would have logged by then (a noisy decaying loss every 10 steps, eval every 250,
a checkpoint every 100: 25 of them), then waiting; a second job waits queued behind it. The
screenshots go to the test's tmp dir (``ARKOR_SCREENSHOT_DIR`` keeps copies where it names).
"""

from __future__ import annotations

import math
import os
import random
import shutil
from pathlib import Path

import pytest

from tests.server.conftest import FAKE_MODEL

from .conftest import SCOPE, signed_in_page, wait_train_points

PLANNED = 100_000
LAST_STEP = 2_500
LOG_EVERY = 10


def _long_run(emit) -> None:
    rng = random.Random(7)
    for step in range(LOG_EVERY, LAST_STEP + 1, LOG_EVERY):
        loss = 0.6 + 3.2 * math.exp(-step / 400) + rng.uniform(-0.12, 0.12)
        event = {"type": "training.log", "step": step, "loss": loss, "learningRate": 2e-4,
                 "samplesPerSecond": 183.0}  # fmt: skip
        if step % 250 == 0:
            event["evalLoss"] = 0.7 + 3.0 * math.exp(-step / 420)
        emit(event)
        if step % 100 == 0:
            path = f"models/job/checkpoint-{step}.npz"
            emit({"type": "checkpoint.saved", "step": step, "artifacts": [{"pathname": path}]})


def _create(http, name: str, **config) -> str:
    body = {"name": name, "config": {"model": FAKE_MODEL, **config}}
    response = http.post("/v1/jobs", params=SCOPE, json=body)
    assert response.status_code == 201, response.text
    return str(response.json()["job"]["id"])


# Layout facts the page must keep at every width (each an empty list when it holds).
LAYOUT_PROBLEMS = """() => {
  const out = [];
  const doc = document.documentElement;
  if (doc.scrollWidth > window.innerWidth) out.push(`page ${doc.scrollWidth}px wide`);
  const card = document.querySelector('aside.jobs').getBoundingClientRect();
  const table = document.querySelector('#job-list').getBoundingClientRect();
  if (table.right > card.right + 0.5) out.push(`job table overflows by ${table.right - card.right}`)
  for (const v of document.querySelectorAll('.stat .v')) {
    if (v.scrollWidth > v.clientWidth || v.getClientRects().length !== 1 || v.offsetHeight > 30)
      out.push(`stat wraps or is cut: ${v.textContent}`);
  }
  for (const s of document.querySelectorAll('#checkpoints .ck-step')) {
    if (s.offsetHeight > 22) out.push(`checkpoint label wraps: ${s.textContent}`);
  }
  const svg = document.querySelector('#chart svg');
  const width = svg.viewBox.baseVal.width;
  for (const t of svg.querySelectorAll('.axis text')) {
    const b = t.getBBox();
    if (b.x < -0.5 || b.x + b.width > width + 0.5) out.push(`axis label cut: ${t.textContent}`);
  }
  return out;
}"""


@pytest.mark.parametrize(("width", "height"), [(900, 1000), (1600, 1000)])
def test_long_run_layout_axis_scale_smoothing_and_queue(
    browser, fake_backend, tmp_path, width, height
):
    thread, fake = fake_backend
    fake.scripts["long"] = _long_run
    context = browser.new_context(viewport={"width": width, "height": height})
    try:
        with thread.http() as http:
            job_id = _create(http, "long-run-with-a-rather-long-name", logs=0, script="long",
                             gate="long", maxSteps=PLANNED)  # fmt: skip
            queued_id = _create(http, "next-in-line", logs=3)
            page = signed_in_page(context, thread.backend)
            page.evaluate("() => localStorage.clear()")

            # The queued job says what it waits behind.
            page.goto(f"{thread.backend.base_url}/#job={queued_id}")
            page.wait_for_function(
                "() => document.querySelector('#chart .empty-note')?.textContent"
                ".includes('long-run-with-a-rather-long-name')"
            )
            note = page.text_content("#chart .empty-note")
            assert note.startswith("queued behind the running job")

            page.goto(f"{thread.backend.base_url}/#job={job_id}")
            wait_train_points(page, LAST_STEP // LOG_EVERY)
            page.wait_for_function("() => document.querySelectorAll('#checkpoints li').length>24")
            svg = "#chart svg"
            # The x axis follows the data; the planned length is named.
            assert page.get_attribute(svg, "data-x-max") == str(LAST_STEP)
            assert page.text_content("#planned") == "steps 0\u20132,500 of 100,000 planned"
            assert page.text_content(".stat .v") == "2,500 / 100,000"
            assert page.evaluate(LAYOUT_PROBLEMS) == []
            # 25 checkpoints scroll inside their list; the prompt box stays in reach.
            box = page.evaluate("""() => {
                const l = document.querySelector('#checkpoints');
                return [l.scrollHeight, l.clientHeight];
            }""")
            assert box[0] > box[1] <= 180
            assert "step 1,000" in page.text_content("#checkpoints")
            if width >= 1600:  # two columns: the prompt box is on the first screen
                ask = page.locator("#prompt").bounding_box()
                assert ask is not None
                assert ask["y"] + ask["height"] <= height
            # Smoothing (on by default) draws the raw curve faintly behind the smoothed one.
            assert page.get_attribute(svg, "data-smoothing") == "0.6"
            assert page.locator("#chart path.train.raw").count() == 1
            shot = tmp_path / f"long-run-{width}.png"
            page.screenshot(path=str(shot), full_page=True)

            page.check("#log-scale")
            page.wait_for_function(
                "() => document.querySelector('#chart svg').dataset.scale === 'log'"
            )
            page.fill("#smoothing", "0")
            page.wait_for_function(
                "() => document.querySelector('#chart svg').dataset.smoothing === '0'"
            )
            assert page.locator("#chart path.train.raw").count() == 0
            assert page.evaluate(LAYOUT_PROBLEMS) == []
            page.reload()  # the choices are kept
            wait_train_points(page, LAST_STEP // LOG_EVERY)
            assert page.get_attribute(svg, "data-scale") == "log"
            page.screenshot(path=str(tmp_path / f"long-run-{width}-log.png"), full_page=True)
            assert page.errors == []
            keep = os.environ.get("ARKOR_SCREENSHOT_DIR")
            if keep:
                for png in tmp_path.glob("long-run-*.png"):
                    shutil.copyfile(png, Path(keep) / png.name)
    finally:
        context.close()


def test_sparkline_loading_is_not_no_data(context, fake_backend):
    thread, _ = fake_backend
    page = signed_in_page(context, thread.backend)
    states = page.evaluate("""() => [
        window.ArkorChart.sparkline([], 'loading'),
        window.ArkorChart.sparkline([], 'done'),
        window.ArkorChart.sparkline([3, 2, 1], 'loading'),
    ].map((s) => [s.dataset.state, s.getAttribute('aria-label')])""")
    assert states == [
        ["loading", "loss curve loading"],
        ["none", "no loss logged"],
        ["data", "loss 3.00 to 1.00"],
    ]
