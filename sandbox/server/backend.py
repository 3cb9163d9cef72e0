"""The container backend: the seam between the pool and the Docker engine.

:class:`Backend` is the protocol the pool uses; :class:`DockerBackend` implements it
against the real engine (the docker SDK for lifecycle calls, run in threads, and a
hijacked attach connection, on the event loop, for the agent's channel). Unit tests
implement the protocol with a fake.

The channel is one long-lived ``POST /containers/{id}/attach`` upgraded to a raw
stream, opened once when the container starts, so a run costs no Engine API call:
frames go to the agent's stdin, and its stdout comes back in Docker's multiplexed
format (8-byte header: stream type, 3 zero bytes, big-endian length).

Rejected: ``docker exec`` per run (an API round trip and a process start per run);
the SDK's ``attach_socket`` (a blocking socket needing a thread per container).
"""

from __future__ import annotations

import asyncio
import collections
import os
import struct
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from sandbox.agent.agent import FrameReader, encode_frame
from sandbox.errors import AgentError, EngineError
from sandbox.server.hardening import MANAGED_LABEL, POOL_LABEL
from sandbox.server.logs import get_logger

_MUX_HEADER = struct.Struct(">BxxxI")
_MAX_HEAD = 1 << 22  # bytes of the engine's HTTP answer to attach, at most
_API_VERSION = "1.41"

log = get_logger(__name__)


class Channel(Protocol):
    """Framed, ordered messages to and from one agent."""

    async def send(self, message: Mapping[str, Any]) -> None: ...

    async def recv(self) -> dict[str, Any]: ...

    def close(self) -> None: ...

    def on_lost(self, callback: Callable[[], None]) -> None:
        """Calls ``callback`` once if the stream ends without :meth:`close`."""


class Backend(Protocol):
    """What the pool needs from a container engine."""

    async def create(self, name: str, config: Mapping[str, Any]) -> str: ...

    async def inspect(self, container_id: str) -> dict[str, Any]: ...

    async def start(self, container_id: str) -> Channel: ...

    async def remove(self, container_id: str) -> None: ...

    async def list_pool(self, pool: str) -> list[str]: ...

    async def ping(self) -> bool: ...


async def _woken_in(waiters: list[asyncio.Future[None]]) -> None:
    """Waits on a future of its own in ``waiters`` until the channel resolves it."""
    waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    waiters.append(waiter)
    try:
        await waiter
    finally:
        waiters.remove(waiter)


class AttachChannel(asyncio.Protocol):
    """The agent's stdio over a hijacked attach connection.

    A protocol rather than a stream reader drained by a pump task: the bytes are
    demultiplexed and the agent's frames decoded in :meth:`data_received`, which hands
    a report straight to the waiting :meth:`recv`, one loop step per report instead of
    three (the pump's wake-up, its queue put, the reader's wake-up).
    """

    def __init__(self, container_id: str) -> None:
        self._container_id = container_id
        self._transport: asyncio.BaseTransport | None = None
        self._buffer = bytearray()
        self._upgraded = False
        self._head: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        """The engine's HTTP answer to the attach request."""
        self._decoder = FrameReader()
        self._frames: collections.deque[dict[str, Any]] = collections.deque()
        self._error: BaseException | None = None
        """Set once the stream ended: every recv after the last frame raises it."""
        self._readers: list[asyncio.Future[None]] = []
        self._drain_waiters: list[asyncio.Future[None]] = []
        """One future per send waiting for room, so that cancelling one leaves the others."""
        self._paused = False
        self._stderr_tail = b""
        self._lost_callbacks: list[Callable[[], None]] = []
        self._closed = False

    def on_lost(self, callback: Callable[[], None]) -> None:
        self._lost_callbacks.append(callback)

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        if self._error is not None:
            return  # a broken or closed stream is not read further
        buffer = self._buffer
        buffer += data
        if not self._upgraded:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > _MAX_HEAD and not self._head.done():
                    self._head.set_exception(asyncio.LimitOverrunError("no end to the engine's answer", len(buffer)))
                return
            self._upgraded = True
            if not self._head.done():
                self._head.set_result(bytes(buffer[: end + 4]))
            del buffer[: end + 4]
        try:
            while len(buffer) >= _MUX_HEADER.size:
                kind, size = _MUX_HEADER.unpack_from(buffer)
                end = _MUX_HEADER.size + size
                if len(buffer) < end:
                    break
                payload = bytes(buffer[_MUX_HEADER.size : end])
                del buffer[:end]
                if kind == 1:
                    decoded: list[object] = []
                    try:
                        self._decoder.feed(payload, decoded)
                    finally:  # frames before a malformed one were the agent's: keep them
                        self._frames.extend(frame for frame in decoded if isinstance(frame, dict))
                elif kind == 2:
                    self._stderr_tail = (self._stderr_tail + payload)[-4096:]
                    log.debug("agent_stderr", container_id=self._container_id, text=payload.decode("utf-8", "replace"))
        except ValueError as exc:
            self._end(AgentError(f"the agent's stream broke: {exc}"))
            return
        if self._frames:
            self._wake_readers()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._head.done():
            self._head.set_exception(ConnectionResetError("the engine closed the connection before answering"))
        if exc is None:
            self._end(AgentError("the agent's stream ended (container gone)"))
        else:
            self._end(AgentError(f"the agent's stream broke: {exc}"))
        self._wake_writer()

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._wake_writer()

    # -- Channel

    async def send(self, message: Mapping[str, Any]) -> None:
        transport = self._transport
        if not isinstance(transport, asyncio.WriteTransport) or transport.is_closing():
            raise AgentError("cannot write to the agent: the connection is closed")
        try:
            transport.write(encode_frame(message))
        except (OSError, RuntimeError) as exc:
            raise AgentError(f"cannot write to the agent: {exc}") from exc
        if self._paused and self._error is None:
            # The engine reads slower than we write (a large program): wait for room.
            await _woken_in(self._drain_waiters)
        if self._error is not None or transport.is_closing():
            raise AgentError("cannot write to the agent: the connection was lost or closed")

    async def recv(self) -> dict[str, Any]:
        while not self._frames:
            if self._error is not None:
                raise self._error.with_traceback(None)  # not one traceback grown per call
            await _woken_in(self._readers)
        return self._frames.popleft()

    def close(self) -> None:
        self._closed = True
        self._end(AgentError("channel closed"))
        if self._transport is not None:
            self._transport.close()

    # -- internals

    def _end(self, error: BaseException) -> None:
        """Ends the stream, once: frames already decoded stay readable, then ``error``."""
        if self._error is not None:
            return
        if self._stderr_tail:
            error = AgentError(f"{error}; agent stderr: {self._stderr_tail.decode('utf-8', 'replace')[-500:]}")
        self._error = error
        self._wake_readers()
        self._wake_writer()  # a send waiting for room would otherwise wait for the engine
        if not self._closed:
            for callback in self._lost_callbacks:
                callback()

    def _wake_readers(self) -> None:
        for reader in self._readers:
            if not reader.done():
                reader.set_result(None)

    def _wake_writer(self) -> None:
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_result(None)


def _endpoint(docker_host: str) -> tuple[str, str | tuple[str, int]]:
    url = docker_host or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme in ("unix", "http+unix"):
        return "unix", parsed.path
    if parsed.scheme in ("tcp", "http"):
        return "tcp", (parsed.hostname or "127.0.0.1", parsed.port or 2375)
    raise EngineError(f"unsupported Docker endpoint {url!r}: use unix:// or tcp:// (without TLS)")


class DockerBackend:
    """:class:`Backend` against a real Docker engine."""

    def __init__(self, docker_host: str = "") -> None:
        import docker  # server-side dependency, imported here so clients never need it

        self._kind, self._address = _endpoint(docker_host)
        base = (
            "unix://" + str(self._address)
            if self._kind == "unix"
            else "tcp://{}:{}".format(*self._address)
        )
        try:
            self._api = docker.APIClient(base_url=base, version=_API_VERSION, timeout=60)
        except docker.errors.DockerException as exc:
            raise EngineError(f"cannot reach the Docker engine at {base}: {exc}") from exc
        self._errors = (docker.errors.DockerException, OSError)

    @property
    def api(self) -> Any:
        """The docker SDK's low-level client (for image builds)."""
        return self._api

    async def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except self._errors as exc:
            raise EngineError(f"Docker engine failed to {what}: {exc}") from exc

    async def ping(self) -> bool:
        try:
            return bool(await self._call("ping", self._api.ping))
        except EngineError:
            return False

    async def create(self, name: str, config: Mapping[str, Any]) -> str:
        def create() -> str:
            url = self._api._url("/containers/create")
            res = self._api._post_json(url, data=dict(config), params={"name": name})
            return str(self._api._result(res, True)["Id"])

        return str(await self._call("create a container", create))

    async def inspect(self, container_id: str) -> dict[str, Any]:
        return dict(await self._call("inspect a container", self._api.inspect_container, container_id))

    async def start(self, container_id: str) -> Channel:
        await self._call("start a container", self._api.start, container_id)
        return await self._attach(container_id)

    async def _attach(self, container_id: str) -> AttachChannel:
        loop = asyncio.get_running_loop()
        transport: asyncio.BaseTransport | None = None
        try:
            if self._kind == "unix":
                transport, channel = await loop.create_unix_connection(
                    lambda: AttachChannel(container_id), str(self._address)
                )
            else:
                host, port = self._address if isinstance(self._address, tuple) else ("127.0.0.1", 2375)
                transport, channel = await loop.create_connection(lambda: AttachChannel(container_id), host, port)
            path = f"/v{_API_VERSION}/containers/{container_id}/attach?stream=1&stdin=1&stdout=1&stderr=1"
            assert isinstance(transport, asyncio.WriteTransport)
            transport.write(
                (
                    f"POST {path} HTTP/1.1\r\nHost: docker\r\nContent-Length: 0\r\n"
                    "Connection: Upgrade\r\nUpgrade: tcp\r\n\r\n"
                ).encode()
            )
            head = await asyncio.wait_for(channel._head, 30)
        except (TimeoutError, OSError, asyncio.LimitOverrunError) as exc:
            if transport is not None:
                transport.close()
            raise EngineError(f"cannot attach to container {container_id[:12]}: {exc!r}") from exc
        status = head.split(b"\r\n", 1)[0]
        if b" 101 " not in status and b" 200 " not in status:
            channel.close()
            raise EngineError(f"attach to {container_id[:12]} refused: {status.decode(errors='replace')}")
        return channel

    async def remove(self, container_id: str) -> None:
        import docker

        def remove() -> None:
            try:
                self._api.remove_container(container_id, force=True, v=True)
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as exc:
                if "already in progress" not in str(exc):
                    raise

        await self._call("remove a container", remove)

    async def list_pool(self, pool: str) -> list[str]:
        filters = {"label": [f"{MANAGED_LABEL}=true", f"{POOL_LABEL}={pool}"]}
        found = await self._call("list containers", self._api.containers, all=True, filters=filters)
        return [c["Id"] for c in found]
