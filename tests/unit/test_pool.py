"""The warm pool and scheduler against a fake backend at the seam."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from sandbox.domain import ExecuteRequest, HumanEvalTests, Status
from sandbox.errors import InfrastructureError, OverloadedError
from sandbox.server.metrics import Metrics
from sandbox.server.pool import Pool
from sandbox.server.scheduler import Scheduler
from sandbox.server.settings import Settings
from tests.unit.fakes import FakeBackend

REQ = ExecuteRequest(program="def f(): pass", tests=HumanEvalTests("def check(c): pass", "f"), id="r")


def run(coro_fn: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(coro_fn())


async def _pool(backend: FakeBackend, **kw: Any) -> Pool:
    settings = Settings(pool_size=kw.pop("pool_size", 2), pool_name="p", **kw)
    pool = Pool(settings, backend, "img", Metrics())
    await pool.start(warm_timeout_s=5)
    return pool


def test_warm_pool_reaches_size_and_claim_costs_no_engine_call() -> None:
    """After warm-up, acquiring an idle container makes no backend call."""

    async def go() -> None:
        backend = FakeBackend()
        pool = await _pool(backend)
        assert pool.idle == 2
        before = list(backend.calls)
        c = await pool.acquire()
        assert backend.calls == before
        pool.release(c, reusable=True)
        assert pool.idle == 2
        await pool.close()
        assert backend.containers == {}

    run(go)


def test_leftovers_of_the_same_pool_are_removed_and_others_kept() -> None:
    """Start-up removes containers of its own pool name only."""

    async def go() -> None:
        backend = FakeBackend()
        mine = await backend.create("old", {"Labels": {"sandbox.managed": "true", "sandbox.pool": "p"}})
        other = await backend.create("x", {"Labels": {"sandbox.managed": "true", "sandbox.pool": "q"}})
        pool = await _pool(backend)
        assert mine not in backend.containers
        assert other in backend.containers
        await pool.close()
        assert other in backend.containers

    run(go)


def test_unclean_container_is_destroyed_and_replaced() -> None:
    """A container released as not reusable is removed and the pool refills."""

    async def go() -> None:
        backend = FakeBackend()
        pool = await _pool(backend)
        c = await pool.acquire()
        pool.release(c, reusable=False)
        for _ in range(100):
            await asyncio.sleep(0.01)
            if pool.idle == 2 and c.id not in backend.containers:
                break
        assert c.id not in backend.containers
        assert pool.idle == 2
        await pool.close()

    run(go)


def test_hardening_failure_never_enters_the_pool() -> None:
    """A container whose inspect differs from its config is removed, never served."""

    async def go() -> None:
        backend = FakeBackend()
        backend.inspect_override = {"NetworkMode": "bridge"}
        settings = Settings(pool_size=1, pool_name="p")
        pool = Pool(settings, backend, "img", Metrics())
        with pytest.raises(InfrastructureError, match="network mode is none"):
            await pool.start(warm_timeout_s=0.5)
        assert pool.idle == 0
        await pool.close()
        assert backend.containers == {}

    run(go)


def test_posture_failure_never_enters_the_pool() -> None:
    """A container whose agent reports uid 0 is removed, never served."""

    async def go() -> None:
        backend = FakeBackend()
        backend.posture["uid"] = 0
        pool = Pool(Settings(pool_size=1, pool_name="p"), backend, "img", Metrics())
        with pytest.raises(InfrastructureError, match="uid"):
            await pool.start(warm_timeout_s=0.5)
        await pool.close()

    run(go)


def test_fresh_isolation_uses_each_container_once() -> None:
    """With isolation fresh, two runs never share a container."""

    async def go() -> None:
        backend = FakeBackend()
        pool = await _pool(backend, isolation="fresh")
        sched = Scheduler(pool, Metrics(), 10, "runc")
        for _ in range(3):
            result = await sched.execute(REQ)
            assert result.status is Status.PASSED
        used = [cid for cid, _ in backend.runs]
        assert len(set(used)) == 3
        await pool.close()

    run(go)


def test_scheduler_refuses_beyond_the_queue_bound() -> None:
    """With every container busy and the queue full, a request gets OverloadedError."""

    async def go() -> None:
        backend = FakeBackend()
        pool = await _pool(backend, pool_size=1)
        sched = Scheduler(pool, Metrics(), 1, "runc")
        held = await pool.acquire()
        waiting = asyncio.ensure_future(sched.execute(REQ))
        await asyncio.sleep(0.01)
        with pytest.raises(OverloadedError):
            await sched.execute(REQ)
        pool.release(held, reusable=True)
        assert (await waiting).status is Status.PASSED
        await pool.close()

    run(go)


def test_agent_reply_without_exit_is_sandbox_error_and_container_dropped() -> None:
    """A report that never saw the child end is an infrastructure failure, and the container goes."""

    async def go() -> None:
        backend = FakeBackend()
        backend.run_reply = {"exited": False, "timed_out": False, "clean": False, "anomaly": "zygote gone"}
        pool = await _pool(backend, pool_size=1)
        sched = Scheduler(pool, Metrics(), 10, "runc")
        result = await sched.execute(REQ)
        assert result.status is Status.SANDBOX_ERROR
        assert "zygote" in result.message
        await pool.close()

    run(go)


def test_posture_is_read_again_every_n_runs_and_a_regression_stops_serving() -> None:
    """After posture_every_runs runs a container's posture is checked again; if it went
    wrong the pool refuses to serve, naming the failed check."""

    async def go() -> None:
        backend = FakeBackend()
        pool = await _pool(backend, pool_size=1, posture_every_runs=2)
        sched = Scheduler(pool, Metrics(), 10, "runc")
        assert (await sched.execute(REQ)).status is Status.PASSED
        backend.posture["interfaces"] = ["lo", "eth0"]
        assert (await sched.execute(REQ)).status is Status.PASSED
        for _ in range(100):
            await asyncio.sleep(0.01)
            if pool.fatal:
                break
        assert "only the loopback interface" in pool.fatal
        with pytest.raises(InfrastructureError, match="refusing to serve"):
            await sched.execute(REQ)
        await pool.close()

    run(go)


def test_a_container_whose_stream_is_lost_while_idle_is_replaced() -> None:
    """An idle container whose agent stream ends (engine restart, kill) leaves the pool."""

    async def go() -> None:
        backend = FakeBackend()
        pool = await _pool(backend, pool_size=2)
        backend.lost_callbacks[0]()
        for _ in range(100):
            await asyncio.sleep(0.01)
            if pool.idle == 2 and len(backend.containers) == 2:
                break
        assert pool.idle == 2
        assert all(not c.lost for c in pool._idle)
        await pool.close()

    run(go)
