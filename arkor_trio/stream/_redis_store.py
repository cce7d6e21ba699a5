"""``RedisCursorStore``: cursors and leases on a Redis server, for followers on many machines.

Per key, in the store's ``namespace``:

* ``{ns}:c:{key}``: a hash ``{cursor, finished, token, holder}``: the committed cursor, the
  finished mark, the fencing token of the latest holder (incremented at every acquisition, never
  reset) and that holder's name;
* ``{ns}:l:{key}``: the lease, holding the current token, with a server-side ``PX`` ttl.

Acquire, renew, commit and release are each one Lua script, so each is one atomic
compare-and-set on the token inside Redis: a holder whose lease lapsed and was taken over
carries an old token, and its commit is refused by Redis itself (``LeaseLost``), whatever its
own clock believed (fencing; Kleppmann, "How to do distributed locking", 2016). The commit
and renew scripts take several keys at once, each checked on its own token in order: the
commits (and renewals) of a process's many keys that wait at the same moment go to Redis in one
call, one round trip (:class:`~arkor_trio.stream._batch.GroupCommit`).

Limits: one primary. Redis replicates asynchronously, so a failover can lose the last token
increment; a new holder may then get the token an old holder still has, and an event can be
handled twice (never lost). Sentinel and Cluster URLs work where coredis supports them (the two
keys of one cursor share a hash tag, so they live on one Cluster slot).
"""

from __future__ import annotations

import logging
import random
from typing import TYPE_CHECKING, Any, Self

import trio

from .._errors import ConfigError, StreamError
from ._batch import GroupCommit
from ._store import Cursor, Lease, LeaseLost, default_holder, keep_lease

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from contextlib import AbstractAsyncContextManager

__all__ = ["RedisCursorStore", "StoreUnavailable"]

log = logging.getLogger("arkor_trio.stream")

# KEYS[1] cursor hash, KEYS[2] lease; ARGV[1] holder, ARGV[2] ttl ms. -> new token, or 0 if held.
_ACQUIRE = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
local token = redis.call('HINCRBY', KEYS[1], 'token', 1)
redis.call('HSET', KEYS[1], 'holder', ARGV[1])
redis.call('SET', KEYS[2], token, 'PX', ARGV[2])
return token
"""
# One or more renewals: KEYS[2i-1] the i-th cursor hash, KEYS[2i] its lease; ARGV[2i-1] its
# token, ARGV[2i] the ttl ms. -> {1 renewed | 0 lost (taken over, or lapsed and gone), ...}
_RENEW = """
local out = {}
for i = 1, #KEYS / 2 do
  local c, l, token, ttl = KEYS[2 * i - 1], KEYS[2 * i], ARGV[2 * i - 1], ARGV[2 * i]
  if redis.call('HGET', c, 'token') ~= token then
    out[i] = 0
  elseif redis.call('GET', l) == token then
    redis.call('PEXPIRE', l, ttl)
    out[i] = 1
  elseif redis.call('EXISTS', l) == 1 then
    out[i] = 0
  else
    redis.call('SET', l, token, 'PX', ttl)
    out[i] = 1
  end
end
return out
"""
# One or more commits in order: KEYS[i] the i-th cursor hash; ARGV[3i-2] its token ('' without a
# lease), ARGV[3i-1] its cursor ('' keeps it), ARGV[3i] '1' to finish. -> {1 done | 0 refused, ...}
_COMMIT = """
local out = {}
for i = 1, #KEYS do
  local token, cursor = ARGV[3 * i - 2], ARGV[3 * i - 1]
  if token ~= '' and redis.call('HGET', KEYS[i], 'token') ~= token then
    out[i] = 0
  else
    if cursor ~= '' then redis.call('HSET', KEYS[i], 'cursor', cursor) end
    if ARGV[3 * i] == '1' then redis.call('HSET', KEYS[i], 'finished', '1') end
    out[i] = 1
  end
end
return out
"""
# ARGV[1] token. Deletes the lease only if it is still this holder's.
_RELEASE = """
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
return 1
"""
# KEYS[1] members zset (score: expiry, ms of the server's clock), KEYS[2] infos hash;
# ARGV[1] member ('' only reads), ARGV[2] ttl ms, ARGV[3] info. -> flat [member, info, ...].
_HEARTBEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
for _, m in ipairs(gone) do redis.call('HDEL', KEYS[2], m) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if ARGV[1] ~= '' then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
end
return redis.call('HGETALL', KEYS[2])
"""
# ARGV[1] member.
_LEAVE = """
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return 1
"""
#: Reconnect backoff to Redis: from the first value, doubling to the second.
RETRY = (0.05, 2.0)


class StoreUnavailable(StreamError):
    """The store's server could not be reached within the time allowed."""


class RedisCursorStore:
    """Cursors and fenced leases on Redis (design.md section 14); extra ``arkor-trio[redis]``.

    Args:
        url: ``redis://[user:password@]host:port/db`` (``rediss://`` for TLS), as coredis takes.
        namespace: Prefix of every key, so that several applications share one Redis.
        holder: This follower's name in the hash (default ``"pid N on host"``).
        timeout: How long a ``load`` or a lease-less ``commit`` retries an unreachable Redis
            before raising :class:`StoreUnavailable`.
        pipeline: Send the commits that wait at the same moment (of the many jobs of one
            process) in one script call, one round trip (:class:`GroupCommit`), and likewise
            the lease renewals; each is still checked on its own token and reported done only
            once Redis answered. False sends each on its own (for comparison; a Cluster client
            always does).
        client: A coredis client to use instead of one made from ``url`` (tests).

    Attributes:
        commits: The batching of commits (``requests`` sent, ``items`` carried).
        renewals: The batching of lease renewals (likewise).

    Raises:
        ConfigError: coredis is not installed, or the URL or namespace is not usable.
    """

    blocking = False

    def __init__(
        self,
        url: str,
        *,
        namespace: str = "arkor",
        holder: str | None = None,
        timeout: float = 30.0,
        pipeline: bool = True,
        client: Any = None,
    ) -> None:
        if not namespace or any(c in namespace for c in "{}\n\r "):
            raise ConfigError(
                f"namespace must be a non-empty name without braces or spaces, got {namespace!r}",
                field="namespace",
            )
        if client is None:
            try:
                import coredis
            except ImportError as exc:  # pragma: no cover - depends on the installed extras
                raise ConfigError(
                    "RedisCursorStore needs coredis: pip install 'arkor-trio[redis]'",
                    field="url",
                ) from exc
            scheme = url.partition("://")[0].lower()
            if scheme not in ("redis", "rediss", "unix") or "://" not in url:
                raise ConfigError(
                    f"not a Redis URL (redis://, rediss:// or unix://): {_masked(url)!r}",
                    field="url",
                )
            try:
                client = coredis.Redis.from_url(url, decode_responses=True)
            except (ValueError, TypeError) as exc:
                raise ConfigError(f"not a Redis URL: {exc}", field="url") from exc
        self.url = url
        self.namespace = namespace
        self.holder = holder or default_holder()
        self.timeout = timeout
        self._redis = client
        self._scripts: dict[str, Any] = {}
        self._entered = 0
        # A Cluster spreads the keys of different jobs over slots: one script cannot take them.
        self.pipeline = pipeline and "Cluster" not in type(client).__name__
        self.commits: GroupCommit[tuple[str, list[str]], int] = GroupCommit(self._commit_many)
        self.renewals: GroupCommit[tuple[list[str], list[Any]], int] = GroupCommit(self._renew_many)

    async def __aenter__(self) -> Self:
        """Open the connection pool (coredis ties it to this block); re-entrant."""
        if not self._entered:
            await self._redis.__aenter__()
        self._entered += 1
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._entered -= 1
        if not self._entered:
            await self._redis.__aexit__(None, None, None)

    def _client(self) -> Any:
        if not self._entered:
            raise ConfigError(
                "RedisCursorStore is used outside its block: `async with RedisCursorStore(...) "
                "as store:` (a Fleet opens the store it is given by itself)",
                field="cursor_store",
            )
        return self._redis

    def __repr__(self) -> str:
        return f"RedisCursorStore(namespace={self.namespace!r})"

    # --- keys and scripts --------------------------------------------------------------------

    def _keys(self, key: str) -> list[str]:
        safe = key.replace("%", "%25").replace("{", "%7B").replace("}", "%7D")
        tag = "{" + self.namespace + ":" + safe + "}"
        return [f"{tag}:c", f"{tag}:l"]

    async def _run(self, name: str, source: str, keys: list[str], args: list[Any]) -> Any:
        script = self._scripts.get(name)
        if script is None:
            script = self._scripts[name] = self._client().register_script(source)
        return await script(keys=keys, args=args)

    async def _retrying(
        self, what: str, call: Callable[[], Awaitable[Any]], deadline: float
    ) -> Any:
        """``call()``, retried with backoff on connection errors until ``deadline``."""
        delay, ceiling = RETRY
        while True:
            try:
                return await call()
            except (OSError, ConnectionError, _redis_errors()) as exc:
                now = trio.current_time()
                if now >= deadline:
                    raise StoreUnavailable(f"Redis at {_masked(self.url)}: {what}: {exc}") from exc
                log.debug("Redis %s failed (%r); retrying in %.2f s", what, exc, delay)
                await trio.sleep(min(delay * (0.5 + random.random() / 2), deadline - now))
                delay = min(delay * 2, ceiling)

    # --- the protocol ------------------------------------------------------------------------

    async def load(self, key: str) -> Cursor:
        """The committed cursor of ``key`` and whether it is finished."""
        cursor_key = self._keys(key)[0]

        async def call() -> Any:
            return await self._client().hmget(cursor_key, ["cursor", "finished"])

        cursor, finished = await self._retrying("load", call, trio.current_time() + self.timeout)
        return Cursor(id=cursor or None, finished=finished == "1")

    async def commit(
        self,
        key: str,
        cursor_id: str | None,
        *,
        finished: bool = False,
        lease: Lease | None = None,
    ) -> None:
        """Record ``cursor_id`` (None keeps it) and the finished mark, in one atomic script.

        The commits of other keys waiting at the same moment ride the same script call
        (``pipeline``); this one returns once Redis answered it. With ``lease``, Redis refuses
        the write unless the lease's token is still the key's current one (:class:`LeaseLost`).
        An unreachable Redis is retried until the lease would lapse by its holder's clock (then
        ``LeaseLost``), or for ``timeout`` without a lease.
        """
        args = ["" if lease is None else str(lease.token), cursor_id or "", "1" if finished else ""]
        item = (self._keys(key)[0], args)
        if lease is not None:
            lease.check()
            deadline = lease.renewed_at + lease.ttl
        else:
            deadline = trio.current_time() + self.timeout

        async def call() -> Any:
            if self.pipeline:
                return await self.commits.submit(item)
            return (await self._commit_many([item]))[0]

        with trio.CancelScope(shield=True):  # a started commit completes: the event was handled
            try:
                done = await self._retrying("commit", call, deadline)
            except StoreUnavailable as exc:
                if lease is None:
                    raise
                lease.lost.set()
                raise LeaseLost(
                    f"{key}: Redis unreachable until the lease lapsed", key=key
                ) from exc
        if not done:
            assert lease is not None
            lease.lost.set()
            raise LeaseLost(f"{key}: the lease (token {lease.token}) was taken over", key=key)

    async def _commit_many(self, items: list[tuple[str, list[str]]]) -> list[int]:
        """Commits in one script call (in order; each checked on its own token)."""
        args = [arg for _, three in items for arg in three]
        done = await self._run("commit", _COMMIT, [key for key, _ in items], args)
        return [int(x) for x in done]

    async def _renew_many(self, items: list[tuple[list[str], list[Any]]]) -> list[int]:
        """Renewals in one script call (each checked on its own token)."""
        keys = [key for two, _ in items for key in two]
        done = await self._run("renew", _RENEW, keys, [arg for _, two in items for arg in two])
        return [int(x) for x in done]

    def lease(self, key: str, *, ttl: float) -> AbstractAsyncContextManager[Lease]:
        """Hold ``key``'s lease for the block, waiting while another holder has it.

        Renewed in the background every ``ttl / 3`` (:func:`~arkor_trio.stream.keep_lease`);
        Redis expires an unrenewed lease after ``ttl`` by its own clock, and the holder treats
        it as lost after ``ttl`` without a renewal by its clock, which starts earlier.
        """
        if not ttl > 0:
            raise ConfigError(f"ttl must be positive, got {ttl!r}", field="ttl")
        keys = self._keys(key)
        ttl_ms = max(1, round(ttl * 1000))
        errors = (OSError, ConnectionError, _redis_errors())

        async def acquire() -> Lease | None:
            asked = trio.current_time()
            try:
                token = int(await self._run("acquire", _ACQUIRE, keys, [self.holder, ttl_ms]))
            except errors as exc:
                log.info("%s: acquiring the lease failed (%r); retrying", key, exc)
                return None
            if not token:
                return None
            return Lease(key, token, self.holder, ttl, renewed_at=asked)

        async def renew(lease: Lease) -> bool:
            item = (keys, [lease.token, ttl_ms])
            with trio.move_on_at(lease.renewed_at + lease.ttl):  # a late answer is no renewal
                if self.pipeline:  # with the other leases' renewals due now, in one call
                    return bool(await self.renewals.submit(item))
                return bool((await self._renew_many([item]))[0])
            raise StoreUnavailable(f"{key}: Redis did not answer the renewal in time")

        async def release(lease: Lease) -> None:
            with trio.move_on_after(min(ttl, 5.0)):
                try:
                    await self._run("release", _RELEASE, keys, [lease.token])
                except errors as exc:
                    log.info("%s: lease not released (%r); it lapses in %g s", key, exc, ttl)

        return keep_lease(key, ttl=ttl, acquire=acquire, renew=renew, release=release)

    # --- membership (a fleet's replicas, design.md section 15) ------------------------------

    def _member_keys(self) -> list[str]:
        tag = "{" + self.namespace + ":fleet}"
        return [f"{tag}:m", f"{tag}:i"]

    async def heartbeat(self, member: str, *, ttl: float, info: str = "") -> dict[str, str]:
        """Mark ``member`` alive for ``ttl`` seconds (Redis's clock) with ``info``, in one
        script that also drops expired members; returns the live members' infos."""
        if not member:
            raise ConfigError("member must be a non-empty name", field="member")
        args = [member, max(1, round(ttl * 1000)), info]
        flat = await self._run("heartbeat", _HEARTBEAT, self._member_keys(), args)
        pairs = iter(flat)
        return dict(sorted(zip(pairs, pairs, strict=True)))

    async def leave(self, member: str) -> None:
        """Remove ``member`` at once (a replica shutting down); best effort."""
        with trio.move_on_after(min(self.timeout, 5.0)):
            try:
                await self._run("leave", _LEAVE, self._member_keys(), [member])
            except (OSError, ConnectionError, _redis_errors()) as exc:
                log.info("leaving the fleet failed (%r); membership lapses by itself", exc)


def _redis_errors() -> type[BaseException]:
    try:
        from coredis.exceptions import ConnectionError as RedisConnectionError
    except ImportError:  # pragma: no cover
        return ConnectionError
    return RedisConnectionError


def _masked(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.rpartition("@")[2]
    return f"{scheme}{sep}{rest}"
