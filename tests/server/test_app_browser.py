"""Browser access over real HTTP: the login link, the session cookie's checks, anonymous sign-in."""

from __future__ import annotations

import json
import stat

import httpx
import pytest

from arkor_trio._errors import ConfigError
from arkor_trio._version import USER_AGENT
from arkor_trio.cli._credentials import write_local_credentials
from arkor_trio.server import open_local_backend

from .conftest import SCOPE, create_job


def _client(backend) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=backend.base_url, verify=False, follow_redirects=False)


async def _login(backend) -> tuple[str, str]:
    async with _client(backend) as c:
        response = await c.get(backend.login_url.removeprefix(backend.base_url))
    assert response.status_code == 303
    assert response.headers["location"] == "/"
    cookie = response.headers["set-cookie"]
    name, value = cookie.split(";")[0].split("=", 1)
    return name, value


async def test_login_link_sets_a_strict_httponly_cookie_once(backend) -> None:
    async with _client(backend) as c:
        path = backend.login_url.removeprefix(backend.base_url)
        first = await c.get(path)
        assert first.status_code == 303
        cookie = first.headers["set-cookie"]
        port = backend.base_url.rsplit(":", 1)[1]
        assert cookie.startswith(f"arkor_session_{port}=")
        assert "HttpOnly" in cookie
        assert "SameSite=Strict" in cookie
        assert first.headers["referrer-policy"] == "same-origin"
        c.cookies.clear()
        again = await c.get(path)  # one-time: used up
        assert again.status_code == 403
        assert "set-cookie" not in again.headers
        assert "already used" in again.text
        # The API token works in the login form (same-origin POST only).
        form = {"token": backend.token}
        refused = await c.post("/login", data=form)
        assert refused.status_code == 403
        origin = {"Origin": backend.base_url}
        ok = await c.post("/login", data=form, headers=origin)
        assert ok.status_code == 303
        assert "set-cookie" in ok.headers
        wrong = await c.post("/login", data={"token": "nope"}, headers=origin)
        assert wrong.status_code == 403


async def test_cookie_needs_our_host_and_origin(backend, http) -> None:
    job = await create_job(http, "j", logs=1, gate="held")
    name, value = await _login(backend)
    port = backend.base_url.rsplit(":", 1)[1]
    cookie = {"Cookie": f"{name}={value}"}
    jobs = "/v1/jobs"
    cancel = f"/v1/jobs/{job['id']}/cancel"
    async with _client(backend) as c:
        ok = await c.get(jobs, params=SCOPE, headers=cookie)
        assert ok.status_code == 200
        assert [j["id"] for j in ok.json()["jobs"]] == [job["id"]]
        assert not any(h.startswith("access-control") for h in ok.headers)
        also = await c.get(jobs, params=SCOPE, headers={**cookie, "Host": f"localhost:{port}"})
        assert also.status_code == 200
        for extra, status in [
            ({"Host": f"evil.example:{port}"}, 403),                      # DNS rebinding
            ({"Origin": "http://evil.example"}, 403),                     # another site
            ({"Origin": "http://127.0.0.1:1"}, 403),                      # same site, other port
            ({"Origin": "null"}, 403),
            ({"Sec-Fetch-Site": "same-site"}, 403),
            ({"Host": f"127.0.0.1:{int(port) + 1}"}, 401),                # not this server's port
        ]:  # fmt: skip
            response = await c.get(jobs, params=SCOPE, headers={**cookie, **extra})
            assert response.status_code == status, extra
            assert job["id"] not in response.text
        bad = await c.get(jobs, params=SCOPE, headers={"Cookie": f"{name}=forged"})
        assert bad.status_code == 401
        # State-changing: needs our Origin even with the cookie.
        assert (await c.post(cancel, params=SCOPE, headers=cookie)).status_code == 403
        foreign = {**cookie, "Origin": "http://localhost:1"}
        assert (await c.post(cancel, params=SCOPE, headers=foreign)).status_code == 403
        assert (await http.get(f"/v1/jobs/{job['id']}", params=SCOPE)).json()["job"]["status"] == (
            "running"
        )
        same = {**cookie, "Origin": backend.base_url}
        assert (await c.post(cancel, params=SCOPE, headers=same)).status_code == 200


async def test_bearer_clients_are_unaffected_by_host_and_origin(backend) -> None:
    headers = {
        "Authorization": f"Bearer {backend.token}",
        "X-Arkor-Client": USER_AGENT,
        "Host": "some.proxy:1",
        "Origin": "http://elsewhere",
    }
    async with _client(backend) as c:
        assert (await c.get("/v1/jobs", params=SCOPE, headers=headers)).status_code == 200


async def test_the_page_and_its_files_are_served_with_a_strict_policy(backend) -> None:
    async with _client(backend) as c:
        page = await c.get("/")
        assert page.status_code == 200
        assert "/static/app.js" in page.text
        assert "default-src 'none'" in page.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
        for path in ("/static/app.js", "/static/chart.js", "/static/app.css", "/favicon.ico"):
            assert (await c.get(path)).status_code == 200, path
        assert (await c.get("/static/../_app.py")).status_code == 404
        assert (await c.get("/static/nothing.js")).status_code == 404
        assert (await c.post("/")).status_code == 405
        assert (await c.get("/", headers={"Host": "rebind.test"})).status_code == 403


@pytest.fixture
async def anon_backend(fake, tmp_path):
    async with open_local_backend(
        tmp_path / "anon", engine=fake.engine(), allow_anonymous=True
    ) as b:
        yield b


SDK = {"X-Arkor-Client": "arkor/0.0.3", "Content-Type": "application/json"}


async def test_anonymous_sign_in_is_off_by_default(backend) -> None:
    async with _client(backend) as c:
        response = await c.post("/v1/auth/anonymous", json={"kind": "cli"}, headers=SDK)
    assert response.status_code == 403
    assert "--allow-anonymous" in response.json()["error"]
    assert backend.token not in response.text


async def test_anonymous_sign_in_answers_the_sdk_shape(anon_backend) -> None:
    async with _client(anon_backend) as c:
        response = await c.post("/v1/auth/anonymous", json={"kind": "cli"}, headers=SDK)
        assert response.status_code == 200
        assert response.json() == {
            "token": anon_backend.token,
            "anonymousId": "local",
            "kind": "cli",
            "personalOrg": {"id": "org_local", "slug": "local", "name": "Local"},
        }
        # The token it hands out works for the SDK's next calls (projects, then jobs).
        auth = {**SDK, "Authorization": f"Bearer {response.json()['token']}"}
        made = await c.post(
            "/v1/projects", params={"orgSlug": "local"}, json={"name": "my-app", "slug": "my-app"},
            headers=auth,
        )  # fmt: skip
        assert made.status_code == 201
        from_page = {**SDK, "Origin": anon_backend.base_url}
        refused = await c.post("/v1/auth/anonymous", json={"kind": "cli"}, headers=from_page)
        assert refused.status_code == 403
        assert anon_backend.token not in refused.text
        for body, status in [
            ({"kind": "robot"}, 400), ({"kind": "cli", "x": 1}, 400), ([1], 400),
        ]:  # fmt: skip
            bad = await c.post("/v1/auth/anonymous", json=body, headers=SDK)
            assert bad.status_code == status
            assert bad.json()["field"] == "kind"
        big = await c.post("/v1/auth/anonymous", content=b"{" + b" " * 2000 + b"}", headers=SDK)
        assert big.status_code == 413
        old = await c.post("/v1/auth/anonymous", json={"kind": "cli"},
                           headers={"X-Arkor-Client": "arkor/1.0.0"})  # fmt: skip
        assert old.status_code == 426


def test_credentials_file_is_written_0600_and_never_over_a_cloud_login(tmp_path) -> None:
    path = tmp_path / ".arkor" / "credentials.json"
    content = write_local_credentials(path, "http://127.0.0.1:8787", "tok")
    assert json.loads(path.read_text()) == content == {
        "mode": "anon", "token": "tok", "anonymousId": "local",
        "arkorCloudApiUrl": "http://127.0.0.1:8787", "orgSlug": "local",
    }  # fmt: skip
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    write_local_credentials(path, "http://127.0.0.1:9000", "tok2")  # a local one: replaced
    assert json.loads(path.read_text())["token"] == "tok2"
    cloud = {"mode": "oauth", "accessToken": "a", "arkorCloudApiUrl": "https://api.arkor.ai"}
    path.write_text(json.dumps(cloud))
    with pytest.raises(ConfigError, match="--force"):
        write_local_credentials(path, "http://127.0.0.1:8787", "tok")
    assert json.loads(path.read_text()) == cloud
    path.write_text("not json")
    with pytest.raises(ConfigError):
        write_local_credentials(path, "http://127.0.0.1:8787", "tok")
    write_local_credentials(path, "http://127.0.0.1:8787", "tok", force=True)
    assert json.loads(path.read_text())["token"] == "tok"


async def test_login_form_and_resume_parameter_edges(backend, http) -> None:
    origin = {"Origin": backend.base_url}
    async with _client(backend) as c:
        big = await c.post("/login", content=b"token=" + b"a" * 5000, headers={
            **origin, "Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
        assert big.status_code == 413
        assert (await c.put("/login", headers=origin)).status_code == 405
        assert (await c.get("/login")).status_code == 200  # the form
    job = await create_job(http, "j", logs=3)
    name, value = await _login(backend)
    cookie = {"Cookie": f"{name}={value}; other=1; junk"}
    url = f"/v1/jobs/{job['id']}/events/stream"
    async with _client(backend) as c:
        # The page's ?lastEventId= resumes the stream after that event.
        resumed = await c.get(url, params={**SCOPE, "lastEventId": "3"}, headers=cookie)
        assert resumed.status_code == 200
        assert [line for line in resumed.text.splitlines() if line.startswith("id: ")] == [
            "id: 4", "id: 5", "id: 6",
        ]  # fmt: skip
        bad = await c.get(url, params={**SCOPE, "lastEventId": "x\r\ny"}, headers=cookie)
        assert bad.status_code == 400


async def test_loss_summaries_are_sampled_and_scoped(backend, http) -> None:
    job = await create_job(http, "long", logs=100)
    await http.post("/v1/projects", params={"orgSlug": "local"}, json={"slug": "other"})
    other = await http.post(
        "/v1/jobs", params={"orgSlug": "local", "projectSlug": "other"},
        json={"name": "elsewhere", "config": {"model": "fake/tiny-model"}},
    )  # fmt: skip
    assert other.status_code == 201
    # Wait for the run's end through its stream (the stream ends after the terminal event).
    async with http.stream("GET", f"/v1/jobs/{job['id']}/events/stream", params=SCOPE) as r:
        await r.aread()
    first = (await http.get("/v1/local/losses", params=SCOPE)).json()["losses"]
    assert list(first) == [job["id"]]
    curve = first[job["id"]]
    assert len(curve) == 40
    assert curve[0] == 1.0
    assert curve[-1] == 1 / 100
    assert curve == sorted(curve, reverse=True)
    again = (await http.get("/v1/local/losses", params=SCOPE)).json()["losses"]
    assert again == first  # incremental reads: nothing new, the same curve


async def test_loss_summaries_name_the_curves_still_loading(backend, http) -> None:
    # 5 pages of 1000 events per call: a run of 5200 logs takes two calls to read.
    job = await create_job(http, "longer", logs=5200)
    async with http.stream("GET", f"/v1/jobs/{job['id']}/events/stream", params=SCOPE) as r:
        await r.aread()
    first = (await http.get("/v1/local/losses", params=SCOPE)).json()
    assert first["loading"] == [job["id"]]
    second = (await http.get("/v1/local/losses", params=SCOPE)).json()
    assert second["loading"] == []
    assert second["losses"][job["id"]][-1] == 1 / 5200
