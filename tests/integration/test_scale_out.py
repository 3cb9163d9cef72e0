"""Scale-out: one client, three servers on loopback."""

from __future__ import annotations

import threading
from collections import Counter

import docker
import pytest

from sandbox.client import Client, RetryPolicy
from sandbox.domain import RunResult
from sandbox.server.app import EmbeddedServer
from tests.conftest import describe, he_request, pool_containers, server_settings

pytestmark = pytest.mark.integration


def _runs(srv: EmbeddedServer) -> float:
    return sum(s.value for m in srv.server.metrics.runs.collect() for s in m.samples if s.name == "sandbox_runs_total")


def test_work_spreads_over_three_servers_and_stopping_one_loses_nothing(engine: docker.DockerClient) -> None:
    """A client pointed at three servers spreads a batch over all of them; one server
    stopped mid-batch loses no request: every id gets exactly one correct result."""
    servers = [EmbeddedServer(server_settings("runc", pool_size=1, tag=f"so{i}")).__enter__() for i in range(3)]
    stopped = threading.Event()
    requests = [he_request("def f(x):\n    return x + 1\n", request_id=f"so-{i}") for i in range(600)]
    got: Counter[str] = Counter()
    wrong: list[str] = []
    try:
        with Client([s.target for s in servers], retry=RetryPolicy(max_attempts=20, max_backoff_s=1.0)) as client:
            for rid, outcome in client.execute_many(requests, window=48):
                got[rid] += 1
                if not isinstance(outcome, RunResult) or not outcome.passed:
                    wrong.append(f"{rid}: {describe(outcome)}")
                if len(got) == 150 and not stopped.is_set():
                    runs_before_stop = [_runs(s) for s in servers]
                    threading.Thread(target=lambda: (servers[2].__exit__(None, None, None), stopped.set())).start()
        stopped.wait(120)
    finally:
        stopped.wait(120)
        for srv in servers[:2]:
            srv.__exit__(None, None, None)
    assert len(got) == 600 and set(got.values()) == {1}
    assert not wrong, wrong[:5]
    assert all(r > 0 for r in runs_before_stop), f"runs per server before the stop: {runs_before_stop}"
    assert sum(_runs(s) for s in servers) >= 600
    for srv in servers:
        assert pool_containers(engine, srv.settings.pool_name) == [], "a stopped server left containers"
