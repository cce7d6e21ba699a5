"""The notifier engine behind :mod:`arkor_trio.notify`: bounded, failure-swallowing posts.

A :class:`_Notifier` holds one endpoint (its URL, shown only masked), the body builder for its
platform, and a failure count for the "logged once" policy. :func:`make_callbacks` validates the
factory arguments, resolves the URL (argument, then environment) and returns the hooks.
"""

from __future__ import annotations

import functools
import logging
import math
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

import httpx
import trio

from .._errors import ConfigError
from ..trainer._callbacks import Callbacks
from ._messages import EventKind, Sample

if TYPE_CHECKING:
    import ssl

    from ..trainer._contexts import (
        CancelledContext,
        CheckpointContext,
        CompletedContext,
        FailedContext,
        LogContext,
    )

__all__ = [
    "DEFAULT_PROGRESS_EVERY",
    "SAMPLE_MAX_TOKENS",
    "SAMPLE_TIMEOUT",
    "PayloadBuilder",
    "make_callbacks",
]

#: Progress interval, in steps, when ``NOTIFY_PROGRESS=1`` and ``progress_every`` is None.
DEFAULT_PROGRESS_EVERY = 50
#: ``max_tokens`` of each checkpoint sample.
SAMPLE_MAX_TOKENS = 256
#: Seconds one sample inference may take before it is abandoned (and logged as a failure).
SAMPLE_TIMEOUT = 60.0

#: Builds the JSON body for ``(kind, ctx)``, or None to skip that post. ``ctx`` is the callback
#: context (:class:`Sample` for ``"sample"``).
PayloadBuilder: TypeAlias = Callable[[EventKind, Any], "Mapping[str, Any] | None"]

_log = logging.getLogger("arkor_trio.notify")
_T = TypeVar("_T")
_TRUTHY = frozenset({"1", "true", "yes", "on"})


class _HttpStatus(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    # Built once per process: building one per post would block the event loop ~50 ms each time.
    return httpx.create_ssl_context()


def _mask(url: httpx.URL) -> str:
    host = f"[{url.host}]" if ":" in url.host else url.host
    port = "" if url.port is None else f":{url.port}"
    return f"{url.scheme}://{host}{port}/***"


class _Notifier:
    """One endpoint's hooks and failure count; its URL appears only masked."""

    def __init__(
        self,
        *,
        name: str,
        url: httpx.URL,
        given: str,
        build: PayloadBuilder,
        progress_every: int,
        samples: tuple[str, ...],
        post_timeout: float,
        http: httpx.AsyncClient | None,
    ) -> None:
        self._name = name
        self._url = url
        self._masked = _mask(url)
        # Longest first, so the whole URL is replaced before its path is.
        path = url.raw_path.decode("ascii")
        self._secrets = sorted({given, str(url), path} - {"", "/"}, key=len, reverse=True)
        self._build = build
        self._progress_every = progress_every
        self._samples = samples
        self._post_timeout = post_timeout
        self._http = http
        self._failures = 0

    def __repr__(self) -> str:
        return f"<{self._name} notifier {self._masked}>"

    def callbacks(self) -> Callbacks:
        return Callbacks(
            on_log=self._on_log if self._progress_every else None,
            on_checkpoint=self._on_checkpoint if self._samples else None,
            on_completed=self._on_completed,
            on_failed=self._on_failed,
            on_cancelled=self._on_cancelled,
        )

    async def _on_log(self, ctx: LogContext) -> None:
        if ctx.step > 0 and ctx.step % self._progress_every == 0:
            await self._post("progress", ctx)
        else:
            await trio.lowlevel.checkpoint()

    async def _on_checkpoint(self, ctx: CheckpointContext) -> None:
        for prompt in self._samples:
            ask = functools.partial(
                ctx.infer, [{"role": "user", "content": prompt}], max_tokens=SAMPLE_MAX_TOKENS
            )
            action = f"sample inference at step {ctx.step}"
            answer = await self._guarded(action, ask, SAMPLE_TIMEOUT)
            if answer is not None:
                await self._post(
                    "sample", Sample(checkpoint=ctx, prompt=prompt, answer=answer.text)
                )

    async def _on_completed(self, ctx: CompletedContext) -> None:
        await self._post("completed", ctx)

    async def _on_failed(self, ctx: FailedContext) -> None:
        await self._post("failed", ctx)

    async def _on_cancelled(self, ctx: CancelledContext) -> None:
        await self._post("cancelled", ctx)

    async def _post(self, kind: EventKind, ctx: Any) -> None:
        try:
            body = self._build(kind, ctx)
        except Exception as exc:  # a user's payload builder must not fail the run either
            self._report(f"building the {kind} message", exc)
            await trio.lowlevel.checkpoint()
            return
        if body is None:
            await trio.lowlevel.checkpoint()
            return
        await self._guarded(
            f"posting the {kind} message", functools.partial(self._send, body), self._post_timeout
        )

    async def _send(self, body: Mapping[str, Any]) -> None:
        if self._http is None:
            async with httpx.AsyncClient(
                timeout=self._post_timeout, verify=_ssl_context()
            ) as client:
                response = await client.post(self._url, json=body)
        else:
            response = await self._http.post(self._url, json=body, timeout=self._post_timeout)
        if not response.is_success:
            raise _HttpStatus(response.status_code)
        _log.debug("%r: posted (HTTP %d)", self, response.status_code)

    async def _guarded(
        self, action: str, fn: Callable[[], Awaitable[_T]], timeout: float
    ) -> _T | None:
        """Run ``fn`` bounded by ``timeout``; log and swallow its failures, never Cancelled."""
        with trio.move_on_after(timeout) as scope:
            try:
                return await fn()
            except Exception as exc:  # trio.Cancelled is a BaseException: it passes
                self._report(action, exc)
                return None
        if scope.cancelled_caught:
            self._report(action, f"timed out after {timeout:g} s")
        return None

    def _report(self, action: str, error: BaseException | str) -> None:
        reason = error if isinstance(error, str) else self._describe(error)
        self._failures += 1
        if self._failures == 1:
            _log.warning(
                "%r: %s failed: %s (further failures of this notifier are logged at DEBUG)",
                self,
                action,
                reason,
            )
        else:
            _log.debug("%r: %s failed: %s (failure %d)", self, action, reason, self._failures)

    def _describe(self, exc: BaseException) -> str:
        text = str(exc)
        for secret in self._secrets:
            text = text.replace(secret, "/***" if secret.startswith("/") else self._masked)
        if isinstance(exc, _HttpStatus):
            return text
        return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _progress_interval(progress_every: int | None) -> int:
    if progress_every is None:
        enabled = os.environ.get("NOTIFY_PROGRESS", "").strip().lower() in _TRUTHY
        return DEFAULT_PROGRESS_EVERY if enabled else 0
    if (
        isinstance(progress_every, bool)
        or not isinstance(progress_every, int)
        or progress_every < 0
    ):
        raise ConfigError(
            f"progress_every must be a non-negative int or None, got {progress_every!r}",
            field="progress_every",
        )
    return progress_every


def _sample_prompts(samples: Sequence[str] | None) -> tuple[str, ...]:
    if samples is None:
        return ()
    if isinstance(samples, str) or not all(isinstance(p, str) for p in samples):
        raise ConfigError("samples must be a sequence of prompt strings", field="samples")
    return tuple(samples)


def make_callbacks(
    name: str,
    url: str | None,
    env_var: str | None,
    build: PayloadBuilder,
    *,
    progress_every: int | None,
    samples: Sequence[str] | None,
    post_timeout: float,
    http: httpx.AsyncClient | None,
) -> Callbacks:
    if (
        isinstance(post_timeout, bool)
        or not isinstance(post_timeout, int | float)
        or not math.isfinite(post_timeout)
        or post_timeout <= 0
    ):
        raise ConfigError(
            f"post_timeout must be a positive number of seconds, got {post_timeout!r}",
            field="post_timeout",
        )
    if http is not None and not isinstance(http, httpx.AsyncClient):
        raise ConfigError("http must be an httpx.AsyncClient or None", field="http")
    if url is not None and not isinstance(url, str):
        raise ConfigError(f"url must be a string or None, got {type(url).__name__}", field="url")
    interval = _progress_interval(progress_every)
    prompts = _sample_prompts(samples)
    if url is None and env_var is not None:
        url = os.environ.get(env_var)
    if not url:
        where = f"pass url= or set {env_var}" if env_var else "pass a url"
        _log.warning("%s notifier disabled: no webhook URL (%s)", name, where)
        return Callbacks()
    try:
        parsed = httpx.URL(url.strip())
    except httpx.InvalidURL:
        parsed = None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.host:
        _log.warning("%s notifier disabled: the webhook URL is not an http(s) URL", name)
        return Callbacks()
    if http is None:
        _ssl_context()  # pay the one-off cost here, at setup, rather than inside the first post
    notifier = _Notifier(
        name=name,
        url=parsed,
        given=url,
        build=build,
        progress_every=interval,
        samples=prompts,
        post_timeout=float(post_timeout),
        http=http,
    )
    return notifier.callbacks()
