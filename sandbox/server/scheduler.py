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
import time

import structlog

from sandbox.domain import ExecuteRequest, RunResult, Status
from sandbox.errors import (
    AgentError,
    ChannelTamperedError,
    DeadlineExceededError,
    InfrastructureError,
    OverloadedError,
)
from sandbox.server.jobs import prepare
from sandbox.server.judge import judge, sandbox_error
from sandbox.server.logs import get_logger
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
                self.metrics.sandbox_errors.labels("agent_lost").inc()
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
            return await asyncio.wait_for(self.pool.acquire(), max(0.0, wait))
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
        job, expect = prepare(request)
        bound = structlog.contextvars.bound_contextvars(request_id=request.id, container_id=container.id[:12])
        bound.__enter__()
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
            log.debug("run_finished", status=result.status.value, duration_s=round(duration, 4), reused=reusable)
            return result
        finally:
            if not released:
                # Cancelled mid-run: the only way to stop the run is to destroy its container.
                self.pool.release(container, reusable=False, reason="cancelled")
                log.info("run_cancelled")
            self.running -= 1
            self.metrics.in_flight.dec()
            bound.__exit__(None, None, None)

    def _observe(self, result: RunResult) -> None:
        self.metrics.runs.labels(result.status.value, self.runtime).inc()
        self.metrics.run_duration.labels(self.runtime).observe(result.duration_s)
        if result.status is Status.SANDBOX_ERROR:
            self.metrics.sandbox_errors.labels("run").inc()
