"""Isolation as the engine reports it and as a candidate experiences it, and the pool's
ownership of its containers (nothing left behind, nothing of another pool touched).

The network candidates report whether their attempt raised; their test asserts it did,
so PASSED means "contained" and anything else (FAILED: it connected, or a timeout that
hints at a network that merely drops packets) fails the test.
"""

from __future__ import annotations

import fcntl
import socket
import struct
import threading
import time
import uuid
from typing import Any

import docker
import pytest

from sandbox.client import Client, Refused
from sandbox.domain import Status
from sandbox.server.app import EmbeddedServer
from tests.conftest import (
    MANAGED_LABEL,
    POOL_LABEL,
    Sandbox,
    describe,
    he_request,
    pool_containers,
    server_settings,
    unique_pool_name,
)

pytestmark = pytest.mark.integration

MIB = 1024 * 1024
ALLOWED_ENV = {"PATH", "LANG", "HOME", "HOSTNAME"}


def isolation_findings(info: dict[str, Any], sandbox: Sandbox) -> list[str]:
    """Every isolation item of DESIGN.md that ``docker inspect`` contradicts."""
    s = sandbox.settings
    host = info["HostConfig"]
    cfg = info["Config"]
    security = host.get("SecurityOpt") or []
    user = (cfg.get("User") or "").split(":")[0]
    env_names = {e.split("=", 1)[0] for e in cfg.get("Env") or []}
    tmpfs = (host.get("Tmpfs") or {}).get("/tmp", "")
    checks = {
        "running": info["State"]["Running"] is True,
        "NetworkMode none": host.get("NetworkMode") == "none",
        "attached to no network but none": set((info.get("NetworkSettings") or {}).get("Networks") or {}) <= {"none"},
        "no published ports": not host.get("PortBindings") and not host.get("PublishAllPorts"),
        "ReadonlyRootfs": host.get("ReadonlyRootfs") is True,
        "CapDrop ALL": [c.upper() for c in host.get("CapDrop") or []] in (["ALL"], ["CAP_ALL"]),
        "no CapAdd": not host.get("CapAdd"),
        "not Privileged": host.get("Privileged") is False,
        "no-new-privileges": any(o.replace("=", ":") in ("no-new-privileges:true", "no-new-privileges")
                                 for o in security),
        "seccomp and apparmor not unconfined": not any("unconfined" in o for o in security),
        "Memory set": host.get("Memory") == s.container_memory_mb * MIB > 0,
        "MemorySwap == Memory (no swap)": host.get("MemorySwap") == host.get("Memory"),
        "PidsLimit set": host.get("PidsLimit") == s.container_pids and s.container_pids > 0,
        "NanoCpus set": host.get("NanoCpus") == int(s.container_cpus * 1e9) > 0,
        "Tmpfs on /tmp, size-capped": "size=" in tmpfs,
        "no Binds": not host.get("Binds"),
        "no HostConfig.Mounts": not host.get("Mounts"),
        "no mounts at all": not info.get("Mounts"),
        "no devices": not host.get("Devices"),
        "Docker socket nowhere": "docker.sock" not in repr(info),
        "no host namespace shared": all(
            host.get(k) != "host" for k in ("PidMode", "UTSMode", "UsernsMode", "IpcMode")
        ),
        "private IPC": host.get("IpcMode") in ("private", "none"),
        "User set and not root": user not in ("", "0", "root"),
        "only allow-listed environment": env_names <= ALLOWED_ENV,
        "label sandbox.managed=true": (cfg.get("Labels") or {}).get(MANAGED_LABEL) == "true",
        "label sandbox.pool=<pool>": (cfg.get("Labels") or {}).get(POOL_LABEL) == s.pool_name,
        f"Runtime {s.runtime}": host.get("Runtime") == s.runtime,
    }
    return [name for name, ok in checks.items() if not ok]


def test_pool_containers_carry_every_isolation_item(any_sandbox: Sandbox) -> None:
    """``docker inspect`` of every pool container shows each isolation item of DESIGN.md:
    no network, read-only root, all capabilities dropped, no-new-privileges, memory with
    swap equal to it, pids and CPU limits, a size-capped tmpfs on /tmp, no mounts, a
    non-root user, allow-listed environment, the pool's labels and the chosen runtime."""
    ids = any_sandbox.settle()
    assert len(ids) == any_sandbox.settings.pool_size
    findings = {}
    for cid in ids:
        info = any_sandbox.engine.api.inspect_container(cid)
        if bad := isolation_findings(info, any_sandbox):
            findings[cid[:12]] = bad
    assert not findings, f"containers contradicting DESIGN.md's isolation: {findings}"


def host_ipv4_addresses() -> set[str]:
    """The host's IPv4 addresses on every interface but loopback (docker0 included)."""
    addresses = set()
    for _, name in socket.if_nameindex():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                packed = fcntl.ioctl(s.fileno(), 0x8915, struct.pack("256s", name.encode()[:15]))  # SIOCGIFADDR
            except OSError:
                continue
        address = socket.inet_ntoa(packed[20:24])
        if not address.startswith("127."):
            addresses.add(address)
    return addresses


_ATTEMPT = '''
import socket

def attempt():
{body}

def f(_):
    try:
        attempt()
    except socket.timeout:
        return "timed out: a network that drops is still a network"
    except OSError as exc:
        return "blocked"
    return "connected"
'''
_CONTAINED = "def check(candidate):\n    assert candidate(None) == 'blocked'\n"


def _tcp(host: str, port: int) -> str:
    return f"    s = socket.socket()\n    s.settimeout(3)\n    s.connect(({host!r}, {port}))\n"


def network_attempts(sandbox: Sandbox, listener_port: int) -> dict[str, str]:
    bodies = {
        "tcp 1.1.1.1:53": _tcp("1.1.1.1", 53),
        "udp 1.1.1.1:53": "    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "    s.settimeout(3)\n    s.sendto(b'\\0' * 12, ('1.1.1.1', 53))\n    s.recvfrom(512)\n",
        f"tcp 127.0.0.1:{sandbox.grpc_port} (the server's gRPC port)": _tcp("127.0.0.1", sandbox.grpc_port),
        "dns example.com": "    socket.getaddrinfo('example.com', 80)\n",
        "dns host.docker.internal": "    socket.getaddrinfo('host.docker.internal', 80)\n",
        "raw socket": "    socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)\n",
        "docker socket": "    s = socket.socket(socket.AF_UNIX)\n    s.connect('/var/run/docker.sock')\n",
    }
    for address in sorted(host_ipv4_addresses()):
        bodies[f"tcp {address}:{listener_port} (a host listener)"] = _tcp(address, listener_port)
        bodies[f"tcp {address}:{sandbox.grpc_port} (gRPC port, host address)"] = _tcp(address, sandbox.grpc_port)
    return {name: _ATTEMPT.format(body=body) for name, body in bodies.items()}


def test_no_connection_leaves_the_sandbox(any_sandbox: Sandbox) -> None:
    """From inside the sandbox every connection attempt fails at once: the Internet (TCP,
    UDP), the host's gRPC port on 127.0.0.1 and on its own addresses, a listener on all
    the host's interfaces, DNS, raw sockets and the Docker socket. The listener sees no
    connection."""
    with socket.create_server(("0.0.0.0", 0)) as listener:
        listener.setblocking(False)
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            conn, _ = _accept(listener)  # the listener is reachable from the host itself
            conn.close()
        attempts = network_attempts(any_sandbox, port)
        assert len(attempts) >= 9, attempts.keys()  # at least one host address was found
        token = uuid.uuid4().hex[:8]
        requests = [he_request(program, _CONTAINED, "f", timeout_s=15.0, request_id=f"{name}#{token}")
                    for name, program in attempts.items()]
        escaped = {}
        for name, result in any_sandbox.client.execute_many(requests, window=len(requests)):
            if isinstance(result, Refused) or result.status is not Status.PASSED:
                escaped[name] = describe(result)
        with pytest.raises(BlockingIOError):
            listener.accept()
    assert not escaped, f"attempts not contained: {escaped}"


def _accept(listener: socket.socket) -> tuple[socket.socket, Any]:
    deadline = time.monotonic() + 5
    while True:
        try:
            return listener.accept()
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)


@pytest.mark.runsc
def test_runsc_pool_runs_under_gvisor(runsc_sandbox: Sandbox) -> None:
    """With runtime runsc, the pool's containers run under gVisor: the engine says
    HostConfig.Runtime is runsc, and inside, the kernel is gVisor's (its root is a 9p
    mount, which no runc container has)."""
    for cid in runsc_sandbox.settle():
        assert runsc_sandbox.engine.api.inspect_container(cid)["HostConfig"]["Runtime"] == "runsc"
    program = (
        "def f(x):\n"
        "    with open('/proc/self/mounts') as m:\n"
        "        root = [line.split()[2] for line in m if line.split()[1] == '/']\n"
        "    return root\n"
    )
    result, _ = runsc_sandbox.run(he_request(program, "def check(c):\n    assert c(0) == ['9p']\n"))
    assert result.status is Status.PASSED, describe(result)


def test_server_exit_leaves_no_container(engine: docker.DockerClient) -> None:
    """When a server exits (even with a run in flight and a container being recycled),
    no container carrying its pool label remains on the engine, and the in-flight call
    ends instead of hanging."""
    settings = server_settings("runc", pool_size=2, tag="exit")
    outcome: dict[str, Any] = {}
    with EmbeddedServer(settings) as srv:
        assert len(pool_containers(engine, settings.pool_name)) == 2
        with Client(srv.target) as c:
            assert c.execute(he_request("def f(x):\n    return x + 1\n")).passed
            # A timed-out run: its container is destroyed and replaced in the background.
            assert c.execute(he_request("def f(x):\n    while True: pass\n", timeout_s=1.0)).status is Status.TIMEOUT
        late = Client(srv.target)

        def in_flight() -> None:
            try:
                outcome["result"] = late.execute(he_request("import time\ndef f(x):\n    time.sleep(600)\n",
                                                            timeout_s=300.0), timeout_s=120)
            except Exception as exc:
                outcome["error"] = exc

        thread = threading.Thread(target=in_flight, daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while srv.server.pool is not None and srv.server.pool.busy == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert srv.server.pool is not None and srv.server.pool.busy == 1, "the long run never started"
        exit_started = time.monotonic()
    exit_took = time.monotonic() - exit_started
    left = pool_containers(engine, settings.pool_name)
    thread.join(30)
    late.close()
    leftovers = [(c["Id"][:12], c["State"]) for c in left]
    assert not left, f"containers left behind by pool {settings.pool_name}: {leftovers}"
    assert not thread.is_alive(), "the in-flight call hangs after the server exited"
    assert exit_took < 30, f"the server took {exit_took:.1f} s to exit"
    assert "result" not in outcome or not outcome["result"].passed, outcome


def test_a_second_pool_does_not_touch_the_first(sandbox: Sandbox, engine: docker.DockerClient) -> None:
    """A second server on the same engine, under another pool name, starts, serves and
    exits without removing or disturbing any container of the first pool."""
    before = sandbox.settle()
    settings = server_settings("runc", pool_size=1, tag="second")
    with EmbeddedServer(settings) as other, Client(other.target) as c:
        mine = pool_containers(engine, settings.pool_name)
        assert len(mine) == 1 and not {r["Id"] for r in mine} & before
        assert c.execute(he_request("def f(x):\n    return x + 1\n")).passed
    assert not pool_containers(engine, settings.pool_name)
    assert sandbox.settle() == before, "the first pool's containers changed while the second server ran"
    result, _ = sandbox.run(he_request("def f(x):\n    return x + 1\n"))
    assert result.passed, describe(result)


def test_leftovers_of_the_same_pool_are_removed_at_start_up(sandbox: Sandbox, engine: docker.DockerClient) -> None:
    """Containers that a previous server of the same pool name left behind (running or
    not) are removed when a new server of that name starts; a container of another pool,
    and one without the managed label, are left alone."""
    assert sandbox.server.server.pool is not None
    image = sandbox.server.server.pool.image
    name = unique_pool_name("leftover")
    other = unique_pool_name("foreign")

    def make(labels: dict[str, str], start: bool) -> Any:
        container = engine.containers.create(
            image,
            entrypoint=["python3", "-c", "import time; time.sleep(600)"],
            labels=labels,
            network_mode="none",
            user="10001:10001",
        )
        if start:
            container.start()
        return container

    leftovers = [
        make({MANAGED_LABEL: "true", POOL_LABEL: name}, start=True),
        make({MANAGED_LABEL: "true", POOL_LABEL: name}, start=False),
    ]
    spared = [
        make({MANAGED_LABEL: "true", POOL_LABEL: other}, start=True),
        make({POOL_LABEL: name}, start=True),  # not managed by us: not ours to remove
    ]
    try:
        settings = server_settings("runc", pool_size=1, pool_name=name)
        with EmbeddedServer(settings) as srv:
            for c in leftovers:
                with pytest.raises(docker.errors.NotFound):
                    engine.containers.get(c.id)
            for c in spared:
                engine.containers.get(c.id)  # still there
            current = {r["Id"] for r in pool_containers(engine, name) if r["Labels"].get(MANAGED_LABEL) == "true"}
            assert len(current) == 1 and not current & {c.id for c in leftovers}
            with Client(srv.target) as c:
                assert c.execute(he_request("def f(x):\n    return x + 1\n")).passed
        for c in spared:
            assert engine.containers.get(c.id).status == "running"
    finally:
        for c in leftovers + spared:
            try:
                c.remove(force=True)
            except docker.errors.NotFound:
                pass
