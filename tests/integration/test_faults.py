"""Fault injection against the real engine: containers, agents, the daemon, the Docker API,
the server process and clients fail while requests run.

Each scenario runs its own server (a unique pool name) and checks the same things: every
request gets exactly one answer; a passing program is answered PASSED, or with an answer
that says nothing about the candidate (``sandbox_error``, UNAVAILABLE) that the client
retries into PASSED, never FAILED, TIMEOUT or another candidate verdict; nothing waits
without bound; the pool is back at its size afterwards; and no container of the pool
outlives the server.

Faults are injected from the host, as they happen in production: ``docker kill``, SIGKILL
of the agent's host pid, SIGTERM of dockerd, ``docker pause``, SIGKILL of ``sandbox
serve``, a cancelled RPC. The one seam is a :class:`DockerBackend` subclass whose
container creation blocks, standing for an Engine API that hangs.

The daemon restart stops every container on the engine, other sessions' included: it only
runs with ``SANDBOX_TEST_ENGINE_RESTART=1`` (set it where nothing else uses the engine,
as in CI).

Where a scenario exposes a known bug, the failing check raises :class:`KnownBugError` and the
test is marked ``xfail(strict=True, raises=KnownBugError)``: any *other* failure still fails
the test, and the fix turns it into an XPASS that asks for the mark to go.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import docker
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sandbox._proto.sandbox.v1 import sandbox_pb2_grpc as pb_grpc
from sandbox.client import NO_RETRY, Client, Outcome, RetryPolicy
from sandbox.convert import request_to_pb
from sandbox.domain import ExecuteRequest, RunResult, Status
from sandbox.server.app import EmbeddedServer, SandboxServer
from sandbox.server.backend import DockerBackend
from sandbox.server.image import ensure_image
from sandbox.server.settings import Settings
from tests.conftest import (
    MANAGED_LABEL,
    Sandbox,
    describe,
    he_request,
    pool_containers,
    server_settings,
    unique_pool_name,
)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PASSING = "def f(x):\n    return x + 1\n"


class KnownBugError(AssertionError):
    """A check that fails because of a known bug of the service (see the xfail reason)."""


def sleeper(seconds: float) -> str:
    """A passing program that holds its container for ``seconds``."""
    return f"import time\n\ndef f(x):\n    time.sleep({seconds})\n    return x + 1\n"


def counter(srv: EmbeddedServer, name: str, **labels: str) -> float:
    """Current value of one of the server's counters (``name`` without ``_total``)."""
    total = 0.0
    for metric in srv.server.metrics.registry.collect():
        for sample in metric.samples:
            if sample.name == f"{name}_total" and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def wait_for(condition: Any, timeout_s: float, what: str, period_s: float = 0.05) -> None:
    """Polls ``condition()`` until true; fails the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(period_s)


@contextlib.contextmanager
def serving(engine: docker.DockerClient, settings: Settings, backend: DockerBackend | None = None,
            retry: RetryPolicy | None = None) -> Iterator[Sandbox]:
    """A server for one scenario; on a clean exit, checks its pool left no container behind."""
    srv = EmbeddedServer(settings)
    if backend is not None:
        srv.server = SandboxServer(settings, backend=backend)
    srv.__enter__()
    client = Client(srv.target, retry=retry or RetryPolicy(max_attempts=10, max_backoff_s=2.0))
    try:
        yield Sandbox(srv, client, engine)
    finally:
        client.close()
        srv.__exit__(None, None, None)
    left = [(c["Id"][:12], c["State"]) for c in pool_containers(engine, settings.pool_name)]
    assert not left, f"containers of pool {settings.pool_name} outlived its server: {left}"


def run_batch(
    client: Client, requests: Iterable[ExecuteRequest], window: int
) -> tuple[Counter[str], dict[str, Outcome]]:
    """Streams ``requests``; returns how often each id was answered and its (last) answer."""
    seen: Counter[str] = Counter()
    outcomes: dict[str, Outcome] = {}
    for rid, outcome in client.execute_many(requests, window=window):
        seen[rid] += 1
        outcomes[rid] = outcome
    return seen, outcomes


def assert_each_once_and_passed(ids: list[str], seen: Counter[str], outcomes: dict[str, Outcome]) -> None:
    """Exactly one final answer per id, and every one PASSED."""
    assert set(seen) == set(ids), f"missing {sorted(set(ids) - set(seen))}, unknown {sorted(set(seen) - set(ids))}"
    twice = {rid: n for rid, n in seen.items() if n != 1}
    assert not twice, f"answered more than once: {twice}"
    wrong = {rid: describe(o) for rid, o in outcomes.items()
             if not (isinstance(o, RunResult) and o.status is Status.PASSED)}
    assert not wrong, f"passing programs not answered PASSED: {wrong}"


def wait_busy(box: Sandbox, n: int, timeout_s: float = 30.0) -> None:
    """Waits until ``n`` containers of the pool run a request."""
    pool = box.server.server.pool
    assert pool is not None
    wait_for(lambda: pool.busy >= n, timeout_s, f"{n} busy containers")


def engine_ids(box: Sandbox) -> set[str]:
    return {c["Id"] for c in box.containers()}


# -- a, b: a container or its agent killed mid-run ---------------------------------------------


@pytest.mark.timeout(180)
@pytest.mark.parametrize("how", ["docker-kill", "sigkill-agent-host-pid"])
def test_containers_killed_mid_run_are_replaced_and_the_runs_pass(engine: docker.DockerClient, how: str) -> None:
    """Every container of the pool dies while two runs hold two of them (``docker kill``,
    or SIGKILL of the agent's host pid, which Docker does not see coming): both requests
    are answered once, PASSED (the scheduler retries on a fresh container, the client
    retries any sandbox_error), within seconds; the killed containers are removed from the
    engine, not merely stopped, and the pool is back at size."""
    with serving(engine, server_settings("runc", pool_size=3, tag="kill")) as box:
        killed = box.settle()
        lost_before = counter(box.server, "sandbox_container_recycles", reason="agent_lost")
        requests = [he_request(sleeper(1.0), timeout_s=10.0, request_id=f"kill-{how}-{i}") for i in range(2)]
        with ThreadPoolExecutor(1) as pool:
            started = time.monotonic()
            batch = pool.submit(run_batch, box.client, requests, 2)
            wait_busy(box, 2)
            time.sleep(0.3)  # inside time.sleep(1.0) of both runs
            for cid in killed:
                if how == "docker-kill":
                    engine.api.kill(cid)
                else:
                    os.kill(engine.api.inspect_container(cid)["State"]["Pid"], signal.SIGKILL)
            seen, outcomes = batch.result(timeout=90)
            elapsed = time.monotonic() - started
        assert_each_once_and_passed([r.id for r in requests], seen, outcomes)
        assert elapsed < 30, f"answered after {elapsed:.1f} s"
        assert counter(box.server, "sandbox_container_recycles", reason="agent_lost") - lost_before >= 2, \
            "the busy containers' deaths were not noticed as lost agents"
        after = box.settle(timeout_s=60)
        assert not after & killed, f"killed containers still serve: {sorted(c[:12] for c in after & killed)}"
        wait_for(lambda: not engine_ids(box) & killed, 30, "the killed containers to be removed from the engine")
        result, _ = box.run(he_request(PASSING, request_id=f"kill-{how}-after"))
        assert result.status is Status.PASSED, describe(result)


# -- c: the Docker daemon restarted under load ----------------------------------------------------


def _engine_socket() -> str:
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    return host.removeprefix("unix://")


def _dockerd_hosts(argv: list[str]) -> list[str]:
    hosts = []
    for i, arg in enumerate(argv):
        if arg in ("-H", "--host") and i + 1 < len(argv):
            hosts.append(argv[i + 1])
        elif arg.startswith("--host="):
            hosts.append(arg.split("=", 1)[1])
    return [h.removeprefix("unix://") for h in hosts] or ["/var/run/docker.sock"]


def find_dockerd() -> tuple[int, list[str], str, dict[str, str], str]:
    """The dockerd serving this session's engine socket: pid, argv, cwd, environment and
    where its stdout goes (to restart it the way it was started)."""
    socket_path = _engine_socket()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/comm") as f:
                if f.read().strip() != "dockerd":
                    continue
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = [a.decode() for a in f.read().rstrip(b"\0").split(b"\0")]
            if socket_path not in _dockerd_hosts(argv):
                continue
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = dict(kv.decode().split("=", 1) for kv in f.read().split(b"\0") if b"=" in kv)
            cwd = os.readlink(f"/proc/{entry}/cwd")
            log = os.readlink(f"/proc/{entry}/fd/1")
        except OSError:
            continue
        return int(entry), argv, cwd, env, log if log.startswith("/") else "/var/log/dockerd.log"
    pytest.fail(f"no dockerd process serves {socket_path}: cannot restart the engine from here", pytrace=False)


def engine_answers() -> bool:
    """Whether the engine at this session's socket answers a ping."""
    path = _engine_socket()
    try:
        client = docker.DockerClient(base_url=f"unix://{path}", timeout=5)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


def start_dockerd(argv: list[str], cwd: str, env: dict[str, str], log: str) -> None:
    """Starts dockerd detached, as scripts/ensure-engine.sh does (``nohup dockerd >LOG &``)."""
    subprocess.run(["sh", "-c", 'nohup "$@" >>"$DOCKERD_LOG" 2>&1 </dev/null &', "sh", *argv],
                   cwd=cwd, env={**env, "DOCKERD_LOG": log}, start_new_session=True, check=True, timeout=30)


def health(target: str) -> int:
    """The server's overall health status, -1 when it does not answer."""
    with grpc.insecure_channel(target) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        except grpc.RpcError:
            return -1
        return int(reply.status)


def restart_engine_under_load(engine: docker.DockerClient) -> str:
    """The body of the daemon-restart test; returns what the known bug left in the engine,
    "" if nothing (the test raises it, outside this frame and the server it holds)."""
    pid, argv, cwd, env, log = find_dockerd()
    settings = server_settings("runc", pool_size=2, tag="dockerd", max_queue_wait_s=180.0)
    retry = RetryPolicy(max_attempts=20, initial_backoff_s=0.5, max_backoff_s=5.0)
    stopped = restarted = False
    casualties: set[str] = set()
    leak = ""
    try:
        with serving(engine, settings, retry=retry) as box:
            before = box.settle()
            requests = [he_request(sleeper(1.0), timeout_s=10.0, request_id=f"dockerd-{i}") for i in range(40)]
            target = box.server.target
            with ThreadPoolExecutor(1) as pool:
                batch = pool.submit(run_batch, box.client, requests, 4)
                wait_busy(box, 2)
                casualties = {c["Id"] for c in engine.api.containers(
                    filters={"label": f"{MANAGED_LABEL}=true", "status": "running"})} - before
                os.kill(pid, signal.SIGTERM)
                stopped = True
                wait_for(lambda: not os.path.exists(f"/proc/{pid}"), 90, "dockerd to exit", 0.2)
                # The server polls the engine every 5 s.
                wait_for(lambda: health(target) == health_pb2.HealthCheckResponse.NOT_SERVING, 15,
                         "the health check to say NOT_SERVING while the engine is down")
                start_dockerd(argv, cwd, env, log)
                restarted = True
                wait_for(engine_answers, 90, "the restarted dockerd to answer", 0.5)
                seen, outcomes = batch.result(timeout=300)
            assert_each_once_and_passed([r.id for r in requests], seen, outcomes)
            assert counter(box.server, "sandbox_errors", kind="agent_lost") >= 1, \
                "no run was in flight when the daemon stopped its containers: the fault was not injected"
            wait_for(lambda: health(target) == health_pb2.HealthCheckResponse.SERVING, 30,
                     "the health check to say SERVING again")

            def running() -> set[str]:
                return {c["Id"] for c in box.containers() if c["State"] == "running"}

            wait_for(lambda: len(running()) == settings.pool_size, 90, "the pool to refill to its size", 0.5)
            assert not running() & before, "containers from before the restart still serve"
            try:
                box.settle(timeout_s=30)
            except AssertionError as exc:
                leak = str(exc)
    finally:
        if stopped and not restarted:  # a check failed during the outage: bring the engine back
            wait_for(lambda: not os.path.exists(f"/proc/{pid}"), 90, "dockerd to exit", 0.2)
            start_dockerd(argv, cwd, env, log)
        if stopped:
            wait_for(engine_answers, 120, "dockerd to answer again", 0.5)
            # The restart also stopped other servers' containers (this session's shared
            # servers): their pools replace them, but until the bug below is fixed nothing
            # removes the dead ones, and those servers' checks would trip over them.
            for cid in casualties:
                with contextlib.suppress(docker.errors.NotFound):
                    if engine.api.inspect_container(cid)["State"]["Status"] != "running":
                        engine.api.remove_container(cid, force=True)
    return leak


def _connect_closing_on_failure(self: Any) -> None:
    """docker-py 7.2's ``UnixHTTPConnection.connect`` (docker/transport/unixconn.py), except
    that it closes its socket when connecting fails (docker-py leaves it to the garbage
    collector, whose ResourceWarning then lands in whichever test runs at that moment)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(self.timeout)
        sock.connect(self.unix_socket)
    except BaseException:
        sock.close()
        raise
    self.sock = sock


@pytest.mark.skipif(
    os.environ.get("SANDBOX_TEST_ENGINE_RESTART") != "1",
    reason="restarts the Docker daemon, which stops every container on the engine (other sessions' too); "
           "set SANDBOX_TEST_ENGINE_RESTART=1 where nothing else uses the engine (CI does)",
)
@pytest.mark.timeout(480)
def test_engine_restart_during_runs_loses_nothing_and_the_pool_recovers(
    engine: docker.DockerClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """dockerd is stopped (SIGTERM, as a service manager does) and started again while a
    stream of passing runs goes on: every request is answered once and PASSED (runs the
    daemon's shutdown killed come back as sandbox_error or UNAVAILABLE and are retried), the
    health check says NOT_SERVING during the outage and SERVING after it, and the pool
    returns to its size with exactly its own running containers in the engine."""
    # Every server in this process (the session's too) calls the stopped daemon; docker-py
    # would leave each failed call's socket open until the garbage collector finds it.
    monkeypatch.setattr(docker.transport.unixconn.UnixHTTPConnection, "connect", _connect_closing_on_failure)
    leak = restart_engine_under_load(engine)
    if leak:
        raise KnownBugError(leak)


# -- d: the Docker API hangs, a container freezes -------------------------------------------------


class GatedBackend(DockerBackend):
    """The real backend, except that container creation blocks while the gate is shut:
    an Engine API that hangs (bounded at 120 s so that a failing test cannot hang)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.gate.set()
        self.blocked = 0

    async def create(self, name: str, config: Any) -> str:
        if not self.gate.is_set():
            self.blocked += 1
            await asyncio.to_thread(self.gate.wait, 120)
        return await super().create(name, config)


@pytest.mark.timeout(180)
def test_a_hung_engine_api_gives_deadlines_bounded_waits_and_recovers(engine: docker.DockerClient) -> None:
    """With the pool's only container gone and container creation hanging: a request with a
    2 s deadline gets DEADLINE_EXCEEDED at about 2 s; one without a deadline and without
    retries gets UNAVAILABLE when the scheduler's max_queue_wait_s (6 s) runs out, never a
    hang; one retried by the client waits and passes once the API answers again; the pool
    is then back at size."""
    backend = GatedBackend()
    image = ensure_image(backend.api, "")
    settings = server_settings("runc", pool_size=1, tag="hungapi", image=image, max_queue_wait_s=6.0)
    with serving(engine, settings, backend=backend) as box:
        (only,) = box.settle()
        backend.gate.clear()
        engine.api.kill(only)
        pool_ = box.server.server.pool
        assert pool_ is not None
        wait_for(lambda: backend.blocked >= 1 and pool_.idle == 0, 30, "the refill to block on the hung API")
        results: dict[str, tuple[str, float]] = {}

        def call(name: str, client: Client, timeout_s: float | None) -> None:
            started = time.monotonic()
            try:
                outcome = client.execute(he_request(PASSING, request_id=f"hung-{name}"), timeout_s=timeout_s)
                results[name] = (outcome.status.value, time.monotonic() - started)
            except grpc.RpcError as exc:
                results[name] = (exc.code().name, time.monotonic() - started)

        try:
            with Client(box.server.target, retry=NO_RETRY) as once, ThreadPoolExecutor(3) as pool:
                futures = [
                    pool.submit(call, "deadline", box.client, 2.0),
                    pool.submit(call, "no-retry", once, None),
                    pool.submit(call, "retried", box.client, None),
                ]
                time.sleep(10.0)
                assert "retried" not in results, f"answered while the API hung: {results}"
                backend.gate.set()
                for f in futures:
                    f.result(timeout=60)
        finally:
            backend.gate.set()
        status, took = results["deadline"]
        assert status == "DEADLINE_EXCEEDED" and took < 4.0, results
        status, took = results["no-retry"]
        assert status == "UNAVAILABLE" and 5.0 < took < 15.0, results
        status, took = results["retried"]
        assert status == "passed" and took < 40.0, results
        box.settle(timeout_s=60)


@pytest.mark.timeout(120)
def test_a_frozen_container_is_not_blamed_on_the_candidate(engine: docker.DockerClient) -> None:
    """``docker pause`` freezes the container of a passing 1.5 s run (limit 3 s) for 10 s,
    longer than the limit plus the scheduler's grace: the request is answered within
    bounded time, and the answer the retrying client ends with is PASSED (the stall may
    come back as a retryable sandbox_error first), never TIMEOUT: the candidate never got
    to run out its clock. The frozen container is destroyed and replaced."""
    with serving(engine, server_settings("runc", pool_size=1, tag="pause")) as box:
        (frozen,) = box.settle()
        with ThreadPoolExecutor(1) as pool:
            started = time.monotonic()
            future = pool.submit(box.client.execute, he_request(sleeper(1.5), timeout_s=3.0, request_id="pause-1"))
            wait_busy(box, 1)
            engine.api.pause(frozen)
            time.sleep(10.0)
            with contextlib.suppress(docker.errors.APIError):
                engine.api.unpause(frozen)
            result = future.result(timeout=60)
            elapsed = time.monotonic() - started
        assert elapsed < 30, f"answered after {elapsed:.1f} s"
        after = box.settle(timeout_s=60)
        assert frozen not in after, "the frozen container went back to the pool"
        if result.status is not Status.PASSED:
            raise KnownBugError(f"a frozen container's passing run was answered {describe(result)}")


# -- e: the server process killed and restarted ---------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(port: int, pool_name: str, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [str(Path(sys.executable).parent / "sandbox"), "serve", "--listen", f"127.0.0.1:{port}",
             "--pool-name", pool_name, "--pool-size", "2"],
            stdin=subprocess.DEVNULL, stdout=out, stderr=out, cwd=ROOT,
            env={**os.environ, "SANDBOX_LOG_FORMAT": "json"},
        )


def _wait_serving(proc: subprocess.Popen[bytes], target: str, log: Path, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while health(target) != health_pb2.HealthCheckResponse.SERVING:
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-3000:]
            raise AssertionError(f"sandbox serve did not become SERVING (exit {proc.poll()}): {tail}")
        time.sleep(0.2)


@pytest.mark.timeout(300)
def test_a_killed_server_leaves_orphans_that_its_successor_removes(
    engine: docker.DockerClient, tmp_path: Path
) -> None:
    """``sandbox serve`` is SIGKILLed with runs in flight: its containers stay behind (no
    one removed them). Started again with the same pool name, it removes them at start-up
    and serves with fresh ones; the client, retrying, gets exactly one PASSED answer for
    every request across the restart; SIGTERM then stops it cleanly, leaving nothing."""
    port, pool_name, log = _free_port(), unique_pool_name("serve"), tmp_path / "serve.log"
    target = f"127.0.0.1:{port}"
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs.append(_serve(port, pool_name, log))
        _wait_serving(procs[0], target, log)
        first = {c["Id"] for c in pool_containers(engine, pool_name)}
        assert len(first) == 2, first
        requests = [he_request(sleeper(0.5), timeout_s=10.0, request_id=f"serve-{i}") for i in range(12)]
        retry = RetryPolicy(max_attempts=40, initial_backoff_s=0.2, max_backoff_s=2.0)
        with Client(target, retry=retry) as client, ThreadPoolExecutor(1) as pool:
            batch = pool.submit(run_batch, client, requests, 2)
            time.sleep(1.0)
            procs[0].send_signal(signal.SIGKILL)
            procs[0].wait(30)
            orphans = {c["Id"]: c["State"] for c in pool_containers(engine, pool_name)}
            assert set(orphans) == first, f"after SIGKILL the engine holds {orphans}, the server had {first}"
            procs.append(_serve(port, pool_name, log))
            _wait_serving(procs[1], target, log)
            seen, outcomes = batch.result(timeout=180)
        assert_each_once_and_passed([r.id for r in requests], seen, outcomes)
        now = {c["Id"]: c["State"] for c in pool_containers(engine, pool_name)}
        assert not set(now) & first, f"orphans of the killed server survived the restart: {now}"
        assert len(now) == 2 and set(now.values()) == {"running"}, now
        procs[1].send_signal(signal.SIGTERM)
        assert procs[1].wait(90) == 0, log.read_text(errors="replace")[-3000:]
        assert not pool_containers(engine, pool_name), "containers outlived a cleanly stopped server"
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(30)
        for c in pool_containers(engine, pool_name):
            engine.api.remove_container(c["Id"], force=True)


# -- f: clients that give up ----------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_a_cancelled_run_destroys_its_container_and_the_server_carries_on(engine: docker.DockerClient) -> None:
    """A 10 s run cancelled by its client after 1 s: its container is destroyed well before
    the 10 s are up (the run is stopped, not left to finish), the pool replaces it, the other
    container is untouched, and the next request passes."""
    with serving(engine, server_settings("runc", pool_size=2, tag="cancel")) as box:
        before = box.settle()
        cancelled = counter(box.server, "sandbox_container_recycles", reason="cancelled")
        with grpc.insecure_channel(box.server.target) as channel:
            stub = pb_grpc.SandboxStub(channel)  # type: ignore[no-untyped-call]
            started = time.monotonic()
            call = stub.Execute.future(request_to_pb(he_request(sleeper(10), timeout_s=20.0, request_id="cancel-1")))
            wait_busy(box, 1)
            time.sleep(1.0)
            assert call.cancel(), "the call had already finished"
            wait_for(lambda: len(engine_ids(box) & before) == 1, 8, "the cancelled run's container to go")
            assert time.monotonic() - started < 9.5, "the container outlived the run it was running"
        assert counter(box.server, "sandbox_container_recycles", reason="cancelled") == cancelled + 1
        after = box.settle(timeout_s=60)
        assert len(after & before) == 1, "more than the cancelled run's container was replaced"
        result, _ = box.run(he_request(PASSING, request_id="cancel-after"))
        assert result.status is Status.PASSED, describe(result)


@pytest.mark.timeout(120)
def test_a_deadline_shorter_than_the_run_ends_it_and_recycles_its_container(engine: docker.DockerClient) -> None:
    """A 10 s run under a 1.5 s client deadline: DEADLINE_EXCEEDED at about 1.5 s, the
    container that ran it is destroyed and replaced, and the server goes on serving."""
    with serving(engine, server_settings("runc", pool_size=2, tag="deadline"), retry=NO_RETRY) as box:
        before = box.settle()
        cancelled = counter(box.server, "sandbox_container_recycles", reason="cancelled")
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as info:
            box.client.execute(he_request(sleeper(10), timeout_s=20.0, request_id="deadline-1"), timeout_s=1.5)
        took = time.monotonic() - started
        assert info.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED, info.value
        assert took < 3.0, f"the deadline error came after {took:.1f} s"
        wait_for(lambda: counter(box.server, "sandbox_container_recycles", reason="cancelled") == cancelled + 1, 10,
                 "the server to notice the expired deadline and recycle the container")
        after = box.settle(timeout_s=60)
        assert len(after & before) == 1, "not exactly the expired run's container was replaced"
        result, _ = box.run(he_request(PASSING, request_id="deadline-after"))
        assert result.status is Status.PASSED, describe(result)
