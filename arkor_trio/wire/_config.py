"""Where the client's base URL, API token and project scope come from.

Each setting is taken from the first source that has it:

* base URL: the explicit argument > ``ARKOR_CLOUD_API_URL`` > ``arkorCloudApiUrl`` in
  ``~/.arkor/credentials.json`` > ``https://api.arkor.ai``; trailing slashes are stripped.
* token: the explicit argument > ``ARKOR_TOKEN`` > the credentials file (``token`` for
  ``"mode": "anon"``, ``accessToken`` for ``"mode": "oauth"``).
* scope (org and project slugs): the explicit arguments > ``<cwd>/.arkor/state.json``
  (``orgSlug``, ``projectSlug``) > unresolved (the client then asks ``GET /v1/me``).

An *empty* environment variable counts as unset. The TypeScript SDK honours an empty
``ARKOR_CLOUD_API_URL``, but the only thing an empty base URL can do is turn every request into a
relative-URL error far from its cause; an empty ``ARKOR_TOKEN`` likewise could only produce 401s.

Files: a missing file is absent; a file that is not valid UTF-8 JSON holding an object is treated
as absent with a logged warning (the CLI rewrites such files); a file that exists but cannot be read
(permissions, a directory) raises :class:`ConfigError` naming the path, as nothing else would fix
it. Files are read only when an earlier source did not already decide the setting.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import attrs

from .._errors import ConfigError

__all__ = [
    "DEFAULT_BASE_URL",
    "ResolvedConfig",
    "pick_project",
    "resolve_config",
    "scope_from_me",
]

logger = logging.getLogger("arkor_trio.config")

DEFAULT_BASE_URL = "https://api.arkor.ai"
_ENV_BASE_URL = "ARKOR_CLOUD_API_URL"
_ENV_TOKEN = "ARKOR_TOKEN"
_SCOPE_FIX = (
    "Pass ArkorClient(org_slug=..., project_slug=...) or write .arkor/state.json with "
    '{"orgSlug": ..., "projectSlug": ...}'
)


@attrs.frozen(kw_only=True)
class ResolvedConfig:
    """The settings a client uses, after resolution.

    Attributes:
        base_url: Absolute ``http(s)`` URL without trailing slash.
        token: The bearer token, or None when no source had one (never shown in the repr).
        org_slug: The organisation slug, or None when it must be asked from ``GET /v1/me``.
        project_slug: The project slug, or None likewise.
        credentials_path: The credentials file consulted (for error messages).
    """

    base_url: str
    token: str | None = attrs.field(default=None, repr=False)
    org_slug: str | None = None
    project_slug: str | None = None
    credentials_path: Path | None = None

    def require_token(self) -> str:
        """Return the token.

        Raises:
            ConfigError: No source provided a token; the message says how to provide one.
        """
        if self.token is None:
            where = self.credentials_path or "~/.arkor/credentials.json"
            raise ConfigError(
                f"no API token: set {_ENV_TOKEN}, pass ArkorClient(token=...), or sign in with "
                f"the Arkor CLI (`arkor login`), which writes {where}. For the local backend "
                "(no account needed), run `arkor-trio serve` and export the ARKOR_CLOUD_API_URL "
                f"and {_ENV_TOKEN} it prints",
                field="token",
            )
        return self.token


def _read_json_object(path: Path) -> dict[str, Any] | None:
    """Read a JSON object from ``path``; None if missing or invalid (with a warning)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(
            f"cannot read {path}: {exc.strerror or exc}; fix its permissions or remove it",
            field=str(path),
        ) from exc
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        logger.warning("ignoring %s: not valid JSON (%s)", path, exc)
        return None
    if not isinstance(data, dict):
        logger.warning("ignoring %s: expected a JSON object, got %s", path, type(data).__name__)
        return None
    return data


def _nonempty(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _check_explicit(name: str, value: str | None) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{name} must be a non-empty string, got {value!r}", field=name)
    return value


def _normalise_base_url(url: str, source: str) -> str:
    stripped = url.strip().rstrip("/")
    parts = urlsplit(stripped)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(
            f"base URL from {source} must be an absolute http(s) URL, got {url!r}",
            field="base_url",
        )
    return stripped


def _token_from_credentials(creds: Mapping[str, Any]) -> str | None:
    mode = creds.get("mode")
    if mode == "oauth":
        return _nonempty(creds.get("accessToken"))
    if mode == "anon":
        return _nonempty(creds.get("token"))
    # Unknown or missing mode: the SDK does not validate the file either; take what is there.
    return _nonempty(creds.get("token")) or _nonempty(creds.get("accessToken"))


def resolve_config(
    base_url: str | None = None,
    token: str | None = None,
    *,
    org_slug: str | None = None,
    project_slug: str | None = None,
    env: Mapping[str, str] | None = None,
    home: Path | None = None,
    cwd: Path | None = None,
) -> ResolvedConfig:
    """Resolve the client settings from arguments, environment and files (see the module doc).

    Args:
        base_url: Explicit base URL (wins over everything).
        token: Explicit API token.
        org_slug: Explicit organisation slug.
        project_slug: Explicit project slug.
        env: The environment to read (default ``os.environ``).
        home: The home directory holding ``.arkor/credentials.json`` (default ``Path.home()``).
        cwd: The project directory holding ``.arkor/state.json`` (default ``Path.cwd()``).

    Returns:
        The resolved settings; a missing token is not an error here (see
        :meth:`ResolvedConfig.require_token`).

    Raises:
        ConfigError: An explicit value is empty or not a string, a base URL is not absolute
            http(s), or a file exists but cannot be read.
    """
    environ = os.environ if env is None else env
    base_url = _check_explicit("base_url", base_url)
    token = _check_explicit("token", token)
    org_slug = _check_explicit("org_slug", org_slug)
    project_slug = _check_explicit("project_slug", project_slug)

    resolved_url: str | None = None
    if base_url is not None:
        resolved_url = _normalise_base_url(base_url, "the base_url argument")
    elif env_url := environ.get(_ENV_BASE_URL, "").strip():
        resolved_url = _normalise_base_url(env_url, _ENV_BASE_URL)
    resolved_token = token or environ.get(_ENV_TOKEN, "").strip() or None

    credentials_path = (home if home is not None else Path.home()) / ".arkor" / "credentials.json"
    if resolved_url is None or resolved_token is None:
        creds = _read_json_object(credentials_path) or {}
        if resolved_url is None and (file_url := _nonempty(creds.get("arkorCloudApiUrl"))):
            resolved_url = _normalise_base_url(file_url, str(credentials_path))
        if resolved_token is None:
            resolved_token = _token_from_credentials(creds)

    if org_slug is None or project_slug is None:
        state_path = (cwd if cwd is not None else Path.cwd()) / ".arkor" / "state.json"
        state = _read_json_object(state_path) or {}
        state_org = _nonempty(state.get("orgSlug"))
        state_project = _nonempty(state.get("projectSlug"))
        # A partial state file is absent; one contradicting an explicit slug is ignored.
        if (
            state_org
            and state_project
            and org_slug in (None, state_org)
            and project_slug in (None, state_project)
        ):
            org_slug, project_slug = state_org, state_project

    return ResolvedConfig(
        base_url=resolved_url or DEFAULT_BASE_URL,
        token=resolved_token,
        org_slug=org_slug,
        project_slug=project_slug,
        credentials_path=credentials_path,
    )


def scope_from_me(me: Mapping[str, Any], config: ResolvedConfig) -> tuple[str, str | None]:
    """Complete the configured scope from a ``GET /v1/me`` answer.

    ``defaultProject`` (``{orgSlug, projectSlug}``) is used when it agrees with whatever slug is
    configured; otherwise the org is the configured one or the first listed in ``orgs``, and the
    project stays as configured (None: the caller looks at the org's projects).

    Raises:
        ConfigError: No org is configured and ``/v1/me`` lists none.
    """
    org, project = config.org_slug, config.project_slug
    default = me.get("defaultProject")
    if isinstance(default, Mapping):
        d_org, d_project = _nonempty(default.get("orgSlug")), _nonempty(default.get("projectSlug"))
        if d_org and d_project and org in (None, d_org) and project in (None, d_project):
            return d_org, d_project
    if org is None:
        orgs = me.get("orgs")
        slugs = (
            [_nonempty(o.get("slug")) for o in orgs if isinstance(o, Mapping)]
            if isinstance(orgs, list)
            else []
        )
        org = next((slug for slug in slugs if slug), None)
        if org is None:
            raise ConfigError(
                f"cannot tell which organisation to use: GET /v1/me lists none. {_SCOPE_FIX}",
                field="org_slug",
            )
    return org, project


def pick_project(org: str, projects: Sequence[Mapping[str, Any]]) -> str:
    """The slug of an org's only project.

    Raises:
        ConfigError: The org has no project or several; the message lists them and the fix.
    """
    slugs = [slug for p in projects if (slug := _nonempty(p.get("slug")))]
    if len(slugs) != 1:
        found = f"projects {', '.join(slugs)}" if slugs else "no projects"
        raise ConfigError(
            f"cannot tell which project to use: org {org!r} has {found}. {_SCOPE_FIX}",
            field="project_slug",
        )
    return slugs[0]
