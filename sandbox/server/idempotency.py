"""Request ids as idempotency keys: a retried request runs once.

The first request with an id runs; a duplicate that arrives while it runs waits for
the same result; one that arrives later (within ``ttl_s``) gets the stored result. An
id reused for a *different* request is refused, so a client bug cannot silently get
someone else's verdict. Infrastructure failures are not stored: retrying them is the
point of retrying.

Bounded by entry count and age, oldest dropped first; the cache lives in the server's
memory, so a restarted server runs a retried request again (never loses it).
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Awaitable, Callable

from sandbox.domain import RunResult, Status
from sandbox.errors import InfrastructureError, InvalidRequestError


class _Entry:
    __slots__ = ("fingerprint", "future", "stored_at")

    def __init__(self, fingerprint: bytes, future: asyncio.Future[RunResult]) -> None:
        self.fingerprint = fingerprint
        self.future = future
        self.stored_at = 0.0


class IdempotencyCache:
    """Runs each (id, request) once; see the module docstring."""

    def __init__(self, max_entries: int = 50_000, ttl_s: float = 600.0) -> None:
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self._entries: collections.OrderedDict[str, _Entry] = collections.OrderedDict()
        self.hits = 0

    def __len__(self) -> int:
        return len(self._entries)

    def _evict(self, now: float) -> None:
        while self._entries:
            key, entry = next(iter(self._entries.items()))
            expired = entry.future.done() and now - entry.stored_at > self.ttl_s
            if len(self._entries) > self.max_entries or expired:
                self._entries.popitem(last=False)
            else:
                break

    async def run(self, key: str, fingerprint: bytes, execute: Callable[[], Awaitable[RunResult]]) -> RunResult:
        """The result for ``key``: stored, in flight, or from running ``execute``."""
        if not key:
            return await execute()
        now = time.monotonic()
        self._evict(now)
        entry = self._entries.get(key)
        if entry is not None:
            if entry.fingerprint != fingerprint:
                raise InvalidRequestError(f"id {key!r} was already used for a different request")
            if not (entry.future.done() and now - entry.stored_at > self.ttl_s):
                self.hits += 1
                return await asyncio.shield(entry.future)
        future: asyncio.Future[RunResult] = asyncio.get_running_loop().create_future()
        entry = _Entry(fingerprint, future)
        self._entries[key] = entry
        try:
            result = await execute()
        except BaseException as exc:
            self._entries.pop(key, None)
            if not future.done():
                if isinstance(exc, asyncio.CancelledError):
                    future.set_exception(InfrastructureError(f"the first request with id {key!r} was cancelled; retry"))
                else:
                    future.set_exception(exc)
                future.exception()  # retrieved: no "never retrieved" warning when nobody waits
            raise
        if result.status is Status.SANDBOX_ERROR:
            self._entries.pop(key, None)
        entry.stored_at = time.monotonic()
        future.set_result(result)
        return result
