"""Other origins in the same (signed-in) browser get nothing from the backend and cancel nothing."""

from __future__ import annotations

import functools
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.server.conftest import FAKE_MODEL

from .conftest import SCOPE, signed_in_page

EVIL = "<!doctype html><title>evil</title><p>hi</p>"


@pytest.fixture
def evil_server(tmp_path):
    """Another origin on this machine (127.0.0.1, another port) serving an attacker's page."""
    root = tmp_path / "evil"
    root.mkdir()
    (root / "evil.html").write_text(EVIL)
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(root))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


def test_a_cross_origin_page_cannot_read_the_api_or_cancel(context, fake_backend, evil_server):
    thread, _ = fake_backend
    backend = thread.backend
    with thread.http() as http:
        created = http.post(
            "/v1/jobs",
            params=SCOPE,
            json={"name": "victim", "config": {"model": FAKE_MODEL, "gate": "g"}},
        )
        job_id = created.json()["job"]["id"]
        signed_in_page(context, backend).close()  # the browser now holds the session cookie
        seen: list[tuple[str, int]] = []
        context.on("response", lambda r: seen.append((r.url, r.status)))

        # Same site (127.0.0.1), another port: the SameSite cookie IS sent, the Origin is not ours.
        evil_origin = evil_server
        page = context.new_page()
        page.goto(f"{evil_origin}/evil.html")
        api = backend.base_url
        read = page.evaluate(
            """async (url) => {
                try {
                    const r = await fetch(url, {credentials: "include"});
                    return "read " + r.status + await r.text();
                } catch (e) { return "blocked"; }
            }""",
            f"{api}/v1/jobs?orgSlug=local&projectSlug=default",
        )
        assert read == "blocked"  # no CORS headers: the page cannot read any answer
        stream = page.evaluate(
            """(url) => new Promise((done) => {
                const es = new EventSource(url, {withCredentials: true});
                es.onmessage = () => done("message");
                es.addEventListener("training.started", () => done("event"));
                es.onerror = () => { es.close(); done("error"); };
            })""",
            f"{api}/v1/jobs/{job_id}/events/stream?orgSlug=local&projectSlug=default",
        )
        assert stream == "error"
        # A form post (a "simple" request, no preflight) is refused too.
        action = f"{api}/v1/jobs/{job_id}/cancel?orgSlug=local&projectSlug=default"
        page.set_content(f'<form method="post" action="{action}"><button id=go>go</button></form>')
        with page.expect_response(lambda r: "/cancel" in r.url) as posted:
            page.click("#go")
        assert posted.value.status == 403

        # A DNS-rebinding page: rebind.test resolves to our server (see the browser's launch
        # args), so its fetches are "same-origin" for the browser; the Host check answers 403.
        # (The page itself is whatever the attacker served before the name moved; here, our 403.)
        rebind = f"http://rebind.test:{thread.port}"
        assert page.goto(f"{rebind}/").status == 403
        answer = page.evaluate(
            """async () => { const r = await fetch("/v1/jobs?orgSlug=local&projectSlug=default");
                             return [r.status, await r.text()]; }"""
        )
        assert answer[0] == 403
        assert job_id not in answer[1]
        cancel = page.evaluate(
            "async (url) => (await fetch(url, {method: 'POST'})).status",
            f"/v1/jobs/{job_id}/cancel?orgSlug=local&projectSlug=default",
        )
        assert cancel == 403

        # Every answer the backend gave those pages was a 401/403, and the job still runs.
        answered = [
            status for url, status in seen if url.startswith((api, rebind)) and "/v1/" in url
        ]
        assert answered
        assert set(answered) <= {401, 403}, seen
        assert http.get(f"/v1/jobs/{job_id}", params=SCOPE).json()["job"]["status"] == "running"


def test_without_the_login_link_the_page_asks_to_sign_in(context, fake_backend):
    thread, _ = fake_backend
    backend = thread.backend
    page = context.new_page()
    page.goto(backend.base_url + "/")
    page.locator("#signin").wait_for()
    page.wait_for_function("() => document.querySelector('#conn').dataset.state === 'signed-out'")
    assert page.is_hidden("#main")
    # A used link does not sign in a second browser; the token form does.
    used = context.new_page()
    used.goto(backend.login_url)
    other = context.browser.new_context()
    try:
        second = other.new_page()
        response = second.goto(backend.login_url)
        assert response.status == 403
        assert "already used" in second.text_content(".login-note")
        second.fill("input[name=token]", backend.token)
        second.click("button[type=submit]")
        second.wait_for_url(backend.base_url + "/")
        second.wait_for_function("() => document.querySelector('#conn').dataset.state === 'live'")
    finally:
        other.close()
