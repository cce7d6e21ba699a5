"""The live page in a real Chromium: live points, notifications, cancel, inference, access."""

from __future__ import annotations

from tests.server.conftest import FAKE_MODEL

from .conftest import (
    SCOPE,
    chart_steps,
    log_steps,
    signed_in_page,
    wait_conn,
    wait_job_status,
    wait_row_status,
    wait_train_points,
)


def _create(http, name: str, **config) -> str:
    response = http.post(
        "/v1/jobs", params=SCOPE, json={"name": name, "config": {"model": FAKE_MODEL, **config}}
    )
    assert response.status_code == 201, response.text
    return response.json()["job"]["id"]


def test_running_job_points_in_order_then_toast_title_and_notification(context, fake_backend):
    thread, fake = fake_backend
    with thread.http() as http:
        job_id = _create(http, "live-run", logs=7, gate="live")
        page = signed_in_page(context, thread.backend)
        row = page.locator(f'#job-list tr[data-job-id="{job_id}"]')
        row.click()  # from the job list into the job view
        wait_conn(page, "live")
        wait_train_points(page, 7)
        assert page.get_attribute("#job", "data-status") == "running"
        assert chart_steps(page) == [1, 2, 3, 4, 5, 6, 7]
        assert page.text_content("#job-status") == "running"
        assert page.evaluate("() => window.__notifications.length") == 0
        assert "completed" not in page.title()

        fake.gates["live"].set()  # the run goes on to completion
        wait_job_status(page, "completed")
        toast = page.locator(".toast.completed")
        toast.wait_for()
        assert "live-run completed" in toast.text_content()
        assert page.title() == "✓ live-run completed · arkor-trio"
        notes = page.evaluate("() => window.__notifications")
        assert notes == [
            {"title": "arkor-trio: live-run completed", "body": f"job {job_id}", "tag": job_id}
        ]
        assert chart_steps(page) == log_steps(http, job_id) == [1, 2, 3, 4, 5, 6, 7]
        # The list follows too (its poll), and the artifacts and final adapter appear.
        wait_row_status(page, job_id, "completed")
        assert "adapter.json" in page.text_content("#artifacts")
        assert page.errors == []


def test_reload_of_a_finished_job_redraws_every_point_without_announcing_it(context, fake_backend):
    thread, _ = fake_backend
    with thread.http() as http:
        job_id = _create(http, "done-before", logs=5)
        page = signed_in_page(context, thread.backend)
        page.goto(f"{thread.backend.base_url}/#job={job_id}")
        wait_job_status(page, "completed")
        page.reload()
        wait_job_status(page, "completed")
        page.wait_for_function(
            "() => document.querySelector('#chart svg')?.dataset.trainSteps === '1 2 3 4 5'"
        )
        # Already over when the page opened it: no toast, no title change, no notification.
        assert page.locator(".toast").count() == 0
        assert page.evaluate("() => window.__notifications.length") == 0
        assert page.title() == "arkor-trio · local"


def test_cancel_from_the_button(context, fake_backend):
    thread, _ = fake_backend
    with thread.http() as http:
        job_id = _create(http, "to-cancel", logs=2, gate="never")
        page = signed_in_page(context, thread.backend)
        page.goto(f"{thread.backend.base_url}/#job={job_id}")
        page.wait_for_function(
            "() => document.querySelector('#chart svg')?.dataset.trainSteps === '1 2'"
        )
        page.click("#cancel")
        assert page.text_content("#cancel") == "Confirm cancel"  # one click alone does nothing
        assert http.get(f"/v1/jobs/{job_id}", params=SCOPE).json()["job"]["status"] == "running"
        page.click("#cancel")
        wait_job_status(page, "cancelled")
        assert http.get(f"/v1/jobs/{job_id}", params=SCOPE).json()["job"]["status"] == "cancelled"
        page.locator(".toast.cancelled").wait_for()
        assert page.title() == "■ to-cancel cancelled · arkor-trio"
        assert page.is_hidden("#cancel")
        assert page.errors == []


def test_the_prompt_box_answers_from_the_chosen_checkpoint(context, fake_backend):
    thread, _ = fake_backend
    with thread.http() as http:
        job_id = _create(http, "ask-me", logs=3)
        page = signed_in_page(context, thread.backend)
        page.goto(f"{thread.backend.base_url}/#job={job_id}")
        wait_job_status(page, "completed")
        options = page.eval_on_selector_all("#ask-adapter option", "os => os.map(o => o.value)")
        assert options == ["checkpoint:3", "final"]
        page.select_option("#ask-adapter", "checkpoint:3")
        page.fill("#prompt", "hello?")
        page.click("#ask-send")
        page.wait_for_function("() => document.querySelector('#answer').dataset.state === 'done'")
        # The fake engine answers with the weights it loaded: the job's checkpoint at step 3.
        assert page.text_content("#answer") == f"hi from {job_id}@3"
        page.select_option("#ask-adapter", "final")
        page.click("#ask-send")
        page.wait_for_function(
            f"() => document.querySelector('#answer').textContent === 'hi from {job_id}@None'"
        )
        # The system prompt goes first; the temperature (default 0.2) goes along.
        page.click("details.system summary")
        page.fill("#system-prompt", "You triage support tickets.")
        page.fill("#temperature", "0.7")
        with page.expect_request("**/v1/inference/chat?*") as asked:
            page.click("#ask-send")
        body = asked.value.post_data_json
        assert body["messages"] == [
            {"role": "system", "content": "You triage support tickets."},
            {"role": "user", "content": "hello?"},
        ]
        assert body["temperature"] == 0.7
        page.reload()  # both are kept
        wait_job_status(page, "completed")
        assert page.input_value("#system-prompt") == "You triage support tickets."
        assert page.input_value("#temperature") == "0.7"
        assert page.errors == []


ASK_STUB = """
window.__asked = 0;
window.__notifications = [];
window.Notification = class {
  static permission = "default";
  static requestPermission() { window.__asked += 1; window.Notification.permission = "granted";
                               return Promise.resolve("granted"); }
  constructor(title, options) { window.__notifications.push({ title, ...(options || {}) }); }
};
"""


def test_permission_is_asked_from_a_click_and_a_job_ending_elsewhere_notifies(
    browser, fake_backend
):
    thread, fake = fake_backend
    context = browser.new_context()
    context.add_init_script(ASK_STUB)
    try:
        with thread.http() as http:
            job_id = _create(http, "background", logs=1, gate="bg")
            page = signed_in_page(context, thread.backend)
            wait_row_status(page, job_id, "running")  # listed, not opened
            assert page.evaluate("() => window.__asked") == 0  # never asked on load
            page.click("#notify-btn")
            page.wait_for_function("() => window.__asked === 1")
            page.locator("#notify-btn").wait_for(state="hidden")

            fake.gates["bg"].set()  # the job ends while the page shows only the list
            wait_row_status(page, job_id, "completed")
            page.locator(".toast.completed").wait_for()
            assert page.title() == "✓ background completed · arkor-trio"
            notes = page.evaluate("() => window.__notifications")
            assert [n["title"] for n in notes] == ["arkor-trio: background completed"]
            page.click("h2")  # the next click in the page restores the title
            assert page.title() == "arkor-trio · local"
    finally:
        context.close()
