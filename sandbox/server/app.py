"""Assembling the server: engine, image, pool, scheduler, gRPC services, metrics.

:class:`SandboxServer` runs on an asyncio loop; :class:`EmbeddedServer` runs one on a
private loop in a background thread for commands (``sandbox run``, ``sandbox eval``)
and tests that want a server for the duration of a ``with`` block.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from sandbox._proto.sandbox.v1 import sandbox_pb2 as pb
from sandbox._proto.sandbox.v1 import sandbox_pb2_grpc as pb_grpc
from sandbox.errors import EngineError
from sandbox.server.backend import Backend, DockerBackend
from sandbox.server.image import ensure_image
from sandbox.server.logs import get_logger
from sandbox.server.metrics import Metrics
from sandbox.server.pool import Pool
from sandbox.server.scheduler import Scheduler
from sandbox.server.servicer import SandboxServicer
from sandbox.server.settings import Settings

log = get_logger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Sandbox"].full_name
_ENGINE_WATCH_S = 5.0


class SandboxServer:
    """One server: a pool of containers behind a gRPC endpoint."""

    def __init__(self, settings: Settings, backend: Backend | None = None, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self._backend = backend
        self.pool: Pool | None = None
        self.scheduler: Scheduler | None = None
        self._grpc: grpc.aio.Server | None = None
        self._health = health.aio.HealthServicer()
        self._watch: asyncio.Task[None] | None = None
        self._metrics_server: Any = None
        self.port = 0

    async def _set_health(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", SERVICE_NAME):
            await self._health.set(name, status)

    async def start(self) -> None:
        """Binds the port (NOT_SERVING), warms the pool, then reports SERVING."""
        s = self.settings
        self._grpc = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", 16 * 1024 * 1024),
                ("grpc.max_send_message_length", 64 * 1024 * 1024),
                ("grpc.so_reuseport", 0),
            ]
        )
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._grpc)
        # Registered before start (grpc.aio takes no handler after it); requests that
        # come before the pool is warm are answered UNAVAILABLE.
        servicer = SandboxServicer(None, s, self.metrics)
        pb_grpc.add_SandboxServicer_to_server(servicer, self._grpc)  # type: ignore[no-untyped-call]
        reflection.enable_server_reflection(
            (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
            self._grpc,
        )
        self.port = self._grpc.add_insecure_port(s.listen)
        if not self.port:
            raise EngineError(f"cannot listen on {s.listen}")
        await self._set_health(False)
        await self._grpc.start()
        if s.metrics_listen:
            from prometheus_client import start_http_server

            host, _, port = s.metrics_listen.rpartition(":")
            self._metrics_server = start_http_server(int(port), addr=host or "0.0.0.0", registry=self.metrics.registry)

        if self._backend is None:
            docker_backend = DockerBackend(s.docker_host)
            if not await docker_backend.ping():
                raise EngineError("the Docker engine does not answer: start dockerd (scripts/ensure-engine.sh)")
            image = await asyncio.to_thread(ensure_image, docker_backend.api, s.image)
            self._backend = docker_backend
        else:
            image = s.image or "fake"
        self.pool = Pool(s, self._backend, image, self.metrics)
        self.metrics.pool_target.labels(s.runtime).set(s.pool_size)
        self.scheduler = Scheduler(self.pool, self.metrics, s.max_queue, s.runtime, s.max_queue_wait_s)
        log.info("pool_warming", pool=s.pool_name, size=s.pool_size, runtime=s.runtime, image=image)
        await self.pool.start()
        servicer.scheduler = self.scheduler
        await self._set_health(True)
        self._watch = asyncio.get_running_loop().create_task(self._watch_engine())
        log.info("server_serving", listen=s.listen, port=self.port, pool=s.pool_name)

    async def _watch_engine(self) -> None:
        serving = True
        assert self._backend is not None
        while True:
            await asyncio.sleep(_ENGINE_WATCH_S)
            up = await self._backend.ping() and not (self.pool and self.pool.fatal)
            if up != serving:
                serving = up
                await self._set_health(up)
                log.warning("engine_reachability_changed", reachable=up)

    async def stop(self, grace_s: float = 30.0) -> None:
        """Stops taking requests, lets in-flight runs finish, removes the pool."""
        await self._set_health(False)
        if self._watch:
            self._watch.cancel()
        if self._grpc:
            await self._grpc.stop(grace_s)
        if self.pool:
            await self.pool.close()
        if self._metrics_server is not None:
            server, thread = self._metrics_server
            server.shutdown()
            server.server_close()
            self._metrics_server = None
        log.info("server_stopped", pool=self.settings.pool_name)

    async def wait(self) -> None:
        assert self._grpc is not None
        await self._grpc.wait_for_termination()


class EmbeddedServer:
    """A server on a background thread, for the duration of a ``with`` block."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="sandbox-server", daemon=True)
        self.server = SandboxServer(settings)

    @property
    def target(self) -> str:
        host = self.settings.listen.rpartition(":")[0] or "127.0.0.1"
        return f"{host}:{self.server.port}"

    def __enter__(self) -> EmbeddedServer:
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self.server.start(), self._loop).result()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self.server.stop(grace_s=5.0), self._loop).result(timeout=120)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
