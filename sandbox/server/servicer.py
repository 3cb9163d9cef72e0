"""The gRPC servicer: validation, proto <-> domain, streaming. No policy lives here."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from typing import Any

import grpc

from sandbox._proto.sandbox.v1 import sandbox_pb2 as pb
from sandbox._proto.sandbox.v1 import sandbox_pb2_grpc as pb_grpc
from sandbox.convert import request_from_pb, result_to_pb
from sandbox.errors import SandboxError, ShuttingDownError, grpc_status_name
from sandbox.server.idempotency import IdempotencyCache
from sandbox.server.logs import get_logger
from sandbox.server.metrics import Metrics
from sandbox.server.scheduler import Scheduler
from sandbox.server.settings import Settings

log = get_logger(__name__)


def _code(error: BaseException) -> grpc.StatusCode:
    return getattr(grpc.StatusCode, grpc_status_name(error))


def _refusal(request_id: str, code: grpc.StatusCode, message: str) -> pb.ExecuteResponse:
    """A per-request error on a stream, which goes on."""
    return pb.ExecuteResponse(id=request_id, error=pb.Error(code=code.value[0], message=message))


class SandboxServicer(pb_grpc.SandboxServicer):
    """Implements ``sandbox.v1.Sandbox``."""

    def __init__(self, scheduler: Scheduler | None, settings: Settings, metrics: Metrics) -> None:
        self.scheduler = scheduler
        self.settings = settings
        self.metrics = metrics
        self.dedup = IdempotencyCache(settings.idempotency_entries, settings.idempotency_ttl_s)
        self._counters: dict[tuple[str, str], Any] = {}

    def _count(self, method: str, code: str) -> None:
        """Counts one answered call; the counter's children are looked up once, not per call."""
        child = self._counters.get((method, code))
        if child is None:
            child = self._counters[method, code] = self.metrics.grpc_requests.labels(method, code)
        child.inc()

    async def _answer(self, msg: pb.ExecuteRequest, timeout_s: float | None) -> pb.ExecuteResponse:
        """Runs one request; raises SandboxError for a refusal."""
        request = request_from_pb(msg, self.settings.defaults, self.settings.bounds)
        scheduler = self.scheduler
        if scheduler is None:
            raise ShuttingDownError("the server is starting: its pool is not warm yet")
        if request.deadline_s:
            timeout_s = request.deadline_s if timeout_s is None else min(timeout_s, request.deadline_s)
        fingerprint = hashlib.blake2b(msg.SerializeToString(deterministic=True), digest_size=16).digest()
        result = await self.dedup.run(msg.id, fingerprint, lambda: scheduler.execute(request, timeout_s))
        response = pb.ExecuteResponse(id=msg.id)
        result_to_pb(result, response.result)
        return response

    async def Execute(self, request: pb.ExecuteRequest, context: grpc.aio.ServicerContext) -> pb.ExecuteResponse:  # noqa: N802
        try:
            response = await self._answer(request, context.time_remaining())
        except asyncio.CancelledError:
            self._count("Execute", "CANCELLED")
            raise
        except SandboxError as exc:
            code = _code(exc)
            self._count("Execute", code.name)
            await context.abort(code, str(exc))
        self._count("Execute", "OK")
        return response

    async def ExecuteStream(  # noqa: N802
        self, request_iterator: AsyncIterator[pb.ExecuteRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ExecuteResponse]:
        window = asyncio.Semaphore(self.settings.stream_window)
        out: asyncio.Queue[pb.ExecuteResponse | None] = asyncio.Queue()
        in_flight: set[str] = set()
        tasks: set[asyncio.Task[Any]] = set()

        async def one(msg: pb.ExecuteRequest) -> None:
            try:
                response = await self._answer(msg, context.time_remaining())
            except SandboxError as exc:
                response = _refusal(msg.id, _code(exc), str(exc))
            except Exception as exc:  # noqa: BLE001 - every accepted request gets an answer
                log.exception("stream_item_failed", request_id=msg.id)
                response = _refusal(msg.id, grpc.StatusCode.INTERNAL, f"internal error: {exc!r}")
            in_flight.discard(msg.id)
            window.release()
            out.put_nowait(response)

        async def read() -> None:
            try:
                async for msg in request_iterator:
                    await window.acquire()
                    if msg.id in in_flight:
                        window.release()
                        message = f"id {msg.id!r} is already in flight on this stream"
                        out.put_nowait(_refusal(msg.id, grpc.StatusCode.INVALID_ARGUMENT, message))
                        continue
                    in_flight.add(msg.id)
                    task = asyncio.get_running_loop().create_task(one(msg))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                if tasks:
                    await asyncio.gather(*list(tasks), return_exceptions=True)
            finally:
                out.put_nowait(None)

        reader = asyncio.get_running_loop().create_task(read())
        try:
            while True:
                response = await out.get()
                if response is None:
                    break
                yield response
            await reader
            self._count("ExecuteStream", "OK")
        except asyncio.CancelledError:
            self._count("ExecuteStream", "CANCELLED")
            raise
        finally:
            if not reader.done():
                reader.cancel()
            for task in list(tasks):
                task.cancel()
