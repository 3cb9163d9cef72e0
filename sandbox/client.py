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
import random
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, replace

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
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
        return [f"[{host}]:{port}" if ":" in host else address]
    except OSError:
        pass
    infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
    return sorted({f"[{i[4][0]}]:{port}" if i[0] == socket.AF_INET6 else f"{i[4][0]}:{port}" for i in infos})


def target_of(target: str | Iterable[str]) -> str:
    """gRPC target for ``HOST:PORT``, a gRPC URI, or a list of ``HOST:PORT``."""
    if isinstance(target, str):
        return target
    addresses = [a for t in target for a in _resolve(t)]
    if len(addresses) == 1:
        return addresses[0]
    if all(not a.startswith("[") for a in addresses):
        return "ipv4:" + ",".join(addresses)
    return "ipv6:" + ",".join(addresses)


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
        self.exhausted = False

    def next_due(self, now: float) -> ExecuteRequest | None:
        """A request to send now: a retry whose backoff passed, else a fresh one."""
        for i, (when, req) in enumerate(self.retry):
            if when <= now:
                del self.retry[i]
                return self._sent(req)
        if self.exhausted:
            return None
        try:
            return self._sent(next(self.fresh))
        except StopIteration:
            self.exhausted = True
            return None

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
        return outcome

    def broken(self, refusal: Refused) -> list[tuple[str, Outcome]]:
        """The stream broke: everything in flight is retried or, out of tries, final."""
        finals = []
        for rid in list(self.in_flight):
            final = self.answered(rid, refusal)
            if final is not None:
                finals.append((rid, final))
        return finals

    @property
    def done(self) -> bool:
        return self.exhausted and not self.in_flight and not self.retry

    def wait_s(self) -> float:
        if not self.retry:
            return 0.0
        return max(0.0, min(when for when, _ in self.retry) - time.monotonic())


class Client:
    """Synchronous client of ``sandbox.v1.Sandbox``.

    Args:
        target: ``HOST:PORT``, a list of them (round-robin), or any gRPC target such
            as ``dns:///sandbox.example:50051``.
        retry: how infrastructure failures are retried (:data:`NO_RETRY` to disable).
    """

    def __init__(self, target: str | Iterable[str], retry: RetryPolicy | None = None) -> None:
        self.retry = retry or RetryPolicy()
        self._channel = grpc.insecure_channel(target_of(target), options=_OPTIONS)
        self._stub = pb_grpc.SandboxStub(self._channel)  # type: ignore[no-untyped-call]

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        """Blocks until the channel connects."""
        grpc.channel_ready_future(self._channel).result(timeout=timeout_s)

    def execute(self, request: ExecuteRequest, timeout_s: float | None = None) -> RunResult:
        """Runs one request, retrying infrastructure failures.

        Raises:
            grpc.RpcError: the server refused the request (bad input, deadline), or
                kept failing for ``retry.max_attempts`` tries.
        """
        if not request.id:
            request = replace(request, id=uuid.uuid4().hex)
        message = request_to_pb(request)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        for attempt in range(1, self.retry.max_attempts + 1):
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                result = result_from_pb(self._stub.Execute(message, timeout=remaining).result)
            except grpc.RpcError as exc:
                if _rpc_refusal(exc).code not in _RETRYABLE_CODES or attempt == self.retry.max_attempts:
                    raise
            else:
                if result.status is not Status.SANDBOX_ERROR or attempt == self.retry.max_attempts:
                    return result
            time.sleep(self.retry.backoff(attempt))
        raise AssertionError("unreachable")  # pragma: no cover

    def execute_many(self, requests: Iterable[ExecuteRequest], window: int = 256) -> Iterator[tuple[str, Outcome]]:
        """Streams ``requests`` with at most ``window`` in flight; yields as they finish.

        Each request's id (generated when empty) appears exactly once in the output,
        with its final outcome after retries. Ids must be unique.
        """
        batch = _Batch(requests, self.retry)
        while not batch.done:
            time.sleep(batch.wait_s() if not batch.in_flight and batch.exhausted else 0)
            yield from self._one_stream(batch, window)

    def _one_stream(self, batch: _Batch, window: int) -> Iterator[tuple[str, Outcome]]:
        lock = threading.Condition()
        stop = threading.Event()

        def feed() -> Iterator[pb.ExecuteRequest]:
            while not stop.is_set():
                with lock:
                    while len(batch.in_flight) >= window and not stop.is_set():
                        lock.wait(0.05)
                    req = batch.next_due(time.monotonic())
                    if req is None:
                        if batch.exhausted and not batch.in_flight and not batch.retry:
                            return
                        if batch.exhausted and not batch.in_flight:
                            return  # only retries left, not yet due: close this stream
                        lock.wait(0.02)
                        continue
                yield request_to_pb(req)

        call = self._stub.ExecuteStream(feed())
        try:
            for response in call:
                with lock:
                    final = batch.answered(response.id, _outcome(response))
                    lock.notify_all()
                if final is not None:
                    yield response.id, final
        except grpc.RpcError as exc:
            with lock:
                finals = batch.broken(_rpc_refusal(exc))
            yield from finals
            if not finals:
                time.sleep(self.retry.backoff(1))
        finally:
            stop.set()
            call.cancel()
        with lock:
            finals = batch.broken(Refused(grpc.StatusCode.UNAVAILABLE, "the stream ended before answering"))
        yield from finals


class AsyncClient:
    """asyncio client of ``sandbox.v1.Sandbox``; see :class:`Client`."""

    def __init__(self, target: str | Iterable[str], retry: RetryPolicy | None = None) -> None:
        self.retry = retry or RetryPolicy()
        self._channel = grpc.aio.insecure_channel(target_of(target), options=_OPTIONS)
        self._stub = pb_grpc.SandboxStub(self._channel)  # type: ignore[no-untyped-call]

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    async def execute(self, request: ExecuteRequest, timeout_s: float | None = None) -> RunResult:
        """Runs one request, retrying infrastructure failures (see :meth:`Client.execute`)."""
        if not request.id:
            request = replace(request, id=uuid.uuid4().hex)
        message = request_to_pb(request)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        for attempt in range(1, self.retry.max_attempts + 1):
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                result = result_from_pb((await self._stub.Execute(message, timeout=remaining)).result)
            except grpc.RpcError as exc:
                if _rpc_refusal(exc).code not in _RETRYABLE_CODES or attempt == self.retry.max_attempts:
                    raise
            else:
                if result.status is not Status.SANDBOX_ERROR or attempt == self.retry.max_attempts:
                    return result
            await asyncio.sleep(self.retry.backoff(attempt))
        raise AssertionError("unreachable")  # pragma: no cover

    async def execute_many(
        self, requests: Iterable[ExecuteRequest], window: int = 256
    ) -> AsyncIterator[tuple[str, Outcome]]:
        """Streams ``requests``; see :meth:`Client.execute_many`."""
        batch = _Batch(requests, self.retry)
        while not batch.done:
            if not batch.in_flight and batch.exhausted:
                await asyncio.sleep(batch.wait_s())
            async for item in self._one_stream(batch, window):
                yield item

    async def _one_stream(self, batch: _Batch, window: int) -> AsyncIterator[tuple[str, Outcome]]:
        wake = asyncio.Event()

        async def feed() -> AsyncIterator[pb.ExecuteRequest]:
            while True:
                while len(batch.in_flight) >= window:
                    wake.clear()
                    await wake.wait()
                req = batch.next_due(time.monotonic())
                if req is None:
                    if batch.exhausted and not batch.in_flight:
                        return
                    wake.clear()
                    try:
                        await asyncio.wait_for(wake.wait(), 0.02)
                    except TimeoutError:
                        pass
                    continue
                yield request_to_pb(req)

        call = self._stub.ExecuteStream(feed())
        try:
            async for response in call:
                final = batch.answered(response.id, _outcome(response))
                wake.set()
                if final is not None:
                    yield response.id, final
        except grpc.RpcError as exc:
            finals = batch.broken(_rpc_refusal(exc))
            for item in finals:
                yield item
            if not finals:
                await asyncio.sleep(self.retry.backoff(1))
        finally:
            call.cancel()
        for item in batch.broken(Refused(grpc.StatusCode.UNAVAILABLE, "the stream ended before answering")):
            yield item


__all__ = ["NO_RETRY", "AsyncClient", "Client", "Outcome", "Refused", "RetryPolicy", "retryable", "target_of"]
