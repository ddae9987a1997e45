"""Turns an ``Authorization`` header into a :class:`Caller`, with a short-lived lookup cache.

Modes (``CONVEYOR_AUTH``): ``none`` is always open; ``keys`` always needs a key; ``auto`` is
open while no key was ever made AND the server listens on loopback only, else needs a key.
An open server's caller is the implicit tenant ``default`` with every scope.

Lookups by key prefix are cached for at most :data:`CACHE_TTL_S` (half a second), so a key
revoked on any server process (or whose tenant was deleted) stops working on every other process
within a second, while the hot path of a busy client costs no database round trip. The cache
holds at most :data:`CACHE_SIZE` prefixes (it is emptied when full). A lookup that is due while
another of the same prefix runs waits for that one: a cache expiry under concurrent requests is
one database read, not one per request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from anyio import to_thread

from conveyor.auth import keys
from conveyor.auth.caller import ALL_SCOPES, Caller
from conveyor.auth.keys import KeyLookup
from conveyor.errors import Unauthorized

log = logging.getLogger("conveyor.auth")
T = TypeVar("T")

CACHE_TTL_S = 0.5
CACHE_SIZE = 10_000
#: A key's ``last_used_at`` is written at most this often (seconds): a busy key costs one
#: write a minute, not one per request.
TOUCH_EVERY_S = 60.0
DEFAULT_TENANT = "default"
OPEN = Caller(DEFAULT_TENANT, ALL_SCOPES)


class KeySource(Protocol):
    def lookup(self, prefix: str) -> KeyLookup | None: ...

    def any_exist(self) -> bool: ...

    def touch(self, key_id: str, at: float) -> None: ...


class Authenticator:
    def __init__(self, source: KeySource, mode: str, *, loopback: bool,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.source = source
        self.mode = mode
        self.loopback = loopback
        self.clock = clock
        self._cache: dict[str, tuple[float, KeyLookup | None]] = {}
        #: ``auto``: once a key exists the server never goes back to open.
        self._keys_seen = False
        self._open_checked = -1e18
        #: key id -> when this process last wrote its last_used_at (monotonic).
        self._touched: dict[str, float] = {}
        #: The database reads running now, by what they read (see :meth:`_shared`).
        self._running: dict[str, asyncio.Future[Any]] = {}

    async def is_open(self) -> bool:
        if self.mode == "none":
            return True
        if self.mode == "keys" or not self.loopback or self._keys_seen:
            return False
        now = self.clock()
        if now - self._open_checked >= CACHE_TTL_S:
            self._keys_seen = await self._shared("any", self.source.any_exist)
            self._open_checked = now
        return not self._keys_seen

    async def caller(self, header: str | None) -> Caller:
        """The request's caller; raises :class:`Unauthorized` when a key is needed and no usable
        key was sent. In an open mode a request without a key is the open caller, and one with
        a key is authenticated (a bad key is still 401)."""
        if header is None and await self.is_open():
            return OPEN
        token = keys.bearer(header)
        if token is None:
            if header is None:
                raise Unauthorized("an API key is needed: Authorization: Bearer <key>")
            raise Unauthorized("the Authorization header is not `Bearer <key>`")
        prefix = keys.prefix_of(token)
        record = await self._lookup(prefix) if prefix is not None else None
        if record is None or not keys.matches(token, record.hash):
            raise Unauthorized("unknown API key")
        if not record.usable:
            raise Unauthorized("the API key was revoked (or its tenant deleted)")
        await self._touch(record.id)
        return Caller(record.tenant_id, record.scopes, record.id, prefix)

    async def _touch(self, key_id: str) -> None:
        """Write the key's ``last_used_at``, at most once a minute per key and process. A
        failed write (a full disk) fails nothing: the next minute tries again."""
        now = self.clock()
        if now - self._touched.get(key_id, -1e18) < TOUCH_EVERY_S:
            return
        if len(self._touched) >= CACHE_SIZE:
            self._touched.clear()
        self._touched[key_id] = now
        try:
            await to_thread.run_sync(self.source.touch, key_id, time.time())
        except Exception as exc:  # the database cannot be written now: not this request's problem
            log.warning("could not record the use of API key %s (%s)", key_id,
                        type(exc).__name__)

    async def _lookup(self, prefix: str) -> KeyLookup | None:
        now = self.clock()
        hit = self._cache.get(prefix)
        if hit is not None and hit[0] > now:
            return hit[1]
        record = await self._shared(f"key:{prefix}", self.source.lookup, prefix)
        if len(self._cache) >= CACHE_SIZE:
            self._cache.clear()
        self._cache[prefix] = (now + CACHE_TTL_S, record)
        return record

    async def _shared(self, name: str, read: Callable[..., T], *args: Any) -> T:
        """``read(*args)`` on a worker thread, one at a time per ``name``: a caller that comes
        while one runs shares its answer (or its error). Shielded: a caller that goes away
        (a client that disconnects) leaves the read to the others."""
        running = self._running.get(name)
        if running is None:
            running = asyncio.ensure_future(to_thread.run_sync(read, *args))
            self._running[name] = running
            running.add_done_callback(lambda done: self._finished(name, done))
        answer: T = await asyncio.shield(running)
        return answer

    def _finished(self, name: str, done: asyncio.Future[Any]) -> None:
        if self._running.get(name) is done:  # not a newer read (see forget)
            del self._running[name]
        if not done.cancelled():
            done.exception()  # seen: no "never retrieved" warning if every caller went away

    def forget(self, prefix: str) -> None:
        """Drop a cached key at once (revoked on this process). A read of it still running
        may predate the change: the next request reads again instead of sharing it."""
        self._cache.pop(prefix, None)
        self._running.pop(f"key:{prefix}", None)
