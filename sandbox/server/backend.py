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


class AttachChannel:
    """The agent's stdio over a hijacked attach connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, container_id: str) -> None:
        self._reader = reader
        self._writer = writer
        self._frames: asyncio.Queue[dict[str, Any] | BaseException] = asyncio.Queue()
        self._decoder = FrameReader()
        self._container_id = container_id
        self._lost_callbacks: list[Callable[[], None]] = []
        self._closed = False
        self._task = asyncio.get_running_loop().create_task(self._pump())

    def on_lost(self, callback: Callable[[], None]) -> None:
        self._lost_callbacks.append(callback)

    async def _pump(self) -> None:
        error: BaseException = AgentError("the agent's stream ended (container gone)")
        stderr_tail = b""
        try:
            while True:
                header = await self._reader.readexactly(_MUX_HEADER.size)
                kind, size = _MUX_HEADER.unpack(header)
                payload = await self._reader.readexactly(size)
                if kind == 1:
                    for frame in self._decoder.feed(payload):
                        if isinstance(frame, dict):
                            self._frames.put_nowait(frame)
                elif kind == 2:
                    stderr_tail = (stderr_tail + payload)[-4096:]
                    log.debug("agent_stderr", container_id=self._container_id, text=payload.decode("utf-8", "replace"))
        except asyncio.IncompleteReadError:
            pass
        except (OSError, ValueError) as exc:
            error = AgentError(f"the agent's stream broke: {exc}")
        except asyncio.CancelledError:
            error = AgentError("channel closed")
        if stderr_tail:
            error = AgentError(f"{error}; agent stderr: {stderr_tail.decode('utf-8', 'replace')[-500:]}")
        self._frames.put_nowait(error)
        if not self._closed:
            for callback in self._lost_callbacks:
                callback()

    async def send(self, message: Mapping[str, Any]) -> None:
        try:
            self._writer.write(encode_frame(message))
            await self._writer.drain()
        except (OSError, RuntimeError) as exc:
            raise AgentError(f"cannot write to the agent: {exc}") from exc

    async def recv(self) -> dict[str, Any]:
        item = await self._frames.get()
        if isinstance(item, BaseException):
            self._frames.put_nowait(item)  # every later recv fails the same way
            raise item
        return item

    def close(self) -> None:
        self._closed = True
        self._task.cancel()
        try:
            self._writer.close()
        except (OSError, RuntimeError):
            pass


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
        try:
            if self._kind == "unix":
                reader, writer = await asyncio.open_unix_connection(str(self._address), limit=1 << 22)
            else:
                host, port = self._address if isinstance(self._address, tuple) else ("127.0.0.1", 2375)
                reader, writer = await asyncio.open_connection(host, port, limit=1 << 22)
            path = f"/v{_API_VERSION}/containers/{container_id}/attach?stream=1&stdin=1&stdout=1&stderr=1"
            writer.write(
                (
                    f"POST {path} HTTP/1.1\r\nHost: docker\r\nContent-Length: 0\r\n"
                    "Connection: Upgrade\r\nUpgrade: tcp\r\n\r\n"
                ).encode()
            )
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            raise EngineError(f"cannot attach to container {container_id[:12]}: {exc!r}") from exc
        status = head.split(b"\r\n", 1)[0]
        if b" 101 " not in status and b" 200 " not in status:
            writer.close()
            raise EngineError(f"attach to {container_id[:12]} refused: {status.decode(errors='replace')}")
        return AttachChannel(reader, writer, container_id)

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
