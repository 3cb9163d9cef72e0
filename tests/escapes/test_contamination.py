"""Cross-run contamination in a reused container (DESIGN.md, attack class E): planted
modules, files in /dev/shm, POSIX message queues, listening sockets, SysV IPC objects,
in-memory changes to modules and caches, and reading another task's tests.

The pool reuses a container after a clean run, so each test here uses a server of its
own with a pool of ONE container (per runtime, shared by this module): run N plants,
run N+1 looks, and both are checked to have run in the same container (its id did not
change). Run N must PASS, so that the pool keeps its container; run N+1's f returns what
it found of run N and its test wants nothing (``assert found == []``), so a PASSED
verdict means nothing crossed over and a FAILED one lists what did. Afterwards the
container must still be the same one, and pristine.

Processes left behind are in ``test_lifetime.py`` and ``test_basic_escapes.py`` (a run
that leaves one never leaves its container in the pool).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator

import docker
import pytest

from sandbox.client import Client
from sandbox.domain import RunResult, Status
from sandbox.server.app import EmbeddedServer
from tests.conftest import (
    CHECK_F,
    Sandbox,
    assert_pristine,
    describe,
    he_request,
    known_bug,
    pool_containers,
    server_settings,
)

pytestmark = pytest.mark.escape

FOUND_NOTHING = "def check(candidate):\n    found = candidate(None)\n    assert found == [], found\n"


@pytest.fixture(scope="module", params=["runc", pytest.param("runsc", marks=pytest.mark.runsc)])
def solo(request: pytest.FixtureRequest, engine: docker.DockerClient) -> Iterator[Sandbox]:
    """A server of this module's own whose pool is one container: consecutive runs share
    it as long as they leave it clean."""
    runtime = request.param
    if runtime == "runsc" and "runsc" not in (engine.info().get("Runtimes") or {}):
        pytest.fail("runsc is not registered with the Docker engine (see DESIGN.md, machine facts)", pytrace=False)
    settings = server_settings(runtime, pool_size=1, tag=f"solo-{runtime}")
    server = EmbeddedServer(settings)
    try:
        server.__enter__()
    except Exception as exc:
        pytest.fail(f"the one-container {runtime} server did not start: {exc!r}", pytrace=False)
    try:
        with Client(server.target) as client:
            yield Sandbox(server, client, engine)
    finally:
        server.__exit__(None, None, None)
        left = pool_containers(engine, settings.pool_name)
        if left:
            pytest.fail(f"pool {settings.pool_name} left containers behind: {[c['Id'][:12] for c in left]}")


def one_after_the_other(
    box: Sandbox, plant: str, look: str, *, plant_test: str = CHECK_F, look_test: str = FOUND_NOTHING
) -> RunResult:
    """Runs ``plant`` (which must PASS) then ``look`` in the pool's single container, and
    checks that both ran there and that it is still there, pristine, afterwards. Returns
    the result of ``look``."""
    (container,) = box.settle()
    planted, _ = box.run_once(he_request(plant, plant_test, timeout_s=20.0))
    assert planted.status is Status.PASSED, f"the planting run: {describe(planted)}"
    assert box.settle() == {container}, "the planting run's container was replaced: nothing to contaminate"
    looked, _ = box.run_once(he_request(look, look_test, timeout_s=20.0))
    assert box.settle() == {container}, "the looking run's container was replaced"
    assert_pristine(box.probe_all())
    return looked


def nothing_found(result: RunResult) -> None:
    """The looking run PASSED: its f found nothing of the planting run."""
    assert result.status is Status.PASSED, f"{describe(result)}; found: {[t.message for t in result.tests]}"


# ----------------------------------------------------------------------------- modules

PLANT_MODULES = """
import os, sys

BAD = "raise SystemExit('a planted module was imported')\\n"

def f(x):
    for top in (os.getcwd(), "/tmp", "/dev/shm", os.environ["HOME"]):
        for name in ("json.py", "collections.py", "csv.py", "shlex.py", "sitecustomize.py",
                     "usercustomize.py", "zz_planted.pth"):
            with open(os.path.join(top, name), "w") as fh:
                fh.write(BAD if name.endswith(".py") else "import zz_planted_module\\n")
        os.makedirs(os.path.join(top, "__pycache__"), exist_ok=True)
        with open(os.path.join(top, "__pycache__", "csv.cpython-311.pyc"), "wb") as fh:
            fh.write(b"\\x00" * 64)
        os.makedirs(os.path.join(top, "collections"), exist_ok=True)
        with open(os.path.join(top, "collections", "__init__.py"), "w") as fh:
            fh.write(BAD)
    return x + 1
"""

LOOK_MODULES = """
import os, sys

def f(_):
    found = []
    import csv, collections, json, shlex  # csv and shlex are not preloaded by the zygote
    for module in (csv, collections, json, shlex):
        if not module.__file__.startswith("/usr/lib/python3"):
            found.append(f"{module.__name__} from {module.__file__}")
    for entry in sys.path:
        if entry in ("", ".", os.getcwd()) or entry.startswith(("/tmp", "/dev/shm")):
            found.append(f"sys.path holds {entry!r}")
    for name in ("sitecustomize", "usercustomize", "zz_planted_module"):
        module = sys.modules.get(name)  # Debian's own sitecustomize lives in /usr/lib/python3.*
        if module is not None and not (getattr(module, "__file__", "") or "").startswith("/usr/lib/python3"):
            found.append(f"{name} was imported from {getattr(module, '__file__', None)}")
    for top in ("/tmp", "/dev/shm"):
        for root, dirs, files in os.walk(top):
            found += [os.path.join(root, n) for n in dirs + files if n != os.path.basename(os.getcwd())]
    return found
"""


def test_planted_modules_do_not_reach_the_next_run(solo: Sandbox) -> None:
    """Modules named like the standard library's (json, collections, csv, shlex, as files
    and as a package), sitecustomize/usercustomize, a .pth file and a fake bytecode cache,
    planted in the scratch directory, HOME, /tmp and /dev/shm, are gone before the next
    run in the same container: it imports the standard library's modules, its import path
    holds no writable place, and it sees no planted file."""
    nothing_found(one_after_the_other(solo, PLANT_MODULES, LOOK_MODULES))


# ------------------------------------------------------------------- files and queues

PLANT_SHM_AND_QUEUE = """
import ctypes, os

def f(x):
    with open("/dev/shm/planted-TOKEN", "w") as fh:
        fh.write("run N was here")
    os.mkdir("/dev/shm/.planted-dir-TOKEN")
    librt = ctypes.CDLL("librt.so.1", use_errno=True)
    if librt.mq_open(b"/planted-TOKEN", os.O_CREAT | os.O_RDWR, 0o600, None) < 0:
        raise OSError(ctypes.get_errno(), "mq_open")
    librt.mq_send(3, b"run N was here", 14, 0)  # ENOSYS under gVisor: the queue is what counts
    return x + 1
"""

LOOK_SHM_AND_QUEUE = """
import ctypes, errno, os

def f(_):
    found = [f"/dev/shm/{name}" for name in os.listdir("/dev/shm")]
    librt = ctypes.CDLL("librt.so.1", use_errno=True)
    mq = librt.mq_open(b"/planted-TOKEN", os.O_RDWR)
    if mq >= 0:
        found.append("the POSIX message queue /planted-TOKEN is still there")
    elif ctypes.get_errno() != errno.ENOENT:
        found.append(f"mq_open failed with {errno.errorcode.get(ctypes.get_errno())}, not ENOENT")
    return found
"""


def test_shm_files_and_message_queues_do_not_reach_the_next_run(solo: Sandbox, request: pytest.FixtureRequest) -> None:
    """A file and a hidden directory in /dev/shm and a POSIX message queue created by
    run N are gone for run N+1 in the same container (/dev/shm empty, mq_open ENOENT)."""
    known_bug(request, solo, ("runsc",),
              "under runsc, POSIX message queues survive into the next run: gVisor mounts no /dev/mqueue, so the "
              "agent's scrub (which empties /dev/mqueue only if it is a directory) never sees them, and run N+1 "
              "opens the queue run N created (its name alone can carry data; mq_send is ENOSYS under gVisor)")
    token = uuid.uuid4().hex[:8]
    nothing_found(one_after_the_other(solo, PLANT_SHM_AND_QUEUE.replace("TOKEN", token),
                                      LOOK_SHM_AND_QUEUE.replace("TOKEN", token)))


# ---------------------------------------------------------------------------- sockets

PLANT_LISTENERS = """
import socket

def f(x):
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.bind(("127.0.0.1", PORT))
    tcp.listen()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", PORT))
    abstract = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    abstract.bind("\\0planted-TOKEN")
    abstract.listen()
    path = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    path.bind("/tmp/planted-TOKEN.sock")
    path.listen()
    globals()["_kept_open"] = (tcp, udp, abstract, path)  # open until the process ends
    return x + 1
"""

LOOK_LISTENERS = """
import socket

def f(_):
    found = []
    for family, address in ((socket.AF_INET, ("127.0.0.1", PORT)), (socket.AF_UNIX, "\\0planted-TOKEN"),
                            (socket.AF_UNIX, "/tmp/planted-TOKEN.sock")):
        s = socket.socket(family, socket.SOCK_STREAM)
        try:
            s.connect(address)
            found.append(f"connected to {address!r}")
        except OSError:
            pass
        finally:
            s.close()
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        s = socket.socket(socket.AF_INET, kind)
        try:
            s.bind(("127.0.0.1", PORT))
        except OSError as exc:
            found.append(f"port {PORT} ({kind.name}) is still taken: {exc}")
        finally:
            s.close()
    with open("/proc/net/tcp") as fh:
        listening = [line for line in fh.read().splitlines()[1:] if line.split()[3] == "0A"]
    found += [f"listening TCP socket: {line.strip()}" for line in listening]
    with open("/proc/net/unix") as fh:
        found += [f"unix socket: {line.strip()}" for line in fh if "planted" in line]
    return found
"""


def test_listening_sockets_do_not_reach_the_next_run(solo: Sandbox) -> None:
    """TCP and UDP sockets bound on the container's loopback, an abstract and a
    filesystem unix socket, all listening when run N's process ends, are gone for run N+1
    in the same container: nothing to connect to, the port is free, no listener in
    /proc/net."""
    token, port = uuid.uuid4().hex[:8], 40000 + uuid.uuid4().int % 20000
    plant = PLANT_LISTENERS.replace("TOKEN", token).replace("PORT", str(port))
    look = LOOK_LISTENERS.replace("TOKEN", token).replace("PORT", str(port))
    nothing_found(one_after_the_other(solo, plant, look))


PLANT_SYSV_IPC = """
import ctypes

libc = ctypes.CDLL(None, use_errno=True)
libc.shmat.restype = ctypes.c_void_p

def _check(value, what):
    if value < 0:
        raise OSError(ctypes.get_errno(), what)
    return value

def f(x):
    shmid = _check(libc.shmget(KEY, 4096, 0o1600), "shmget")  # IPC_CREAT | 0600
    address = libc.shmat(shmid, None, 0)
    ctypes.memmove(address, b"run N was here", 14)
    libc.shmdt(ctypes.c_void_p(address))
    _check(libc.semget(KEY + 1, 1, 0o1600), "semget")
    _check(libc.msgget(KEY + 2, 0o1600), "msgget")
    return x + 1
"""

LOOK_SYSV_IPC = """
import ctypes

libc = ctypes.CDLL(None, use_errno=True)
libc.shmat.restype = ctypes.c_void_p

def f(_):
    found = []
    shmid = libc.shmget(KEY, 0, 0)
    if shmid >= 0:
        address = libc.shmat(shmid, None, 0o10000)  # SHM_RDONLY
        found.append(f"shared memory segment {KEY:#x} holds {ctypes.string_at(address, 14)!r}")
    if libc.semget(KEY + 1, 0, 0) >= 0:
        found.append(f"semaphore set {KEY + 1:#x}")
    if libc.msgget(KEY + 2, 0, 0) >= 0:
        found.append(f"message queue {KEY + 2:#x}")
    return found
"""


def test_sysv_ipc_objects_do_not_reach_the_next_run(solo: Sandbox, request: pytest.FixtureRequest) -> None:
    """A SysV shared memory segment (with data in it), semaphore set and message queue
    created by run N are gone for run N+1 in the same container."""
    known_bug(request, solo, "runsc",
              "gVisor has no /proc/sysvipc, so the agent cannot list (and remove) System V IPC objects a run "
              "left under runsc; under runc they are removed after every run")
    key = 0x5A000000 + uuid.uuid4().int % 0xFFFFF * 4
    nothing_found(one_after_the_other(solo, PLANT_SYSV_IPC.replace("KEY", hex(key)),
                                      LOOK_SYSV_IPC.replace("KEY", hex(key))))


# ------------------------------------------------------------------------------ memory

PLANT_IN_MEMORY = """
import collections, functools, json, math, os, random, re, signal, sys

def f(x):
    json.loads = lambda *a, **k: "planted"
    math.pi = 3
    collections.Counter.planted = True
    functools.planted_cache = {"answer": 42}
    functools.lru_cache(maxsize=None)(math.factorial)(200)
    re.compile("planted_pattern_[0-9]+")
    sys.modules["planted_module"] = type(sys)("planted_module")
    sys.path.insert(0, "/tmp")
    sys.setrecursionlimit(50)
    os.environ["PLANTED"] = "1"
    os.umask(0)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    random.seed(1234)
    print("RANDOM", random.getrandbits(64), flush=True)
    return x + 1
"""

LOOK_IN_MEMORY = """
import collections, functools, json, math, os, random, re, signal, sys

def f(_):
    found = []
    if json.loads("[1]") != [1]:
        found.append("json.loads is replaced")
    if math.pi != 3.141592653589793:
        found.append(f"math.pi is {math.pi}")
    if hasattr(collections.Counter, "planted") or hasattr(functools, "planted_cache"):
        found.append("planted attributes on standard modules")
    if any("planted" in str(key) for key in getattr(re, "_cache", {})):
        found.append("the planted pattern is in re's cache")
    if "planted_module" in sys.modules or "/tmp" in sys.path:
        found.append("sys.modules or sys.path changed")
    if sys.getrecursionlimit() == 50:
        found.append("the recursion limit is the planted one")
    if "PLANTED" in os.environ:
        found.append("the planted environment variable")
    mask = os.umask(0o022)
    if mask == 0:
        found.append("the planted umask")
    if signal.getsignal(signal.SIGTERM) is signal.SIG_IGN:
        found.append("SIGTERM is ignored")
    value = random.getrandbits(64)
    if value in (random.Random(1234).getrandbits(64), PREVIOUS):
        found.append("the random generator continues run N's state")
    return found
"""


def test_in_memory_changes_do_not_reach_the_next_run(solo: Sandbox) -> None:
    """Run N replaces json.loads, sets math.pi, adds attributes to collections.Counter
    and functools, fills an lru_cache and re's cache, registers a module, extends sys.path,
    lowers the recursion limit, sets an environment variable, the umask and a signal
    disposition, and seeds the random generator; run N+1 in the same container (a fresh
    fork of the zygote, which never ran candidate code) sees none of it, and its random
    numbers are not run N's."""
    (container,) = solo.settle()
    planted, _ = solo.run_once(he_request(PLANT_IN_MEMORY, timeout_s=20.0))
    assert planted.status is Status.PASSED, describe(planted)
    previous = next(ln.split()[1] for ln in planted.stdout.text.splitlines() if ln.startswith("RANDOM "))
    assert solo.settle() == {container}
    looked, _ = solo.run_once(he_request(LOOK_IN_MEMORY.replace("PREVIOUS", previous), FOUND_NOTHING,
                                          timeout_s=20.0))
    assert solo.settle() == {container}
    nothing_found(looked)
    assert_pristine(solo.probe_all())


# ---------------------------------------------------------------------- other tasks

SEARCH = r'''
import gc, hashlib, os, re

_PATTERN = re.compile(rb"SECRET_MARK_([0-9a-f]{32})")

def _scan(data, where, found):
    for match in _PATTERN.finditer(data):
        found.setdefault(hashlib.sha256(match.group(1)).hexdigest(), set()).add(where)

def f(_):
    found = {}
    with open("/proc/self/maps") as maps, open("/proc/self/mem", "rb", buffering=0) as mem:
        for line in maps:
            fields = line.split()
            start, end = (int(v, 16) for v in fields[0].split("-"))
            if "r" not in fields[1] or fields[-1] in ("[vvar]", "[vsyscall]"):
                continue
            try:
                mem.seek(start)
                _scan(mem.read(end - start), "own memory", found)
            except (OSError, OverflowError, ValueError):
                continue
    for obj in gc.get_objects():
        values = obj.values() if isinstance(obj, dict) else obj if isinstance(obj, (list, tuple)) else ()
        for value in values:
            if isinstance(value, str) and "SECRET_MARK_" in value:
                _scan(value.encode(), "gc", found)
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            for name in ("cmdline", "environ", "mem"):
                try:
                    with open(f"/proc/{pid}/{name}", "rb") as fh:
                        _scan(fh.read(1 << 20), f"/proc/{pid}/{name}", found)
                except OSError:
                    pass
    for top in ("/tmp", "/dev/shm", "/dev/mqueue"):
        for root, _dirs, files in os.walk(top):
            for name in files:
                try:
                    with open(os.path.join(root, name), "rb") as fh:
                        _scan(fh.read(), os.path.join(root, name), found)
                except OSError:
                    pass
    report = {digest: sorted(places) for digest, places in found.items()}
    print("SEARCH", report, flush=True)
    # The test below knows which digest is its own (the control) and which is run N's.
    return sorted(report)
'''


def test_a_run_cannot_read_the_previous_runs_tests(solo: Sandbox) -> None:
    """Run N's test (and program) carry a secret marker; run N+1 in the same container,
    whose own test carries another marker, searches its whole address space
    (/proc/self/mem), every live Python object, every process's /proc entries it can open
    and every file under /tmp, /dev/shm and /dev/mqueue. It finds its own marker (the
    search works) and never run N's: the job reaches only the run's fresh child of the
    zygote, which never held another job."""
    secret, control = uuid.uuid4().hex, uuid.uuid4().hex
    plant_program = f"def f(x):\n    # SECRET_MARK_{secret}\n    return x + 1\n"
    plant_test = f"def check(candidate):\n    assert candidate(1) == 2, 'SECRET_MARK_{secret}'\n"
    look_test = (
        "def check(candidate):\n"
        f"    marker = 'SECRET_MARK_{control}'\n"
        "    found = candidate(None)\n"
        f"    assert found == {sorted([hashlib.sha256(control.encode()).hexdigest()])!r}, found\n"
    )
    result = one_after_the_other(solo, plant_program, SEARCH, plant_test=plant_test, look_test=look_test)
    assert result.status is Status.PASSED, f"{describe(result)}; found: {[t.message for t in result.tests]}"
    assert hashlib.sha256(secret.encode()).hexdigest() not in result.stdout.text, result.stdout.text
