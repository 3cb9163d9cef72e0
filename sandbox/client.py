"""The client side: needs grpcio and protobuf only, never the server's dependencies.

:class:`Client` is synchronous; :class:`AsyncClient` is its asyncio twin. Both offer
``execute`` for one request and ``execute_many`` to stream many over one
``ExecuteStream`` with a bounded number in flight, yielding results as they finish.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, replace

import grpc

from sandbox._proto.sandbox.v1 import sandbox_pb2 as pb
from sandbox._proto.sandbox.v1 import sandbox_pb2_grpc as pb_grpc
from sandbox.convert import request_to_pb, result_from_pb
from sandbox.domain import ExecuteRequest, RunResult

_OPTIONS = [
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 16 * 1024 * 1024),
    ("grpc.lb_policy_name", "round_robin"),
]


@dataclass(frozen=True)
class Refused:
    """A request the server refused on a stream (bad input, overload)."""

    code: grpc.StatusCode
    message: str


def _target(target: str | list[str]) -> str:
    """gRPC target for one address, a list of addresses, or a DNS name."""
    if isinstance(target, str):
        return target
    if len(target) == 1:
        return target[0]
    return "ipv4:" + ",".join(target)


def _code(value: int) -> grpc.StatusCode:
    for code in grpc.StatusCode:
        if code.value[0] == value:
            return code
    return grpc.StatusCode.UNKNOWN


def _ids(requests: Iterable[ExecuteRequest]) -> Iterator[ExecuteRequest]:
    counter = itertools.count()
    for req in requests:
        yield req if req.id else replace(req, id=f"r{next(counter)}")


class Client:
    """Synchronous client of ``sandbox.v1.Sandbox``.

    Args:
        target: ``HOST:PORT``, a list of them (round-robin), or any gRPC target
            such as ``dns:///sandbox.example:50051``.
    """

    def __init__(self, target: str | list[str]) -> None:
        self._channel = grpc.insecure_channel(_target(target), options=_OPTIONS)
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
        """Runs one request. Raises ``grpc.RpcError`` when the server refuses it."""
        response = self._stub.Execute(request_to_pb(request), timeout=timeout_s)
        return result_from_pb(response.result)

    def execute_many(
        self, requests: Iterable[ExecuteRequest], window: int = 256
    ) -> Iterator[tuple[str, RunResult | Refused]]:
        """Streams ``requests`` with at most ``window`` in flight; yields as they finish.

        Requests without an id get one (``r0``, ``r1``, ...); ids must be unique.
        """
        slots = threading.Semaphore(window)
        done = threading.Event()

        def feed() -> Iterator[pb.ExecuteRequest]:
            for req in _ids(requests):
                while not slots.acquire(timeout=0.1):
                    if done.is_set():
                        return
                if done.is_set():
                    return
                yield request_to_pb(req)

        call = self._stub.ExecuteStream(feed())
        try:
            for response in call:
                slots.release()
                if response.HasField("error"):
                    yield response.id, Refused(_code(response.error.code), response.error.message)
                else:
                    yield response.id, result_from_pb(response.result)
        finally:
            done.set()
            call.cancel()


class AsyncClient:
    """asyncio client of ``sandbox.v1.Sandbox``; see :class:`Client`."""

    def __init__(self, target: str | list[str]) -> None:
        self._channel = grpc.aio.insecure_channel(_target(target), options=_OPTIONS)
        self._stub = pb_grpc.SandboxStub(self._channel)  # type: ignore[no-untyped-call]

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    async def execute(self, request: ExecuteRequest, timeout_s: float | None = None) -> RunResult:
        response = await self._stub.Execute(request_to_pb(request), timeout=timeout_s)
        return result_from_pb(response.result)

    async def execute_many(
        self, requests: Iterable[ExecuteRequest], window: int = 256
    ) -> AsyncIterator[tuple[str, RunResult | Refused]]:
        slots = asyncio.Semaphore(window)

        async def feed() -> AsyncIterator[pb.ExecuteRequest]:
            for req in _ids(requests):
                await slots.acquire()
                yield request_to_pb(req)

        call = self._stub.ExecuteStream(feed())
        try:
            async for response in call:
                slots.release()
                if response.HasField("error"):
                    yield response.id, Refused(_code(response.error.code), response.error.message)
                else:
                    yield response.id, result_from_pb(response.result)
        finally:
            call.cancel()


__all__ = ["AsyncClient", "Client", "Refused"]
