"""The scheduler: bounded admission, deadlines, cancellation, and one run's life.

A request is admitted while fewer than ``max_queue`` requests wait for a container;
past that it is refused with :class:`OverloadedError` (RESOURCE_EXHAUSTED) instead of
queueing without bound. A queued request whose deadline passes is refused with
:class:`DeadlineExceededError`. A request cancelled while it runs (client gone,
deadline hit) has its container destroyed, which kills the run.

Infrastructure failures become ``sandbox_error`` results, never a candidate failure.
A run whose agent vanished before reporting is retried once on another container,
since the agent never dies of the candidate's doing (it is PID 1 and not dumpable).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import structlog

from sandbox.domain import ExecuteRequest, RunResult, Status
from sandbox.errors import (
    AgentError,
    ChannelTamperedError,
    DeadlineExceededError,
    InfrastructureError,
    OverloadedError,
)
from sandbox.server.jobs import PYTHON_MAGIC, prepare
from sandbox.server.judge import judge, sandbox_error
from sandbox.server.logs import enabled, get_logger
from sandbox.server.metrics import Metrics
from sandbox.server.pool import Container, Pool

log = get_logger(__name__)

# Beyond the run's own limit: the agent's kill grace, scrubbing and the round trip.
_REPORT_GRACE_S = 5.0
_AGENT_RETRIES = 1


class Scheduler:
    """Runs requests on the pool's containers."""

    def __init__(
        self, pool: Pool, metrics: Metrics, max_queue: int, runtime: str, max_queue_wait_s: float = 600.0
    ) -> None:
        self.pool = pool
        self.max_queue_wait_s = max_queue_wait_s
        self.metrics = metrics
        self.max_queue = max_queue
        self.runtime = runtime
        self.waiting = 0
        self.running = 0
        # Metric children looked up once: ``labels()`` takes a lock and a dict lookup per call.
        # Series are still made on the first run that needs them, so /metrics shows the same.
        self._runs_by_status: dict[Status, Any] = {}
        self._run_duration: Any = None
        self._agent_lost = metrics.sandbox_errors.labels("agent_lost")
        self._run_errors = metrics.sandbox_errors.labels("run")

    async def execute(self, request: ExecuteRequest, timeout_s: float | None = None) -> RunResult:
        """Runs one request; ``timeout_s`` is the client's remaining deadline, if any.

        Raises:
            OverloadedError: the admission queue is full.
            DeadlineExceededError: the deadline passed while waiting for a container.
        """
        for attempt in range(_AGENT_RETRIES + 1):
            container = await self._admit(timeout_s)
            try:
                return await self._run(container, request)
            except AgentError as exc:
                self._agent_lost.inc()
                log.warning(
                    "agent_lost", request_id=request.id, container_id=container.id[:12],
                    error=str(exc), attempt=attempt,
                )
                if attempt == _AGENT_RETRIES:
                    if self.runtime == "runsc":
                        # Under gVisor a run can kill PID 1 (or exhaust the sandbox) where
                        # runc's kernel would not let it: the same program bringing down a
                        # second, fresh container is its doing, not the infrastructure's.
                        result = RunResult(
                            status=Status.EARLY_EXIT, runtime=self.runtime, human_eval_result="timed out",
                            message="the program brought down its sandbox twice (the agent died while running it)",
                        )
                    else:
                        result = sandbox_error(f"the sandbox failed: {exc}", runtime=self.runtime)
                    self._observe(result)
                    return result
        raise AssertionError("unreachable")  # pragma: no cover

    async def _admit(self, timeout_s: float | None) -> Container:
        if self.waiting >= self.max_queue:
            raise OverloadedError(
                f"{self.waiting} requests are already waiting for a sandbox (limit {self.max_queue}); retry later"
            )
        self.waiting += 1
        self.metrics.queue_depth.set(self.waiting)
        queued = time.monotonic()
        wait = self.max_queue_wait_s if timeout_s is None else min(timeout_s, self.max_queue_wait_s)
        try:
            if wait <= 0:
                raise TimeoutError  # a spent deadline never claims a container, even an idle one
            # asyncio.timeout, not wait_for: wait_for runs the acquire in a task of its own.
            async with asyncio.timeout(wait):
                return await self.pool.acquire()
        except TimeoutError:
            if timeout_s is not None and timeout_s <= self.max_queue_wait_s:
                raise DeadlineExceededError(
                    f"no sandbox became free within the request's deadline ({timeout_s:.3f} s)"
                ) from None
            raise InfrastructureError(
                f"no sandbox became free within {self.max_queue_wait_s:g} s: {self.pool.last_error or 'pool busy'}"
            ) from None
        finally:
            self.waiting -= 1
            self.metrics.queue_depth.set(self.waiting)
            self.metrics.queue_wait.observe(time.monotonic() - queued)

    async def _run(self, container: Container, request: ExecuteRequest) -> RunResult:
        limits = request.limits
        self.running += 1
        self.metrics.in_flight.inc()
        started = time.monotonic()
        released = False
        job, expect = prepare(request, container.bytecode == PYTHON_MAGIC)
        # bind/reset rather than bound_contextvars(): the same binding without its copy of
        # the whole context on entry, for every run.
        tokens = structlog.contextvars.bind_contextvars(request_id=request.id, container_id=container.id[:12])
        try:
            try:
                facts = await container.run(job, request.id, limits.timeout_s + _REPORT_GRACE_S)
            except TimeoutError:
                # The agent enforces the limit itself and reports a timeout as one; its
                # silence past the grace means the container is wedged (frozen, engine
                # stall): infrastructure, retried on another container, never a verdict.
                self.pool.release(container, reusable=False, reason="unresponsive")
                released = True
                raise AgentError(
                    f"the agent stayed silent {limits.timeout_s + _REPORT_GRACE_S:g} s past the start of the run"
                ) from None
            except AgentError:
                self.pool.release(container, reusable=False, reason="agent_lost")
                released = True
                raise
            except ChannelTamperedError as exc:
                self.pool.release(container, reusable=False, reason="tampered")
                released = True
                result = RunResult(
                    status=Status.FAILED, runtime=self.runtime, duration_s=time.monotonic() - started,
                    message=f"tampering detected: {exc}", tampering=(str(exc),),
                    human_eval_result="failed: tampering detected",
                )
                self._observe(result)
                return result
            duration = time.monotonic() - started
            facts["timeout_s"] = limits.timeout_s
            facts["max_output_bytes"] = limits.max_output_bytes
            result = judge(facts, duration, self.runtime, expect)
            reusable = bool(facts.get("clean")) and result.status not in (
                Status.TIMEOUT,
                Status.MEMORY_LIMIT,
                Status.OUTPUT_LIMIT,
                Status.SANDBOX_ERROR,
            )
            reason = "" if reusable else (
                "leftover_processes" if facts.get("leftover_processes") else result.status.value
            )
            if facts.get("anomaly"):
                reason = "anomaly"
                log.warning("run_anomaly", request_id=request.id, container_id=container.id[:12],
                            anomaly=facts.get("anomaly"))
            self.pool.release(container, reusable, reason)
            released = True
            self._observe(result)
            if enabled(logging.DEBUG):
                log.debug("run_finished", status=result.status.value, duration_s=round(duration, 4), reused=reusable)
            return result
        finally:
            if not released:
                # Cancelled mid-run: the only way to stop the run is to destroy its container.
                self.pool.release(container, reusable=False, reason="cancelled")
                log.info("run_cancelled")
            self.running -= 1
            self.metrics.in_flight.dec()
            structlog.contextvars.reset_contextvars(**tokens)

    def _observe(self, result: RunResult) -> None:
        runs = self._runs_by_status.get(result.status)
        if runs is None:
            runs = self._runs_by_status[result.status] = self.metrics.runs.labels(result.status.value, self.runtime)
        runs.inc()
        if self._run_duration is None:
            self._run_duration = self.metrics.run_duration.labels(self.runtime)
        self._run_duration.observe(result.duration_s)
        if result.status is Status.SANDBOX_ERROR:
            self._run_errors.inc()
