"""Resolution of base URL, token and scope: precedence, files, and the /v1/me completion."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path  # noqa: TC003  # fixtures' annotations, kept visible

import pytest

from arkor_trio._errors import ConfigError
from arkor_trio.wire._config import (
    DEFAULT_BASE_URL,
    ResolvedConfig,
    pick_project,
    resolve_config,
    scope_from_me,
)

TOKEN = "tok-7f3a-secret"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def cwd(tmp_path: Path) -> Path:
    path = tmp_path / "project"
    path.mkdir()
    return path


def write_json(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def creds(home: Path, data: object) -> Path:
    path = home / ".arkor" / "credentials.json"
    write_json(path, data)
    return path


def state(cwd: Path, data: object) -> Path:
    path = cwd / ".arkor" / "state.json"
    write_json(path, data)
    return path


def resolve(home: Path, cwd: Path, env: dict[str, str] | None = None, **kw) -> ResolvedConfig:
    return resolve_config(env=env or {}, home=home, cwd=cwd, **kw)


def test_defaults_without_any_source(home, cwd):
    config = resolve(home, cwd)
    assert config.base_url == DEFAULT_BASE_URL == "https://api.arkor.ai"
    assert config.token is None
    assert (config.org_slug, config.project_slug) == (None, None)
    with pytest.raises(ConfigError, match="no API token: set ARKOR_TOKEN") as info:
        config.require_token()
    assert info.value.field == "token"
    assert str(home / ".arkor" / "credentials.json") in str(info.value)
    assert "run `arkor-trio serve` and export the ARKOR_CLOUD_API_URL and ARKOR_TOKEN" in str(
        info.value
    )


@pytest.mark.parametrize("layers", [("arg", "env", "file"), ("env", "file"), ("file",), ()])
def test_base_url_and_token_precedence(home, cwd, layers):
    kw: dict[str, str] = {}
    env: dict[str, str] = {}
    if "arg" in layers:
        kw = {"base_url": "http://arg.test/", "token": "t-arg"}
    if "env" in layers:
        env = {"ARKOR_CLOUD_API_URL": "http://env.test//", "ARKOR_TOKEN": "t-env"}
    if "file" in layers:
        creds(home, {"mode": "anon", "token": "t-file", "arkorCloudApiUrl": "http://file.test/"})
    config = resolve(home, cwd, env, **kw)
    source = layers[0] if layers else None
    expected_url = f"http://{source}.test" if source else DEFAULT_BASE_URL
    assert config.base_url == expected_url  # trailing slashes stripped from every source
    assert config.token == (f"t-{source}" if source else None)


def test_base_url_and_token_resolve_independently(home, cwd):
    creds(home, {"mode": "anon", "token": "t-file", "arkorCloudApiUrl": "http://file.test"})
    config = resolve(home, cwd, {"ARKOR_TOKEN": "t-env"})
    assert (config.base_url, config.token) == ("http://file.test", "t-env")


def test_empty_environment_values_count_as_unset(home, cwd):
    creds(home, {"mode": "anon", "token": "t-file", "arkorCloudApiUrl": "http://file.test"})
    config = resolve(home, cwd, {"ARKOR_CLOUD_API_URL": "", "ARKOR_TOKEN": ""})
    assert (config.base_url, config.token) == ("http://file.test", "t-file")


def test_reads_os_environ_and_path_home_by_default(monkeypatch, home, cwd):
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("ARKOR_CLOUD_API_URL", "http://from-env.test/")
    monkeypatch.delenv("ARKOR_TOKEN", raising=False)
    creds(home, {"mode": "anon", "token": "t-home"})
    state(cwd, {"orgSlug": "o", "projectSlug": "p"})
    config = resolve_config()
    assert config.base_url == "http://from-env.test"
    assert config.token == "t-home"
    assert (config.org_slug, config.project_slug) == ("o", "p")


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"mode": "anon", "token": "a", "accessToken": "b"}, "a"),
        ({"mode": "oauth", "token": "a", "accessToken": "b"}, "b"),
        ({"mode": "oauth", "token": "a"}, None),
        ({"mode": "anon", "accessToken": "b"}, None),
        ({"token": "a"}, "a"),
        ({"mode": "future", "accessToken": "b"}, "b"),
        ({"mode": "anon", "token": ""}, None),
        ({"mode": "anon", "token": 42}, None),
    ],
)
def test_token_from_credentials_by_mode(home, cwd, data, expected):
    creds(home, data)
    assert resolve(home, cwd).token == expected


@pytest.mark.parametrize(
    "content", [b"{not json", b"[1, 2]", b'"text"', b"\xff\xfe{}", b""], ids=repr
)
def test_invalid_credentials_file_is_absent_with_a_warning(home, cwd, caplog, content):
    path = home / ".arkor" / "credentials.json"
    path.parent.mkdir()
    path.write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="arkor_trio.config"):
        config = resolve(home, cwd)
    assert (config.base_url, config.token) == (DEFAULT_BASE_URL, None)
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert str(path) in caplog.records[0].getMessage()


def test_unreadable_credentials_file_names_the_path(home, cwd):
    path = home / ".arkor" / "credentials.json"
    path.mkdir(parents=True)  # reading a directory fails like an unreadable file
    with pytest.raises(ConfigError, match="cannot read") as info:
        resolve(home, cwd)
    assert str(path) in str(info.value)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads any file")
def test_credentials_without_read_permission_raise(home, cwd):
    path = creds(home, {"mode": "anon", "token": "x"})
    path.chmod(0)
    with pytest.raises(ConfigError, match=str(path)):
        resolve(home, cwd)


def test_files_are_not_read_when_arguments_decide(home, cwd):
    (home / ".arkor" / "credentials.json").mkdir(parents=True)
    (cwd / ".arkor" / "state.json").mkdir(parents=True)
    config = resolve(home, cwd, base_url="http://x.test", token="t", org_slug="o", project_slug="p")
    assert (config.base_url, config.token, config.org_slug) == ("http://x.test", "t", "o")


def test_scope_from_state_file(home, cwd):
    state(cwd, {"orgSlug": "acme", "projectSlug": "bot", "projectId": "p1"})
    config = resolve(home, cwd)
    assert (config.org_slug, config.project_slug) == ("acme", "bot")


@pytest.mark.parametrize(
    ("explicit", "expected"),
    [
        ({"org_slug": "x", "project_slug": "y"}, ("x", "y")),
        ({"org_slug": "acme"}, ("acme", "bot")),  # agrees with the file: completed from it
        ({"org_slug": "other"}, ("other", None)),  # contradicts it: the file is ignored
        ({"project_slug": "bot"}, ("acme", "bot")),
        ({"project_slug": "else"}, (None, "else")),
    ],
)
def test_explicit_scope_beats_state_file(home, cwd, explicit, expected):
    state(cwd, {"orgSlug": "acme", "projectSlug": "bot"})
    config = resolve(home, cwd, **explicit)
    assert (config.org_slug, config.project_slug) == expected


@pytest.mark.parametrize(
    "data", [{"orgSlug": "acme"}, {"projectSlug": "bot"}, {"orgSlug": "", "projectSlug": "b"}, []]
)
def test_partial_or_invalid_state_file_is_absent(home, cwd, data):
    state(cwd, data)
    config = resolve(home, cwd)
    assert (config.org_slug, config.project_slug) == (None, None)


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"base_url": ""}, "base_url"),
        ({"base_url": "api.arkor.ai"}, "base_url"),
        ({"base_url": "ftp://x"}, "base_url"),
        ({"base_url": "http://"}, "base_url"),
        ({"token": ""}, "token"),
        ({"token": 5}, "token"),
        ({"org_slug": " "}, "org_slug"),
        ({"project_slug": ""}, "project_slug"),
    ],
)
def test_invalid_explicit_values_name_the_field(home, cwd, kw, field):
    with pytest.raises(ConfigError) as info:
        resolve(home, cwd, **kw)
    assert info.value.field == field
    assert field in str(info.value)


def test_bad_base_url_in_environment_names_the_variable(home, cwd):
    with pytest.raises(ConfigError, match="ARKOR_CLOUD_API_URL"):
        resolve(home, cwd, {"ARKOR_CLOUD_API_URL": "localhost:8787"})


def test_repr_hides_the_token(home, cwd):
    config = resolve(home, cwd, token=TOKEN)
    assert TOKEN not in repr(config)
    assert config.require_token() == TOKEN


# --- completing the scope from GET /v1/me ------------------------------------------------------

ME = {
    "user": {"id": "u1"},
    "orgs": [{"slug": "first"}, {"slug": "second"}],
    "defaultProject": {"orgSlug": "second", "projectSlug": "main"},
}


def config_with(org: str | None = None, project: str | None = None) -> ResolvedConfig:
    return ResolvedConfig(base_url="http://x", org_slug=org, project_slug=project)


@pytest.mark.parametrize(
    ("org", "project", "expected"),
    [
        (None, None, ("second", "main")),
        ("second", None, ("second", "main")),
        (None, "main", ("second", "main")),
        ("first", None, ("first", None)),  # disagrees with defaultProject: org kept, project open
        (None, "other", ("first", "other")),
    ],
)
def test_scope_from_me_prefers_an_agreeing_default_project(org, project, expected):
    assert scope_from_me(ME, config_with(org, project)) == expected


def test_scope_from_me_without_default_takes_the_first_org():
    me = {"orgs": [{"name": "no slug"}, {"slug": "acme"}, {"slug": "b"}]}
    assert scope_from_me(me, config_with()) == ("acme", None)


@pytest.mark.parametrize("me", [{}, {"orgs": []}, {"orgs": "acme"}, {"orgs": [{"slug": ""}]}])
def test_scope_from_me_without_orgs_is_a_config_error(me):
    with pytest.raises(ConfigError, match="which organisation") as info:
        scope_from_me(me, config_with())
    assert info.value.field == "org_slug"
    assert ".arkor/state.json" in str(info.value)


def test_pick_project():
    assert pick_project("acme", [{"slug": "only", "id": "p"}]) == "only"
    with pytest.raises(ConfigError, match="org 'acme' has no projects"):
        pick_project("acme", [])
    with pytest.raises(ConfigError, match="projects a, b") as info:
        pick_project("acme", [{"slug": "a"}, {"slug": "b"}])
    assert info.value.field == "project_slug"
    assert "ArkorClient(org_slug=..., project_slug=...)" in str(info.value)
