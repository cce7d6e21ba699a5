"""``ApiSession``: what every Arkor route shares, the base of :class:`~arkor_trio.ArkorClient`.

It holds the resolved configuration (base URL, token, scope), the httpx clients (one for plain
requests, created lazily, and the stream pools), the request headers, the org/project scope
(configured, else resolved once from ``GET /v1/me``) and the translation of HTTP answers into
the library's errors. The routes themselves live in :mod:`arkor_trio.wire._client`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import quote

import httpx
import trio

from .._errors import ConfigError
from .._version import USER_AGENT
from ._codec import MalformedPayload
from ._config import pick_project, resolve_config, scope_from_me
from ._http_errors import deprecation_notice, error_from, malformed, read_error_body, unreachable
from ._pools import StreamPools

if TYPE_CHECKING:
    from types import TracebackType

__all__ = ["ApiSession"]

logger = logging.getLogger("arkor_trio.client")

_TIMEOUT = httpx.Timeout(60.0, connect=10.0)


class ApiSession:
    """Configuration, httpx clients, headers, scope and error translation (see the module)."""

    def __init__(
        self,
        base_url: str | None = None,
        token: str | None = None,
        *,
        org_slug: str | None = None,
        project_slug: str | None = None,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self._config = resolve_config(base_url, token, org_slug=org_slug, project_slug=project_slug)
        self._given_http = http
        self._owned_http: httpx.AsyncClient | None = None
        self._stream_pools = StreamPools()
        #: SSE streams of this client open now (entered, not yet left).
        self.streams_open = 0
        self._scope: tuple[str, str] | None = None
        if self._config.org_slug and self._config.project_slug:
            self._scope = (self._config.org_slug, self._config.project_slug)
        self._scope_lock = trio.Lock()
        self._deprecation_logged = False

    @property
    def base_url(self) -> str:
        """The resolved API root, without trailing slash."""
        return self._config.base_url

    @property
    def scope(self) -> tuple[str, str] | None:
        """``(org_slug, project_slug)`` once known (configured or resolved), else None."""
        return self._scope

    def __repr__(self) -> str:
        token = "set" if self._config.token else "missing"
        return f"ArkorClient(base_url={self.base_url!r}, scope={self._scope!r}, token={token})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the httpx clients this object created; a caller's ``http`` stays open.

        The client stays usable: a later request creates a new httpx client.
        """
        http, self._owned_http = self._owned_http, None
        if http is not None:
            await http.aclose()
        await self._stream_pools.aclose()

    # --- request helpers ----------------------------------------------------------------------

    def _http(self) -> httpx.AsyncClient:
        if self._given_http is not None:
            return self._given_http
        if self._owned_http is None:
            self._owned_http = httpx.AsyncClient(timeout=_TIMEOUT)
        return self._owned_http

    def _url(self, path: str) -> str:
        return self._config.base_url + path

    def _headers(self, *, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        token = self._config.require_token()
        return {"Authorization": f"Bearer {token}", "X-Arkor-Client": USER_AGENT, **(extra or {})}

    def _job_path(self, job_id: str, suffix: str = "") -> str:
        if not isinstance(job_id, str) or not job_id:
            raise ConfigError(f"job_id must be a non-empty string, got {job_id!r}", field="job_id")
        return f"/v1/jobs/{quote(job_id, safe='')}{suffix}"

    async def _scope_params(self) -> dict[str, str]:
        if self._scope is None:
            async with self._scope_lock:
                if self._scope is None:
                    self._scope = await self._resolve_scope()
        org, project = self._scope
        return {"orgSlug": org, "projectSlug": project}

    def _note_deprecation(self, response: httpx.Response) -> None:
        notice = deprecation_notice(response.headers)
        if notice and not self._deprecation_logged:
            self._deprecation_logged = True
            logger.warning("%s", notice)

    async def _raise_for_status(
        self, response: httpx.Response, *, route: str, job_route: bool = False
    ) -> None:
        self._note_deprecation(response)
        if response.is_success:
            return
        try:
            raw = response.content
        except httpx.ResponseNotRead:  # a streaming response
            raw = await read_error_body(response)
        text = raw.decode(response.encoding or "utf-8", errors="replace")
        if self._config.token:
            text = text.replace(self._config.token, "<redacted>")
        error = error_from(response.status_code, text, job_route=job_route)
        error.add_note(f"route: {route} on {self.base_url}")
        raise error

    # --- plain requests ----------------------------------------------------------------------

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        job_route: bool = False,
    ) -> tuple[int, Any]:
        """Send one request; return (status, decoded JSON or None for an empty body)."""
        route = f"{method} {path}"
        headers = self._headers()
        try:
            response = await self._http().request(
                method, self._url(path), params=params, json=body, headers=headers
            )
        except httpx.RequestError as exc:
            raise unreachable(exc, self.base_url, route) from exc
        await self._raise_for_status(response, route=route, job_route=job_route)
        if not response.content:
            return response.status_code, None
        try:
            return response.status_code, response.json()
        except ValueError:
            raise malformed(response.status_code, route, "the body is not JSON") from None

    async def _field(
        self,
        method: str,
        path: str,
        key: str,
        kind: type,
        decode: Callable[[Any], Any] = lambda value: value,
        **kw: Any,
    ) -> Any:
        """Send a request; return the ``key`` field of its JSON object, type-checked, decoded."""
        status, data = await self._request(method, path, **kw)
        value = data.get(key) if isinstance(data, Mapping) else None
        if not isinstance(value, kind):
            raise malformed(status, f"{method} {path}", f"expected a {kind.__name__} in {key!r}")
        try:
            return decode(value)
        except MalformedPayload as exc:
            raise malformed(status, f"{method} {path}", str(exc)) from exc

    async def _resolve_scope(self) -> tuple[str, str]:
        org, project = scope_from_me(await self.me(), self._config)
        if project is None:
            project = pick_project(org, await self.list_projects(org_slug=org))
        logger.info("using org %r, project %r (resolved via GET /v1/me)", org, project)
        return org, project

    async def _org_slug(self) -> str:
        if self._scope is not None:
            return self._scope[0]
        return self._config.org_slug or scope_from_me(await self.me(), self._config)[0]

    async def me(self) -> dict[str, Any]:
        """``GET /v1/me``: the signed-in user and their organisations.

        Returns:
            The JSON object (``user``, ``orgs``, and ``defaultProject`` where the backend has one).

        Raises:
            ApiError: A non-2xx answer, no answer (status 0) or a body that is not an object.
            ConfigError: No token.
        """
        status, data = await self._request("GET", "/v1/me")
        if not isinstance(data, dict):
            raise malformed(status, "GET /v1/me", "expected a JSON object")
        return data

    async def list_projects(self, *, org_slug: str | None = None) -> list[dict[str, Any]]:
        """``GET /v1/projects``: the projects of an organisation (default: the client's).

        Raises:
            ApiError: As for :meth:`me`.
        """
        params = {"orgSlug": org_slug or await self._org_slug()}
        projects = await self._field("GET", "/v1/projects", "projects", list, params=params)
        return [p for p in projects if isinstance(p, dict)]
