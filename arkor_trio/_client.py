"""``ArkorClient``: one ``httpx.AsyncClient`` for every cloud route (jobs, chat, me, projects).

Every request carries ``X-Arkor-Client`` and ``Authorization: Bearer``; project-scoped routes
carry ``orgSlug``/``projectSlug`` (configured, see :mod:`arkor_trio._config`, else resolved once
from ``GET /v1/me``); path parameters are percent-encoded.

The methods raise only :class:`ArkorError` subclasses (and trio's ``Cancelled``); the translation
table is :mod:`arkor_trio._http_errors`. A request that gets no HTTP answer at all (connect error,
reset, transport timeout) raises ``ApiError`` with ``status == 0`` and the httpx exception as
``__cause__``: the design's error tree keeps "a request failed" in one branch, and no status-based
rule mistakes 0 for a permanent 4xx. Error messages get a PEP 678 note naming the route. A
missing token raises :class:`ConfigError` at the first request, not at construction.

Transport timeouts of the httpx client created here: 10 s to connect, 60 s per read, write and
pool wait. They bound a dead network, not a request: wrap calls in ``trio.move_on_after`` for
that. An ``http`` client passed in keeps its own settings and is never closed by this class. The
token never appears in a repr, a message or a log record.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import quote, urlencode

import httpx
import trio

from ._chat import CHAT_ROUTE, build_chat_body, iter_chat_deltas, parse_completion
from ._codec import MalformedPayload, decode_job, encode
from ._config import pick_project, resolve_config, scope_from_me
from ._errors import ConfigError
from ._feed import JobFeed
from ._http_errors import deprecation_notice, error_from, malformed, read_error_body, unreachable
from ._job_stream import EventStream, JobStreamSource
from ._pools import StreamPools
from ._version import USER_AGENT
from ._ws_connect import ws_url
from ._ws_stream import WebSocketEventStream

if TYPE_CHECKING:
    from types import TracebackType
    from typing import Unpack

    from ._chat import ChatOptions, Messages
    from ._errors import ApiError
    from ._models import Adapter, ChatCompletion, JobConfig, TrainingJob
    from .stream import CursorStore, ReconnectPolicy

__all__ = ["ArkorClient"]

logger = logging.getLogger("arkor_trio.client")

_TIMEOUT = httpx.Timeout(60.0, connect=10.0)
_CHAT = "/v1/inference/chat"


class ArkorClient:
    """An async client for the Arkor cloud API (and the local backend, which speaks the same).

    Usable as ``async with ArkorClient() as client:`` or without (then call :meth:`aclose`);
    the underlying ``httpx.AsyncClient`` is created at the first request.

    Args:
        base_url: API root; default from ``ARKOR_CLOUD_API_URL``, the credentials file, or
            ``https://api.arkor.ai``.
        token: API token; default from ``ARKOR_TOKEN`` or ``~/.arkor/credentials.json``.
        org_slug: Organisation; default from ``.arkor/state.json`` or ``GET /v1/me``.
        project_slug: Project; default likewise.
        http: An ``httpx.AsyncClient`` to send requests with (kept as configured, not closed).

    Raises:
        ConfigError: An explicit argument is invalid, or a config file cannot be read.
    """

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

    async def create_project(
        self, name: str, slug: str, *, org_slug: str | None = None
    ) -> dict[str, Any]:
        """``POST /v1/projects``: create a project in an organisation (default: the client's).

        Returns:
            The created project object (``id``, ``slug``, ``name``, ``orgId``, ...).

        Raises:
            ApiError: 409 when the slug exists; otherwise as for :meth:`me`.
        """
        params = {"orgSlug": org_slug or await self._org_slug()}
        body = {"name": name, "slug": slug}
        project = await self._field(
            "POST", "/v1/projects", "project", dict, params=params, body=body
        )
        return dict(project)

    async def _job(self, method: str, path: str, **kw: Any) -> TrainingJob:
        params = await self._scope_params()
        job: TrainingJob = await self._field(
            method, path, "job", dict, decode_job, params=params, **kw
        )
        return job

    async def create_job(self, name: str, config: JobConfig) -> TrainingJob:
        """``POST /v1/jobs``: create a training job in the client's project.

        Raises:
            ApiError: The backend refused the job (e.g. 400 naming an unsupported model).
        """
        return await self._job("POST", "/v1/jobs", body={"name": name, "config": encode(config)})

    async def list_jobs(self) -> list[TrainingJob]:
        """``GET /v1/jobs``: the project's jobs, in the backend's order."""
        params = await self._scope_params()
        jobs: list[TrainingJob] = await self._field(
            "GET", "/v1/jobs", "jobs", list, lambda raw: [decode_job(j) for j in raw], params=params
        )
        return jobs

    async def get_job(self, job_id: str) -> TrainingJob:
        """``GET /v1/jobs/:id``: the job's current state.

        Raises:
            JobNotFound: The backend does not know the job.
        """
        return await self._job("GET", self._job_path(job_id), job_route=True)

    async def cancel_job(self, job_id: str) -> None:
        """``POST /v1/jobs/:id/cancel``: ask the backend to stop the job.

        Raises:
            ApiError: Including 409 for a job that already ended (callers decide to ignore it).
            JobNotFound: The backend does not know the job.
        """
        path = self._job_path(job_id, "/cancel")
        await self._request("POST", path, params=await self._scope_params(), job_route=True)

    def events(
        self,
        job_id: str,
        *,
        after: str | None = None,
        policy: ReconnectPolicy | None = None,
        transport: str = "sse",
    ) -> EventStream | WebSocketEventStream:
        """The job's resumable event stream, starting after event id ``after``.

        ``transport="websocket"`` follows it over the job feed socket (docs/websocket.md)
        with the same semantics; SSE is the default (the cloud speaks SSE).
        """
        if transport == "websocket":
            return WebSocketEventStream(self, job_id, after=after, policy=policy)
        if transport != "sse":
            raise ConfigError(
                f"transport must be 'sse' or 'websocket', got {transport!r}", field="transport"
            )
        return EventStream(self.stream_source(job_id), after=after, policy=policy)

    def stream_source(self, job_id: str) -> JobStreamSource:
        """What following ``job_id``'s event stream needs from this client.

        :class:`EventStream` is built on it; the channel it uses gets a URL, headers (read for
        every connection, so a changed token applies at the next reconnect) and the scope
        params, nothing else.
        """
        path = self._job_path(job_id, "/events/stream")
        return JobStreamSource(
            job_id=job_id,
            url=self._url(path),
            headers=self._stream_headers,
            params=self._scope_params,
            http=self._given_http or self._stream_pools.pick(),
            get_job=self.get_job,
            make_error=self._stream_error,
            on_response=self._note_deprecation,
        )

    def _stream_headers(self) -> dict[str, str]:
        return self._headers(extra={"Accept": "text/event-stream", "Cache-Control": "no-cache"})

    def _stream_error(self, status: int, text: str, route: str) -> ApiError:
        if self._config.token:
            text = text.replace(self._config.token, "<redacted>")
        error = error_from(status, text, job_route=True)
        error.add_note(f"route: {route} on {self.base_url}")
        return error

    def feed(
        self, *, policy: ReconnectPolicy | None = None, cursor_store: CursorStore | None = None
    ) -> JobFeed:
        """A job feed: many jobs over one WebSocket (``async with client.feed() as feed:``)."""
        return JobFeed(self, policy=policy, cursor_store=cursor_store)

    async def websocket_target(self, path: str) -> tuple[str, list[tuple[bytes, bytes]]]:
        """The ``ws(s)://`` URL of a route (with the project scope) and its handshake headers."""
        query = urlencode(await self._scope_params())
        headers = [(k.lower().encode(), v.encode()) for k, v in self._headers().items()]
        return f"{ws_url(self._url(path))}?{query}", headers

    # --- chat --------------------------------------------------------------------------------

    async def chat(
        self,
        messages: Messages,
        *,
        adapter: Adapter | None = None,
        base_model: str | None = None,
        **options: Unpack[ChatOptions],
    ) -> ChatCompletion:
        """``POST /v1/inference/chat``, not streamed; pass exactly one of adapter / base_model.

        Args:
            messages: Mappings with ``role`` (system, user, assistant, tool) and OpenAI fields.
            adapter: A trained adapter (final or checkpoint) to run.
            base_model: A base model name to run instead.
            **options: ``temperature``, ``top_p``, ``max_tokens``, ``tools``, ``tool_choice``,
                ``response_format``, ``structured_outputs`` (see ``ChatOptions``).

        Returns:
            The parsed completion (``.text``, ``.tool_calls``, ``.finish_reason``, ``.raw``).

        Raises:
            ConfigError: An invalid argument, named (``messages[1].role``, ``top_p``, ...).
            ApiError: The backend refused the request or answered an unparseable completion.
        """
        body = build_chat_body(
            messages, adapter=adapter, base_model=base_model, stream=False, **options
        )
        params = await self._scope_params()
        status, data = await self._request("POST", _CHAT, params=params, body=body)
        try:
            return parse_completion(data)
        except MalformedPayload as exc:
            raise malformed(status, CHAT_ROUTE, str(exc)) from exc

    @contextlib.asynccontextmanager
    async def chat_stream(
        self,
        messages: Messages,
        *,
        adapter: Adapter | None = None,
        base_model: str | None = None,
        **options: Unpack[ChatOptions],
    ) -> AsyncIterator[AsyncIterator[str]]:
        """``POST /v1/inference/chat``, streamed: yields an async iterator of text deltas.

        ``async with client.chat_stream(msgs, base_model=m) as deltas: async for text in deltas``.
        The iterator ends at ``data: [DONE]`` or an ``end`` frame (``ping`` frames are skipped);
        leaving the block closes the response. Arguments are those of :meth:`chat`.

        Raises:
            ConfigError: An invalid argument.
            ApiError: On entry, a refused request; while iterating, a lost connection (status
                0), a malformed or error chunk, or a body that ends before ``[DONE]``.
            FrameTooLarge: One SSE frame exceeded 1 MiB.
        """
        body = build_chat_body(
            messages, adapter=adapter, base_model=base_model, stream=True, **options
        )
        http = self._http()
        request = http.build_request(
            "POST",
            self._url(_CHAT),
            params=await self._scope_params(),
            json=body,
            headers=self._headers(extra={"Accept": "text/event-stream"}),
        )
        try:
            response = await http.send(request, stream=True)
        except httpx.RequestError as exc:
            raise unreachable(exc, self.base_url, CHAT_ROUTE) from exc
        try:
            await self._raise_for_status(response, route=CHAT_ROUTE)
            deltas = iter_chat_deltas(response, base_url=self.base_url)
            async with contextlib.aclosing(deltas):
                yield deltas
        finally:
            with trio.move_on_after(5) as cleanup:
                cleanup.shield = True
                await response.aclose()
