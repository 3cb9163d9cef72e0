"""The client side against real servers: batches, retries, idempotency, several servers."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import uuid
from collections import Counter

import docker
import grpc
import pytest

from sandbox.adapters.trl import AsyncSandboxReward, SandboxReward
from sandbox.client import AsyncClient, Client, Refused, RetryPolicy
from sandbox.domain import RunResult, Status
from sandbox.server.app import EmbeddedServer
from tests.conftest import describe, he_request, server_settings

pytestmark = pytest.mark.integration

PASSING = "def f(x):\n    return x + 1\n"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_batch_of_5000_over_one_stream_returns_5000_distinct_results(
    server: EmbeddedServer, engine: docker.DockerClient
) -> None:
    """5,000 requests on one ExecuteStream: exactly 5,000 answers, each id once, all correct."""
    requests = [he_request(PASSING if i % 5 else "def f(x):\n    return x\n", request_id=f"b5k-{i}")
                for i in range(5000)]
    seen: Counter[str] = Counter()
    with Client(server.target) as client:
        for rid, outcome in client.execute_many(requests, window=512):
            seen[rid] += 1
            assert isinstance(outcome, RunResult), describe(outcome)
            expected = Status.FAILED if int(rid.split("-")[1]) % 5 == 0 else Status.PASSED
            assert outcome.status is expected, f"{rid}: {describe(outcome)}"
    assert len(seen) == 5000
    assert set(seen.values()) == {1}


def test_a_server_restarted_mid_batch_loses_nothing(engine: docker.DockerClient) -> None:
    """Stop the server during a batch and start a new one on the same port: every id gets
    exactly one final result, and it is the right one."""
    port = _free_port()
    settings = server_settings("runc", pool_size=2, tag="restart", listen=f"127.0.0.1:{port}")
    first = EmbeddedServer(settings).__enter__()
    requests = [he_request(PASSING, request_id=f"rs-{i}") for i in range(400)]
    got: Counter[str] = Counter()
    results: dict[str, RunResult | Refused] = {}
    restarted = threading.Event()
    second: list[EmbeddedServer] = []

    def restart() -> None:
        first.__exit__(None, None, None)
        second.append(EmbeddedServer(settings).__enter__())
        restarted.set()

    worker = None
    try:
        with Client(f"127.0.0.1:{port}", retry=RetryPolicy(max_attempts=30, max_backoff_s=2.0)) as client:
            for rid, outcome in client.execute_many(requests, window=64):
                got[rid] += 1
                results[rid] = outcome
                if len(got) == 100 and worker is None:
                    worker = threading.Thread(target=restart)
                    worker.start()
        assert worker is not None
        worker.join(120)
        assert restarted.is_set(), "the second server did not start"
    finally:
        if worker is not None:
            worker.join(120)
        for srv in second:
            srv.__exit__(None, None, None)
    assert len(got) == 400 and set(got.values()) == {1}
    wrong = {rid: describe(r) for rid, r in results.items() if not isinstance(r, RunResult) or not r.passed}
    assert not wrong, wrong


def test_two_servers_behind_one_client_both_receive_work(engine: docker.DockerClient) -> None:
    """A client given two addresses balances round-robin: both servers run requests."""
    servers = [EmbeddedServer(server_settings("runc", pool_size=1, tag=f"rr{i}")).__enter__() for i in range(2)]
    try:
        with Client([s.target for s in servers]) as client:
            for i in range(40):
                assert client.execute(he_request(PASSING, request_id=f"rr-{i}")).passed
        counts = [sum(s.value for m in srv.server.metrics.runs.collect() for s in m.samples
                      if s.name == "sandbox_runs_total") for srv in servers]
    finally:
        for srv in servers:
            srv.__exit__(None, None, None)
    assert all(c >= 5 for c in counts), f"runs per server: {counts}"
    assert sum(counts) == 40


def _runs(srv: EmbeddedServer) -> float:
    return sum(s.value for m in srv.server.metrics.runs.collect() for s in m.samples if s.name == "sandbox_runs_total")


def test_a_retried_id_runs_once_and_a_reused_id_is_refused(server: EmbeddedServer) -> None:
    """The request id is an idempotency key: the same request again gets the stored result
    without running; a different request under the same id is INVALID_ARGUMENT."""
    with Client(server.target) as client:
        request = he_request("import time\ndef f(x):\n    time.sleep(0.3)\n    return x + 1\n", request_id="idem-1")
        before = _runs(server)
        results: list[RunResult] = []
        threads = [threading.Thread(target=lambda: results.append(client.execute(request))) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        again = client.execute(request)
        assert _runs(server) - before == 1, "duplicates in flight and after must not run again"
        assert all(r.passed for r in results) and again.passed
        with pytest.raises(grpc.RpcError) as info:
            client.execute(he_request("def f(x):\n    return x\n", request_id="idem-1"))
        assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "idem-1" in info.value.details()


def test_a_request_that_cannot_be_encoded_is_refused_alone(server: EmbeddedServer) -> None:
    """A program holding a lone surrogate cannot be put in a protobuf message: that one
    request is answered INVALID_ARGUMENT by the client, once, and the stream carrying
    the others does not break (sync and asyncio clients, every id exactly once)."""
    token = uuid.uuid4().hex[:8]
    requests = [he_request(PASSING if i % 3 else "def f(x):\n    return '\ud800'\n", request_id=f"enc-{token}-{i}")
                for i in range(30)]
    bad = {r.id for i, r in enumerate(requests) if i % 3 == 0}

    def check(answers: list[tuple[str, object]]) -> None:
        assert Counter(rid for rid, _ in answers) == Counter(r.id for r in requests)
        for rid, outcome in answers:
            if rid in bad:
                assert isinstance(outcome, Refused) and outcome.code is grpc.StatusCode.INVALID_ARGUMENT, outcome
                assert "surrogate" in outcome.message
            else:
                assert isinstance(outcome, RunResult) and outcome.passed, describe(outcome)  # type: ignore[arg-type]

    with Client(server.target) as client:
        check(list(client.execute_many(requests, window=4)))

    async def go() -> list[tuple[str, object]]:
        async with AsyncClient(server.target) as client:
            return [item async for item in client.execute_many(requests, window=4)]

    check(asyncio.run(go()))


def test_async_client_streams_with_many_in_flight(server: EmbeddedServer) -> None:
    """The asyncio client keeps a large window in flight and the event loop stays responsive."""

    async def go() -> tuple[int, float]:
        lag = 0.0
        stop = asyncio.Event()

        async def ticker() -> None:
            nonlocal lag
            while not stop.is_set():
                t = time.monotonic()
                await asyncio.sleep(0.01)
                lag = max(lag, time.monotonic() - t - 0.01)

        tick = asyncio.create_task(ticker())
        async with AsyncClient(server.target) as client:
            n = 0
            async for _, outcome in client.execute_many(
                [he_request(PASSING, request_id=f"as-{i}") for i in range(1500)], window=600
            ):
                assert isinstance(outcome, RunResult) and outcome.passed, describe(outcome)
                n += 1
        stop.set()
        await tick
        return n, lag

    n, lag = asyncio.run(go())
    assert n == 1500
    assert lag < 0.5, f"the event loop stalled for {lag:.3f} s"


def test_trl_reward_functions_follow_trl_calling_convention(server: EmbeddedServer) -> None:
    """Called as GRPOTrainer calls reward_funcs (keywords, dataset columns, extra kwargs),
    the sync and async adapters return one float or None per completion."""
    completions = [
        "```python\ndef add(a, b):\n    return a + b\n```",
        "```python\ndef add(a, b):\n    return a * b\n```",
        [{"role": "assistant", "content": "def add(a, b):\n    return a + b\n"}],
    ]
    tests = [["assert add(1, 2) == 3", "assert add(2, 2) == 4"]] * 3
    reward = SandboxReward(server.target, tests_column="tests")
    assert reward.__name__ == "sandbox_reward"
    out = reward(prompts=["p"] * 3, completions=completions, completion_ids=[[1]] * 3, tests=tests,
                 trainer_state=None)
    assert out == [1.0, 0.0, 1.0]
    dense = SandboxReward(server.target, tests_column="tests", reward="fraction")
    assert dense(prompts=["p"] * 3, completions=completions, tests=tests)[1] == 0.5

    async def run_async() -> list[float | None]:
        fn = AsyncSandboxReward(server.target, tests_column="tests")
        return await fn(prompts=["p"] * 3, completions=completions, tests=tests)

    assert asyncio.run(run_async()) == [1.0, 0.0, 1.0]


def test_verl_compute_score_against_a_real_server(server: EmbeddedServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """verl's compute_score(data_source, solution_str, ground_truth, extra_info) scores asserts and io cases."""
    from sandbox.adapters import verl

    monkeypatch.setenv("SANDBOX_TARGET", server.target)
    good = verl.compute_score("mbpp", "def sq(x):\n    return x * x\n", ["assert sq(3) == 9"])
    assert good["score"] == 1.0 and good["status"] == "passed"
    io = verl.compute_score("apps", "print(int(input()) * 2)\n", '{"inputs": ["4\\n"], "outputs": ["8\\n"]}')
    assert io["score"] == 1.0
    bad = verl.compute_score("apps", "print(0)\n", {"inputs": ["4\n"], "outputs": ["8\n"]}, {"timeout_s": 5})
    assert bad["score"] == 0.0 and bad["status"] == "failed"
