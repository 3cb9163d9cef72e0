"""The warm pool: hardened containers, started ahead of need, each with a ready agent.

Claiming an idle container is a pop from a deque (no Engine API call). A refill task
keeps ``idle + busy + starting`` at the pool size. A container returns to the idle
deque only when its agent reported the run clean (no process left, scratch emptied)
and nothing unusual happened; otherwise it is destroyed and replaced. With isolation
"fresh" every container is destroyed after one run.

Start-up first removes containers that a previous server of the same pool name left
behind (they carry its labels); containers of other pools are never touched.
"""

from __future__ import annotations

import asyncio
import collections
import os
import time
import uuid
from typing import Any

from sandbox.errors import (
    AgentError,
    ChannelTamperedError,
    EngineError,
    HardeningError,
    InfrastructureError,
    ShuttingDownError,
)
from sandbox.server.backend import Backend, Channel
from sandbox.server.hardening import container_config, verify_inspect, verify_posture
from sandbox.server.logs import get_logger
from sandbox.server.metrics import Metrics
from sandbox.server.settings import Settings

log = get_logger(__name__)

_READY_TIMEOUT_S = 30.0
_MAX_BACKOFF_S = 10.0
_SWEEP_S = 5.0


class Container:
    """One pool container and its agent channel."""

    __slots__ = ("id", "name", "channel", "runs", "lost", "bytecode")

    def __init__(self, container_id: str, name: str, channel: Channel, bytecode: str = "") -> None:
        self.id = container_id
        self.name = name
        self.channel = channel
        self.runs = 0
        self.lost = False
        self.bytecode = bytecode
        """The bytecode format of the container's Python, as its agent reported it."""

    async def run(self, job: dict[str, Any], request_id: str, timeout_s: float) -> dict[str, Any]:
        """Sends one job and waits for its report.

        Raises:
            asyncio.TimeoutError: no report within ``timeout_s``.
            AgentError: the agent vanished or broke the protocol.
        """
        self.runs += 1
        token = os.urandom(16).hex()  # what secrets.token_hex(16) does, minus three calls
        await self.channel.send({"op": "run", "id": request_id, "token": token, "job": job})
        # asyncio.timeout, not wait_for: wait_for would run the recv in a task of its own.
        async with asyncio.timeout(timeout_s):
            reply = await self.channel.recv()
        if reply.get("token") != token:
            # Only the agent knows the token: a frame without it was written by the run
            # (under gVisor a process can reopen /proc/1/fd/1).
            raise ChannelTamperedError("a frame without the run's token reached the agent's channel")
        if reply.get("op") != "result" or reply.get("id") != request_id:
            raise AgentError(f"agent answered {reply.get('op')!r} for {reply.get('id')!r}, expected result")
        return reply


class Pool:
    """N warm containers for one pool name."""

    def __init__(self, settings: Settings, backend: Backend, image: str, metrics: Metrics) -> None:
        self.settings = settings
        self.backend = backend
        self.image = image
        self.metrics = metrics
        self._idle: collections.deque[Container] = collections.deque()
        self._waiters: collections.deque[asyncio.Future[Container]] = collections.deque()
        self._busy = 0
        self._starting = 0
        self._closing = False
        self._refill_wakeup = asyncio.Event()
        self._refill_task: asyncio.Task[None] | None = None
        self._sweep_task: asyncio.Task[None] | None = None
        self._doomed: set[str] = set()
        self._background: set[asyncio.Task[Any]] = set()
        self._failures = 0
        self._hardening_failures = 0
        self.last_error = ""
        self.fatal = ""
        """Set when a container failed its hardening checks: the server must not serve."""
        self.warm = asyncio.Event()
        # Gauge children looked up once: they are set twice per run.
        self._idle_gauge = metrics.pool_containers.labels("idle")
        self._busy_gauge = metrics.pool_containers.labels("busy")
        self._starting_gauge = metrics.pool_containers.labels("starting")

    # -- state

    @property
    def idle(self) -> int:
        return len(self._idle)

    @property
    def busy(self) -> int:
        return self._busy

    @property
    def starting(self) -> int:
        return self._starting

    def _update_gauges(self) -> None:
        self._idle_gauge.set(len(self._idle))
        self._busy_gauge.set(self._busy)
        self._starting_gauge.set(self._starting)

    # -- lifecycle

    async def start(self, wait_warm: bool = True, warm_timeout_s: float = 300.0) -> None:
        """Removes leftovers of this pool, starts refilling, and waits until warm."""
        leftovers = await self.backend.list_pool(self.settings.pool_name)
        if leftovers:
            log.info("pool_leftovers_removed", pool=self.settings.pool_name, count=len(leftovers))
            await asyncio.gather(*(self.backend.remove(c) for c in leftovers), return_exceptions=True)
        self._refill_task = asyncio.get_running_loop().create_task(self._refill_loop())
        self._sweep_task = asyncio.get_running_loop().create_task(self._sweep_loop())
        if not wait_warm:
            return
        deadline = time.monotonic() + warm_timeout_s
        while not self.warm.is_set():
            if self.fatal:
                raise HardeningError(f"refusing to serve: {self.fatal}")
            if time.monotonic() > deadline:
                raise InfrastructureError(
                    f"the pool did not warm up within {warm_timeout_s:g} s: {self.last_error or 'no error seen'}"
                )
            try:
                await asyncio.wait_for(self.warm.wait(), 0.1)
            except TimeoutError:
                pass

    async def close(self) -> None:
        """Stops refilling and removes every container of the pool."""
        self._closing = True
        if self._refill_task:
            self._refill_task.cancel()
        if self._sweep_task:
            self._sweep_task.cancel()
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(ShuttingDownError("the server is shutting down"))
        idle = list(self._idle)
        self._idle.clear()
        for c in idle:
            c.channel.close()
        await asyncio.gather(*(self.backend.remove(c.id) for c in idle), return_exceptions=True)
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        # Busy containers are removed by their release; sweep by label for anything else.
        try:
            rest = await self.backend.list_pool(self.settings.pool_name)
            await asyncio.gather(*(self.backend.remove(c) for c in rest), return_exceptions=True)
        except EngineError:
            pass
        self._update_gauges()

    # -- claim and release

    async def acquire(self) -> Container:
        """An idle container, waiting for one if none is idle now."""
        if self._closing:
            raise ShuttingDownError("the server is shutting down")
        if self.fatal:
            raise HardeningError(f"refusing to serve: {self.fatal}")
        while self._idle and self._idle[0].lost:
            self.destroy(self._idle.popleft(), "lost_idle")
        if self._idle:
            container = self._idle.popleft()
        else:
            fut: asyncio.Future[Container] = asyncio.get_running_loop().create_future()
            self._waiters.append(fut)
            try:
                container = await fut
            except BaseException as exc:
                handed = fut.done() and not fut.cancelled() and fut.exception() is None
                if isinstance(exc, asyncio.CancelledError) and handed:
                    self._hand_over(fut.result())
                # A waiter that got a container was popped by _hand_over; only one that
                # failed (cancelled, shutdown, fatal) may still be queued: an O(n) scan.
                try:
                    self._waiters.remove(fut)
                except ValueError:
                    pass
                raise
        self._busy += 1
        self._update_gauges()
        return container

    def _hand_over(self, container: Container) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(container)
                return
        self._idle.append(container)

    def release(self, container: Container, reusable: bool, reason: str = "") -> None:
        """Returns a container after a run: back to idle, or destroyed and replaced."""
        self._busy -= 1
        if (
            reusable
            and not self._closing
            and not container.lost
            and self.settings.isolation == "pool"
            and container.runs < self.settings.max_runs_per_container
        ):
            if container.runs and container.runs % self.settings.posture_every_runs == 0:
                self._starting += 1
                task = asyncio.get_running_loop().create_task(self._recheck(container))
                self._background.add(task)
                task.add_done_callback(self._background.discard)
            else:
                self._hand_over(container)
        else:
            if not reason:
                reason = (
                    "shutdown" if self._closing
                    else "fresh_isolation" if self.settings.isolation == "fresh"
                    else "max_runs" if container.runs >= self.settings.max_runs_per_container
                    else "unclean"
                )
            self.destroy(container, reason)
        self._update_gauges()

    async def _recheck(self, container: Container) -> None:
        """Reads a used container's posture again; a failure stops the whole server."""
        try:
            await container.channel.send({"op": "hello"})
            ready = await asyncio.wait_for(container.channel.recv(), _READY_TIMEOUT_S)
            findings = verify_posture(ready.get("posture") or {}, self.settings)
            if not ready.get("clean"):
                findings.append("agent ready and clean")
        except (TimeoutError, AgentError) as exc:
            self.destroy(container, "recheck_failed")
            log.warning("posture_recheck_failed", container_id=container.id[:12], error=str(exc))
        else:
            if findings:
                self._set_fatal(f"posture check failed in {container.name} after {container.runs} runs: "
                                f"{', '.join(findings)}")
                self.destroy(container, "posture")
            else:
                self._hand_over(container)
        finally:
            self._starting -= 1
            self._update_gauges()

    def _set_fatal(self, why: str) -> None:
        self.fatal = why
        log.error("pool_refuses_to_serve", reason=why)
        for waiter in list(self._waiters):
            if not waiter.done():
                waiter.set_exception(HardeningError(f"refusing to serve: {why}"))

    def _lost(self, container: Container) -> None:
        container.lost = True
        if container in self._idle:
            self._idle.remove(container)
            self.destroy(container, "lost_idle")

    def destroy(self, container: Container, reason: str) -> None:
        """Removes a container in the background and wakes the refill."""
        self.metrics.container_recycles.labels(reason).inc()
        container.channel.close()
        log.debug("container_recycled", container_id=container.id[:12], reason=reason)
        task = asyncio.get_running_loop().create_task(self._remove(container.id))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        self._refill_wakeup.set()

    async def _remove(self, container_id: str) -> None:
        try:
            await self.backend.remove(container_id)
        except EngineError as exc:
            # Kept for the sweeper: an engine that was down (restart) will take it later.
            self._doomed.add(container_id)
            log.warning("container_remove_failed", container_id=container_id[:12], error=str(exc))
        else:
            self._doomed.discard(container_id)

    async def _sweep_loop(self) -> None:
        """Retries removals that failed while the engine was unreachable."""
        while not self._closing:
            await asyncio.sleep(_SWEEP_S)
            for container_id in list(self._doomed):
                await self._remove(container_id)

    # -- refill

    async def _refill_loop(self) -> None:
        while not self._closing:
            deficit = self.settings.pool_size - (len(self._idle) + self._busy + self._starting)
            room = self.settings.refill_concurrency - self._starting
            for _ in range(max(0, min(deficit, room))):
                self._starting += 1
                task = asyncio.get_running_loop().create_task(self._start_one())
                self._background.add(task)
                task.add_done_callback(self._background.discard)
            self._update_gauges()
            self._refill_wakeup.clear()
            await self._refill_wakeup.wait()

    async def _start_one(self) -> None:
        started = time.monotonic()
        try:
            container = await self._create_container()
        except InfrastructureError as exc:
            self._failures += 1
            self.last_error = str(exc)
            reason = "hardening" if isinstance(exc, HardeningError) else "engine"
            if isinstance(exc, HardeningError):
                # Hardening does not fail by chance: twice in a row means this engine
                # cannot give us the containers we promise, so we stop serving.
                self._hardening_failures += 1
                if self._hardening_failures >= 2 and not self.fatal:
                    self._set_fatal(str(exc))
            self.metrics.container_start_failures.labels(reason).inc()
            log.warning("container_start_failed", error=str(exc), failures=self._failures)
            await asyncio.sleep(min(_MAX_BACKOFF_S, 0.1 * 2 ** min(self._failures, 7)))
        else:
            self._failures = 0
            self._hardening_failures = 0
            self.metrics.container_starts.inc()
            self.metrics.container_start_duration.observe(time.monotonic() - started)
            if self._closing:
                container.channel.close()
                await self._remove(container.id)
            else:
                self._hand_over(container)
                if len(self._idle) + self._busy >= self.settings.pool_size:
                    self.warm.set()
        finally:
            self._starting -= 1
            self._update_gauges()
            self._refill_wakeup.set()

    async def _create_container(self) -> Container:
        name = f"sandbox-{self.settings.pool_name}-{uuid.uuid4().hex[:12]}"
        config = container_config(self.settings, self.image, name)
        container_id = await self.backend.create(name, config)
        try:
            findings = verify_inspect(await self.backend.inspect(container_id), self.settings)
            if findings:
                raise HardeningError(f"container {name} is not as configured: {', '.join(findings)}")
            channel = await self.backend.start(container_id)
            try:
                await channel.send({"op": "hello"})
                ready = await asyncio.wait_for(channel.recv(), _READY_TIMEOUT_S)
            except (TimeoutError, AgentError) as exc:
                channel.close()
                raise AgentError(f"agent in {name} did not become ready: {exc!r}") from exc
            posture = ready.get("posture") or {}
            findings = verify_posture(posture, self.settings)
            if ready.get("op") != "ready" or not ready.get("clean"):
                findings.append("agent ready and clean")
            if findings:
                channel.close()
                raise HardeningError(f"posture check failed in {name}: {', '.join(findings)}")
        except BaseException:
            await self._remove(container_id)
            raise
        log.debug("container_ready", container_id=container_id[:12])
        container = Container(container_id, name, channel, str(ready.get("bytecode") or ""))
        channel.on_lost(lambda: self._lost(container))
        return container
