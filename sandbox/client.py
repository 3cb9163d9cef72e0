"""The client side: needs grpcio and protobuf only, never the server's dependencies.

:class:`Client` is synchronous; :class:`AsyncClient` is its asyncio twin. Both offer
``execute`` for one request and ``execute_many`` to stream many over
``ExecuteStream`` with a bounded number in flight, yielding results as they finish.

Retries: ``UNAVAILABLE`` and ``RESOURCE_EXHAUSTED`` answers, broken streams and
``sandbox_error`` results are retried with exponential backoff and jitter. Every
request carries an id (one is generated, globally unique, when the caller gives none),
and the server treats it as an idempotency key, so a retry never runs a request twice
and every id gets exactly one final answer. Connecting to several servers (a list of
``HOST:PORT``, or a DNS name with several addresses) balances round-robin.
"""

from __future__ import annotations

import asyncio
import itertools
import queue
import random
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import grpc

from sandbox._proto.sandbox.v1 import sandbox_pb2 as pb
from sandbox._proto.sandbox.v1 import sandbox_pb2_grpc as pb_grpc
from sandbox.convert import request_to_pb, result_from_pb
from sandbox.domain import ExecuteRequest, RunResult, Status

_OPTIONS = [
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 16 * 1024 * 1024),
    ("grpc.lb_policy_name", "round_robin"),
    ("grpc.enable_retries", 0),
]
_RETRYABLE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED})


@dataclass(frozen=True)
class Refused:
    """A request the server refused (bad input, overload, deadline), with its reason."""

    code: grpc.StatusCode
    message: str


Outcome = RunResult | Refused


@dataclass(frozen=True)
class RetryPolicy:
    """How failures that are not the candidate's are retried."""

    max_attempts: int = 6
    """Tries per request, the first included."""

    initial_backoff_s: float = 0.2
    """Wait before the first retry, in seconds."""

    max_backoff_s: float = 10.0
    """Longest wait between tries, in seconds."""

    multiplier: float = 2.0
    """Growth of the wait after each try."""

    def backoff(self, attempt: int) -> float:
        """Seconds to wait before try ``attempt + 1`` (full jitter)."""
        ceiling = min(self.max_backoff_s, self.initial_backoff_s * self.multiplier ** max(0, attempt - 1))
        return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not secrecy


NO_RETRY = RetryPolicy(max_attempts=1)


def retryable(outcome: Outcome) -> bool:
    """True for answers that say nothing about the candidate: retry them."""
    if isinstance(outcome, Refused):
        return outcome.code in _RETRYABLE_CODES
    return outcome.status is Status.SANDBOX_ERROR


def _resolve(address: str) -> list[str]:
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    if not port.isdigit():
        return [address]
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
        return [f"[{host}]:{port}" if ":" in host else address]
    except OSError:
        pass
    try:
        infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
    except OSError:
        return [address]  # let gRPC resolve (and report) it
    return sorted({f"[{i[4][0]}]:{port}" if i[0] == socket.AF_INET6 else f"{i[4][0]}:{port}" for i in infos})


def backends_of(target: str | Iterable[str]) -> list[str]:
    """One gRPC target per backend: a list of ``HOST:PORT`` and a ``HOST:PORT`` whose name
    resolves to several addresses give one each; a gRPC URI (``dns:///...``) stays one
    target balanced by gRPC's round-robin policy per call."""
    if isinstance(target, str):
        if "://" in target or target.split(":", 1)[0] in ("ipv4", "ipv6", "unix", "dns"):
            return [target]
        return _resolve(target)
    return [a for t in target for a in _resolve(t)]


def _code(value: int) -> grpc.StatusCode:
    for code in grpc.StatusCode:
        if code.value[0] == value:
            return code
    return grpc.StatusCode.UNKNOWN


def _with_ids(requests: Iterable[ExecuteRequest]) -> Iterator[ExecuteRequest]:
    prefix = uuid.uuid4().hex[:16]
    for n, req in enumerate(requests):
        yield req if req.id else replace(req, id=f"{prefix}-{n}")


def _outcome(response: pb.ExecuteResponse) -> Outcome:
    if response.HasField("error"):
        return Refused(_code(response.error.code), response.error.message)
    return result_from_pb(response.result)


def _rpc_refusal(exc: grpc.RpcError) -> Refused:
    code = exc.code() if callable(getattr(exc, "code", None)) else grpc.StatusCode.UNKNOWN
    details = exc.details() if callable(getattr(exc, "details", None)) else str(exc)
    return Refused(code, details or str(code))


class _Batch:
    """Bookkeeping of one execute_many: what is unsent, in flight, waiting to retry."""

    def __init__(self, requests: Iterable[ExecuteRequest], policy: RetryPolicy) -> None:
        self.fresh = _with_ids(requests)
        self.policy = policy
        self.in_flight: dict[str, ExecuteRequest] = {}
        self.retry: list[tuple[float, ExecuteRequest]] = []
        self.attempts: dict[str, int] = {}
        self.messages: dict[str, pb.ExecuteRequest] = {}
        self.local: list[tuple[str, Outcome]] = []
        """Answers given here, without a server: requests that cannot be sent at all."""
        self.exhausted = False

    def next_due(self, now: float) -> ExecuteRequest | None:
        """A request to send now: a retry whose backoff passed, else a fresh one."""
        for i, (when, req) in enumerate(self.retry):
            if when <= now:
                del self.retry[i]
                return self._sent(req)
        while not self.exhausted:
            try:
                req = next(self.fresh)
            except StopIteration:
                self.exhausted = True
                return None
            try:
                # Converted once, here, for every try: a string protobuf cannot encode
                # (a lone surrogate) is this request's refusal, not the stream's failure.
                self.messages[req.id] = request_to_pb(req)
            except (UnicodeEncodeError, ValueError) as exc:
                self.local.append((req.id, Refused(grpc.StatusCode.INVALID_ARGUMENT,
                                                   f"the request cannot be encoded for the wire: {exc}")))
                continue
            return self._sent(req)
        return None

    def message(self, req: ExecuteRequest) -> pb.ExecuteRequest:
        return self.messages[req.id]

    def take_local(self) -> list[tuple[str, Outcome]]:
        taken, self.local = self.local, []
        return taken

    def _sent(self, req: ExecuteRequest) -> ExecuteRequest:
        self.in_flight[req.id] = req
        self.attempts[req.id] = self.attempts.get(req.id, 0) + 1
        return req

    def answered(self, rid: str, outcome: Outcome) -> Outcome | None:
        """The final outcome for ``rid``, or None when it was queued for a retry."""
        req = self.in_flight.pop(rid, None)
        if req is None:
            return None  # an answer for an id we no longer wait for
        if retryable(outcome) and self.attempts[rid] < self.policy.max_attempts:
            self.retry.append((time.monotonic() + self.policy.backoff(self.attempts[rid]), req))
            return None
        self.messages.pop(rid, None)
        return outcome

    def broken(self, ids: Iterable[str], refusal: Refused) -> list[tuple[str, Outcome]]:
        """A stream broke: what it had in flight is retried or, out of tries, final."""
        finals = []
        for rid in list(ids):
            if rid in self.in_flight:
                final = self.answered(rid, refusal)
                if final is not None:
                    finals.append((rid, final))
        return finals

    @property
    def done(self) -> bool:
        return self.exhausted and not self.in_flight and not self.retry and not self.local

    def next_retry_due(self) -> bool:
        """A retry can be sent now."""
        now = time.monotonic()
        return any(when <= now for when, _ in self.retry)

    def wait_s(self) -> float:
        if not self.retry:
            return 0.0
        return max(0.0, min(when for when, _ in self.retry) - time.monotonic())


_ENDED = Refused(grpc.StatusCode.UNAVAILABLE, "the stream ended before answering")


class _Backends:
    """What both clients share: one channel and stub per backend, and the retry plan."""

    def __init__(self, target: str | Iterable[str], retry: RetryPolicy | None, channel: Any) -> None:
        self.retry = retry or RetryPolicy()
        self.backends = backends_of(target)
        if not self.backends:
            raise ValueError("no backend address given")
        self._channels = [channel(b, options=_OPTIONS) for b in self.backends]
        self._stubs = [pb_grpc.SandboxStub(c) for c in self._channels]  # type: ignore[no-untyped-call]
        self._turn = itertools.count()

    def _stub(self) -> Any:
        return self._stubs[next(self._turn) % len(self._stubs)]

    def _attempts(
        self, request: ExecuteRequest, timeout_s: float | None
    ) -> Iterator[tuple[int, pb.ExecuteRequest, float | None]]:
        """``(attempt, message, remaining deadline)`` for each try of one request."""
        if not request.id:
            request = replace(request, id=uuid.uuid4().hex)
        message = request_to_pb(request)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        for attempt in range(1, self.retry.max_attempts + 1):
            yield attempt, message, None if deadline is None else max(0.0, deadline - time.monotonic())

    def _final(self, attempt: int, result: RunResult | None = None, error: grpc.RpcError | None = None) -> bool:
        """Whether this try's answer is the one to give (else: back off and retry)."""
        if attempt == self.retry.max_attempts:
            return True
        if error is not None:
            return _rpc_refusal(error).code not in _RETRYABLE_CODES
        return result is not None and result.status is not Status.SANDBOX_ERROR


class Client(_Backends):
    """Synchronous client of ``sandbox.v1.Sandbox``.

    Args:
        target: ``HOST:PORT``, a list of them, or any gRPC target such as
            ``dns:///sandbox.example:50051``. With several backends, unary calls go
            round-robin and ``execute_many`` keeps one stream open to each.
        retry: how infrastructure failures are retried (:data:`NO_RETRY` to disable).
    """

    def __init__(self, target: str | Iterable[str], retry: RetryPolicy | None = None) -> None:
        super().__init__(target, retry, grpc.insecure_channel)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for channel in self._channels:
            channel.close()

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        """Blocks until every backend's channel connects."""
        for channel in self._channels:
            grpc.channel_ready_future(channel).result(timeout=timeout_s)

    def execute(self, request: ExecuteRequest, timeout_s: float | None = None) -> RunResult:
        """Runs one request, retrying infrastructure failures (on the next backend).

        Raises:
            grpc.RpcError: the server refused the request (bad input, deadline), or
                kept failing for ``retry.max_attempts`` tries.
        """
        for attempt, message, remaining in self._attempts(request, timeout_s):
            try:
                result = result_from_pb(self._stub().Execute(message, timeout=remaining).result)
            except grpc.RpcError as exc:
                if self._final(attempt, error=exc):
                    raise
            else:
                if self._final(attempt, result=result):
                    return result
            time.sleep(self.retry.backoff(attempt))
        raise AssertionError("unreachable")  # pragma: no cover

    def execute_many(self, requests: Iterable[ExecuteRequest], window: int = 256) -> Iterator[tuple[str, Outcome]]:
        """Streams ``requests`` with at most ``window`` in flight; yields as they finish.

        Each request's id (generated when empty) appears exactly once in the output,
        with its final outcome after retries. Ids must be unique. With several
        backends, one stream per backend shares the work and the window; requests a
        failing backend held are retried on the others.
        """
        batch = _Batch(requests, self.retry)
        lock = threading.Condition()
        stop = threading.Event()
        share = max(1, window // len(self._stubs))

        def streams(stub: Any) -> Iterator[tuple[str, Outcome]]:
            """One backend's streams, one after another until the batch is done."""
            while not stop.is_set():
                with lock:
                    local = batch.take_local()
                    if batch.done and not local:
                        return
                yield from local
                with lock:
                    if batch.exhausted and not batch.next_retry_due():
                        lock.wait(min(0.2, batch.wait_s() or 0.2))
                        continue
                yield from self._one_stream(stub, batch, share, lock, stop)

        if len(self._stubs) == 1:
            # One backend: the caller's thread reads the stream itself. A worker thread
            # and a queue would add two thread hand-offs per result and nothing else.
            try:
                yield from streams(self._stubs[0])
            except Exception as exc:  # noqa: BLE001 - reported like a worker's failure
                yield "", Refused(grpc.StatusCode.INTERNAL, f"client worker failed: {exc!r}")
            finally:
                stop.set()
                with lock:
                    lock.notify_all()
            return

        out: queue.Queue[tuple[str, Outcome] | None] = queue.Queue()

        def worker(stub: Any) -> None:
            try:
                for item in streams(stub):
                    out.put(item)
            except BaseException as exc:  # noqa: BLE001 - surfaced to the caller below
                out.put(("", Refused(grpc.StatusCode.INTERNAL, f"client worker failed: {exc!r}")))
            finally:
                out.put(None)

        threads = [threading.Thread(target=worker, args=(stub,), daemon=True) for stub in self._stubs]
        for t in threads:
            t.start()
        running = len(threads)
        try:
            while running:
                item = out.get()
                if item is None:
                    running -= 1
                    with lock:
                        lock.notify_all()
                    continue
                yield item
        finally:
            stop.set()
            with lock:
                lock.notify_all()
            for t in threads:
                t.join(timeout=10)

    def _one_stream(
        self, stub: Any, batch: _Batch, window: int, lock: threading.Condition, stop: threading.Event
    ) -> Iterator[tuple[str, Outcome]]:
        mine: set[str] = set()

        def feed() -> Iterator[pb.ExecuteRequest]:
            while not stop.is_set():
                with lock:
                    while len(mine) >= window and not stop.is_set():
                        lock.wait(0.05)
                    req = batch.next_due(time.monotonic())
                    if req is None:
                        if batch.exhausted and not mine and not batch.next_retry_due():
                            return  # nothing left for this stream now: close it
                        lock.wait(0.02)
                        continue
                    mine.add(req.id)
                    message = batch.message(req)
                yield message

        call = stub.ExecuteStream(feed())
        try:
            for response in call:
                with lock:
                    mine.discard(response.id)
                    final = batch.answered(response.id, _outcome(response))
                    local = batch.take_local() if batch.local else ()
                    lock.notify_all()
                if final is not None:
                    yield response.id, final
                yield from local
        except grpc.RpcError as exc:
            with lock:
                finals = batch.broken(mine, _rpc_refusal(exc))
                mine.clear()
                lock.notify_all()
            yield from finals
            if not finals and not stop.is_set():
                time.sleep(self.retry.backoff(1))
        finally:
            call.cancel()
        with lock:
            finals = batch.broken(mine, _ENDED) + batch.take_local()
            lock.notify_all()
        yield from finals


class AsyncClient(_Backends):
    """asyncio client of ``sandbox.v1.Sandbox``; see :class:`Client`."""

    def __init__(self, target: str | Iterable[str], retry: RetryPolicy | None = None) -> None:
        super().__init__(target, retry, grpc.aio.insecure_channel)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()

    async def execute(self, request: ExecuteRequest, timeout_s: float | None = None) -> RunResult:
        """Runs one request, retrying infrastructure failures (see :meth:`Client.execute`)."""
        for attempt, message, remaining in self._attempts(request, timeout_s):
            try:
                result = result_from_pb((await self._stub().Execute(message, timeout=remaining)).result)
            except grpc.RpcError as exc:
                if self._final(attempt, error=exc):
                    raise
            else:
                if self._final(attempt, result=result):
                    return result
            await asyncio.sleep(self.retry.backoff(attempt))
        raise AssertionError("unreachable")  # pragma: no cover

    async def execute_many(
        self, requests: Iterable[ExecuteRequest], window: int = 256
    ) -> AsyncIterator[tuple[str, Outcome]]:
        """Streams ``requests``; see :meth:`Client.execute_many`."""
        batch = _Batch(requests, self.retry)
        wake = asyncio.Event()
        out: asyncio.Queue[tuple[str, Outcome] | None] = asyncio.Queue()
        share = max(1, window // len(self._stubs))

        async def worker(stub: Any) -> None:
            try:
                while not batch.done:
                    for item in batch.take_local():
                        out.put_nowait(item)
                    if batch.done:
                        break
                    if batch.exhausted and not batch.next_retry_due():
                        wake.clear()
                        try:
                            await asyncio.wait_for(wake.wait(), min(0.2, batch.wait_s() or 0.2))
                        except TimeoutError:
                            pass
                        continue
                    async for item in self._one_stream(stub, batch, share, wake):
                        out.put_nowait(item)
            except Exception as exc:  # noqa: BLE001 - surfaced to the caller below
                out.put_nowait(("", Refused(grpc.StatusCode.INTERNAL, f"client worker failed: {exc!r}")))
            finally:
                out.put_nowait(None)

        tasks = [asyncio.create_task(worker(stub)) for stub in self._stubs]
        running = len(tasks)
        try:
            while running:
                item = await out.get()
                if item is None:
                    running -= 1
                    wake.set()
                    continue
                yield item
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _one_stream(
        self, stub: Any, batch: _Batch, window: int, wake: asyncio.Event
    ) -> AsyncIterator[tuple[str, Outcome]]:
        mine: set[str] = set()

        async def feed() -> AsyncIterator[pb.ExecuteRequest]:
            while True:
                while len(mine) >= window:
                    wake.clear()
                    await wake.wait()
                req = batch.next_due(time.monotonic())
                if req is None:
                    if batch.exhausted and not mine and not batch.next_retry_due():
                        return
                    wake.clear()
                    try:
                        await asyncio.wait_for(wake.wait(), 0.02)
                    except TimeoutError:
                        pass
                    continue
                mine.add(req.id)
                yield batch.message(req)

        call = stub.ExecuteStream(feed())
        try:
            async for response in call:
                mine.discard(response.id)
                final = batch.answered(response.id, _outcome(response))
                wake.set()
                if final is not None:
                    yield response.id, final
                for item in batch.take_local() if batch.local else ():
                    yield item
        except grpc.RpcError as exc:
            finals = batch.broken(mine, _rpc_refusal(exc))
            mine.clear()
            wake.set()
            for item in finals:
                yield item
            if not finals:
                await asyncio.sleep(self.retry.backoff(1))
        finally:
            call.cancel()
        for item in batch.broken(mine, _ENDED) + batch.take_local():
            yield item
        wake.set()


__all__ = ["NO_RETRY", "AsyncClient", "Client", "Outcome", "Refused", "RetryPolicy", "backends_of", "retryable"]
