"""The live page's sessions: random per login, server-side, bound, expiring, revocable (item 3)."""

from __future__ import annotations

import socket
import time

import httpx

from arkor_trio.cli import main
from arkor_trio.server import open_local_backend, revoke_sessions
from arkor_trio.server._browser import BrowserAccess
from arkor_trio.server._sessions import SESSION_MAX_AGE, SessionStore
from arkor_trio.server._store import DB_NAME, Store

from .conftest import SCOPE

AGENT = "Mozilla/5.0 (X11; Linux x86_64) test-browser"


async def _sign_in(base_url: str, token: str, agent: str = AGENT) -> tuple[str, str]:
    """Log in with the API token through the form; the session cookie's (name, value)."""
    async with httpx.AsyncClient(base_url=base_url, follow_redirects=False) as c:
        response = await c.post(
            "/login", data={"token": token}, headers={"Origin": base_url, "User-Agent": agent}
        )
    assert response.status_code == 303, response.text
    name, value = response.headers["set-cookie"].split(";")[0].split("=", 1)
    return name, value


async def _jobs(base_url: str, cookie: tuple[str, str], agent: str = AGENT) -> int:
    headers = {"Cookie": f"{cookie[0]}={cookie[1]}", "User-Agent": agent}
    async with httpx.AsyncClient(base_url=base_url) as c:
        return (await c.get("/v1/jobs", params=SCOPE, headers=headers)).status_code


async def test_each_login_is_a_new_random_session_bound_to_the_browser(backend) -> None:
    first = await _sign_in(backend.base_url, backend.token)
    second = await _sign_in(backend.base_url, backend.token)
    assert first[0] == second[0]
    assert first[1] != second[1]
    assert len(first[1]) >= 40
    assert await _jobs(backend.base_url, first) == 200
    assert await _jobs(backend.base_url, second) == 200
    # Replayed by another program (another User-Agent), the cookie alone gets nothing.
    assert await _jobs(backend.base_url, first, agent="curl/8.0") == 401
    # Only a hash is kept: the database never holds the cookie's value.
    raw = (backend.data_dir / DB_NAME).read_bytes()
    assert first[1].encode() not in raw


async def test_revoking_signs_every_browser_out_of_a_running_backend(backend, capsys) -> None:
    cookies = [await _sign_in(backend.base_url, backend.token) for _ in range(2)]
    assert main(["sessions", "revoke", "--data-dir", str(backend.data_dir)]) == 0
    assert capsys.readouterr().out == "revoked 2 browser session(s)\n"
    for cookie in cookies:
        assert await _jobs(backend.base_url, cookie) == 401
    assert revoke_sessions(backend.data_dir) == 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_a_restart_keeps_sessions_and_a_new_token_ends_them(fake, tmp_path) -> None:
    data_dir, port = tmp_path / "data", _free_port()
    async with open_local_backend(data_dir, port, engine=fake.engine()) as b:
        cookie = await _sign_in(b.base_url, b.token)
    async with open_local_backend(data_dir, port, engine=fake.engine()) as b:
        assert await _jobs(b.base_url, cookie) == 200  # kept across the restart
    (data_dir / "token").unlink()  # a rotation: the next start makes a new token
    async with open_local_backend(data_dir, port, engine=fake.engine()) as b:
        assert await _jobs(b.base_url, cookie) == 401


def test_a_session_expires_after_its_max_age(tmp_path, monkeypatch) -> None:
    store = Store.in_dir(tmp_path)
    sessions = SessionStore(store.path, "token")
    try:
        value = sessions.create(b"127.0.0.1:1", b"agent")
        assert sessions.valid(value, b"127.0.0.1:1", b"agent")
        assert not sessions.valid(value, b"localhost:1", b"agent")  # another host name
        now = time.time()
        monkeypatch.setattr(time, "time", lambda: now + SESSION_MAX_AGE + 1)
        assert not sessions.valid(value, b"127.0.0.1:1", b"agent")
    finally:
        sessions.close()
        store.close()


def test_the_cookie_takes_the_host_prefix_over_https() -> None:
    access = BrowserAccess("token")
    assert access.set_cookie(8787, "v").startswith(b"arkor_session_8787=v; Path=/; HttpOnly")
    secure = access.set_cookie(8787, "v", secure=True)
    assert secure.startswith(b"__Host-arkor_session_8787=v; Path=/;")
    assert secure.endswith(b"; Secure")
    assert b"Domain" not in secure


def test_revoking_without_a_backend_database_is_a_usage_error(tmp_path, capsys) -> None:
    assert main(["sessions", "revoke", "--data-dir", str(tmp_path / "none")]) == 2
    assert "no local backend database" in capsys.readouterr().err


def test_a_start_on_a_locked_database_makes_the_table_at_the_first_login(tmp_path) -> None:
    import sqlite3

    store = Store.in_dir(tmp_path)
    other = sqlite3.connect(store.path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    start = time.monotonic()
    sessions = SessionStore(store.path, "token")  # neither waits nor fails
    try:
        assert time.monotonic() - start < 1
        assert not sessions.valid("anything", b"h", b"a")
        other.execute("ROLLBACK")
        value = sessions.create(b"h", b"a")
        assert sessions.valid(value, b"h", b"a")
    finally:
        other.close()
        sessions.close()
        store.close()
