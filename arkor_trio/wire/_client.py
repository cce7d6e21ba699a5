"""``ArkorClient``: the cloud routes (jobs, their event streams and feed, chat, projects).

The plumbing every route shares (configuration, the httpx client, auth headers, the org/project
scope, error translation) is :class:`~arkor_trio.wire._session.ApiSession`, its base class. Every
request carries ``X-Arkor-Client`` and ``Authorization: Bearer``; project-scoped routes
carry ``orgSlug``/``projectSlug`` (configured, see :mod:`arkor_trio.wire._config`, else resolved
once from ``GET /v1/me``); path parameters are percent-encoded.

The methods raise only :class:`ArkorError` subclasses (and trio's ``Cancelled``); the translation
table is :mod:`arkor_trio.wire._http_errors`. A request that gets no HTTP answer at all (connect
error, reset, transport timeout) raises ``ApiError`` with ``status == 0`` and the httpx exception as
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
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import httpx
import trio

from .._errors import ConfigError
from ._chat import CHAT_ROUTE, build_chat_body, iter_chat_deltas, parse_completion
from ._codec import MalformedPayload, decode_job, encode
from ._feed import JobFeed
from ._http_errors import error_from, malformed, unreachable
from ._job_stream import EventStream, JobStreamSource
from ._session import ApiSession
from ._ws_connect import ws_url
from ._ws_stream import WebSocketEventStream

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from typing import Unpack

    from .._errors import ApiError
    from ..stream import CursorStore, ReconnectPolicy
    from ._chat import ChatOptions, Messages
    from ._models import Adapter, ChatCompletion, JobConfig, TrainingJob

__all__ = ["ArkorClient"]

_CHAT = "/v1/inference/chat"


class ArkorClient(ApiSession):
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
            in_use=self._count_stream,
        )

    def _count_stream(self, change: int) -> None:
        self.streams_open += change

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
