"""Time and process lifetime (DESIGN.md, attack class B): sleeping and spinning past the
wall clock, ignored termination signals, threads that outlive the tests, pipes held open
by a background child, zombies, ptrace of the agent and the zygote, and a daemon that
tries to outlive its run.

Each test runs one hostile program under runc and under runsc; wall times are measured
on the host, around the gRPC call. After each run: the pool is back at its size with no
stray container, the run's container was kept or replaced as the behaviour requires, and
every container is pristine, seen from inside (a probe) and, under runc, from the host
(``docker top`` and the host's process table, where a runc container's processes live).

The double-fork orphan that holds the run's pipes, kill(1, SIGKILL) and PTRACE_ATTACH of
PID 1 are in ``test_basic_escapes.py``.
"""

from __future__ import annotations

import os
import uuid

import pytest

from sandbox.domain import Status, TestStatus
from tests.conftest import Sandbox, describe, he_request, host_state_is_clean

pytestmark = pytest.mark.escape


def host_processes_named(comm: str) -> list[str]:
    """Host processes whose name (``/proc/PID/comm``, set in the container with
    PR_SET_NAME) is ``comm``: a runc container's processes are in the host's table."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/comm") as f:
                name = f.read().strip()
        except OSError:
            continue
        if name == comm:
            found.append(pid)
    return found


def process_marker() -> str:
    """A process name (at most 15 characters) no other process on the host has."""
    return "esc" + uuid.uuid4().hex[:12]


# Sets the calling process's name (what /proc/PID/comm and the host's ps show).
SET_NAME = """
import ctypes

def _set_name(name):
    ctypes.CDLL(None).prctl(15, name.encode(), 0, 0, 0)  # PR_SET_NAME
"""


# ------------------------------------------------------------------------ wall clock

WAIT_FOREVER = {
    "sleep": """
import time

def f(x):
    time.sleep(1000)
""",
    "busy": """
def f(x):
    n = 0
    while True:
        n += 1
""",
    "busy-in-c": """
import re

def f(x):
    # Catastrophic backtracking: the loop runs inside the C regex engine, never
    # returning to the interpreter (no Python-level signal handler could run).
    re.match(r"(a+)+$", "a" * 64 + "b")
""",
}


@pytest.mark.parametrize("how", sorted(WAIT_FOREVER))
def test_wall_clock_limit_holds_for_sleep_and_cpu(box: Sandbox, how: str) -> None:
    """A program that sleeps, spins in the interpreter, or spins inside C code with no
    return to the interpreter is stopped at its wall clock: TIMEOUT, answered between the
    limit and the limit + 1 s measured on the host; the container is replaced."""
    timeout = 2.0
    before = box.settle()
    result, elapsed = box.run_once(he_request(WAIT_FOREVER[how], timeout_s=timeout))
    assert result.status is Status.TIMEOUT, describe(result)
    assert timeout - 0.05 <= elapsed <= timeout + 1.0, f"answered after {elapsed:.2f} s (limit {timeout} s)"
    host_state_is_clean(box, before, recycled=True)


IGNORE_SIGNALS = """
import signal

def f(x):
    catchable = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
                 signal.SIGUSR2, signal.SIGALRM, signal.SIGXCPU, signal.SIGPIPE, signal.SIGCONT)
    for sig in catchable:
        signal.signal(sig, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_BLOCK, set(catchable) | {signal.SIGTSTP, signal.SIGTTIN})
    while True:
        try:
            while True:
                pass
        except BaseException:  # KeyboardInterrupt and anything else a handler could raise
            continue
"""


def test_ignored_termination_signals_do_not_extend_the_run(box: Sandbox) -> None:
    """A program that ignores and blocks every catchable termination signal (SIGTERM,
    SIGINT, SIGHUP, SIGXCPU, ...) and swallows every exception while it spins is still
    stopped at its wall clock: TIMEOUT within the limit + 1 s; the container is replaced."""
    timeout = 2.0
    before = box.settle()
    result, elapsed = box.run_once(he_request(IGNORE_SIGNALS, timeout_s=timeout))
    assert result.status is Status.TIMEOUT, describe(result)
    assert elapsed <= timeout + 1.0, f"answered after {elapsed:.2f} s (limit {timeout} s)"
    host_state_is_clean(box, before, recycled=True)


# --------------------------------------------------------------------------- threads

OUTLIVING_THREADS = """
import os, threading, time

def _spin():
    while True:
        pass

def _late():
    time.sleep(0.5)
    while True:
        os.write(1, b"LATE\\n")
        time.sleep(0.05)

def f(x):
    for _ in range(3):
        threading.Thread(target=_spin).start()  # not daemons: they would hold exit()
    threading.Thread(target=_late).start()
    threading.Thread(target=time.sleep, args=(1000,), daemon=True).start()
    return x + 1
"""


def test_threads_that_outlive_the_tests_do_not_hold_the_run(box: Sandbox) -> None:
    """Non-daemon threads that spin forever, one that starts printing after the tests,
    and a sleeping daemon thread neither change the verdict (PASSED, f is right) nor keep
    the run alive: it is answered long before its wall clock, nothing printed late is
    captured, and since threads die with their process the container stays clean and is
    kept."""
    before = box.settle()
    result, elapsed = box.run_once(he_request(OUTLIVING_THREADS, timeout_s=10.0))
    assert result.status is Status.PASSED, describe(result)
    assert [t.status for t in result.tests] == [TestStatus.PASSED]
    assert elapsed < 3.0, f"the threads held the run for {elapsed:.1f} s"
    assert "LATE" not in result.stdout.text, describe(result)
    host_state_is_clean(box, before, recycled=False)


# --------------------------------------------------------------------------- processes

PIPE_HOLDER = SET_NAME + """
import os, time

def f(x):
    if os.fork() == 0:
        # Same session and process group as the run; keeps stdout, stderr and the
        # record descriptor open and busy.
        _set_name(MARKER)
        while True:
            os.write(1, b"still here\\n")
            os.write(2, b"still here\\n")
            time.sleep(0.1)
    return x + 1
"""


def test_pipes_held_open_by_a_background_child_do_not_hold_the_run(box: Sandbox) -> None:
    """A child that keeps the run's stdout, stderr and record pipes open (and writing)
    after the run's process returned does not hold the answer: PASSED (f is right) long
    before the wall clock; the child is killed, the container is replaced for the
    leftover process, and (runc) no process of that name remains on the host."""
    marker = process_marker()
    before = box.settle()
    result, elapsed = box.run_once(he_request(PIPE_HOLDER.replace("MARKER", repr(marker)), timeout_s=10.0))
    assert result.status is Status.PASSED, describe(result)
    assert elapsed < 5.0, f"the held pipes kept the run for {elapsed:.1f} s"
    host_state_is_clean(box, before, recycled=True)
    assert not host_processes_named(marker), f"{marker} still runs on the host: {host_processes_named(marker)}"


DAEMON = SET_NAME + """
import os, time

def f(x):
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            # A proper daemon: new session, no controlling anything, no descriptor of the
            # run (so no pipe tells the agent it is alive), cwd outside scratch.
            _set_name(MARKER)
            os.chdir("/")
            devnull = os.open("/dev/null", os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(devnull, fd)
            os.closerange(3, 1024)
            while True:
                time.sleep(0.05)
        os._exit(0)
    os.wait()
    time.sleep(0.2)
    return x + 1
"""


def test_setsid_daemon_does_not_outlive_its_run(box: Sandbox) -> None:
    """A double-forked, setsid daemon that closes every descriptor of the run is found
    all the same (the agent looks at every process in the container, not at its pipes):
    the run PASSES (f is right) promptly, the daemon is killed, the container is replaced,
    the next run in every slot sees no process but the agent, the zygote and itself, and
    (runc) no process of that name remains on the host."""
    marker = process_marker()
    before = box.settle()
    result, elapsed = box.run_once(he_request(DAEMON.replace("MARKER", repr(marker)), timeout_s=10.0))
    assert result.status is Status.PASSED, describe(result)
    assert elapsed < 5.0, f"answered after {elapsed:.1f} s"
    host_state_is_clean(box, before, recycled=True)
    assert not host_processes_named(marker), f"{marker} still runs on the host: {host_processes_named(marker)}"


ZOMBIES = """
import os

def _state(pid):
    with open(f"/proc/{pid}/stat") as fh:
        stat = fh.read()
    return stat[stat.rfind(")") + 2]

def f(x):
    children = []
    for _ in range(16):
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        children.append(pid)
    for pid in children:
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)  # until it has exited, without reaping it
    # Never reaped: they stay zombies until the run's process is gone.
    print("ZOMBIES", sum(_state(pid) == "Z" for pid in children), flush=True)
    return x + 1
"""


def test_zombies_left_by_the_run_are_reaped(sandbox: Sandbox) -> None:
    """Sixteen children that exit and are never reaped stay zombies while the run lasts,
    then pass to PID 1 (the agent), which reaps them: the run PASSES, nothing is left
    over, the container is kept and every later run sees no process but the agent, the
    zygote and itself.

    runc only: under runsc any program with a dozen processes may kill its container
    (the pids limit counts gVisor's own host tasks, see
    test_resources.py::test_fifty_processes_under_the_pids_limit_are_not_a_sandbox_error),
    so the outcome there says nothing about zombies."""
    before = sandbox.settle()
    result, _ = sandbox.run_once(he_request(ZOMBIES, timeout_s=10.0))
    assert result.status is Status.PASSED, describe(result)
    zombies = next(ln for ln in result.stdout.text.splitlines() if ln.startswith("ZOMBIES "))
    assert zombies == "ZOMBIES 16", describe(result)
    host_state_is_clean(sandbox, before, recycled=False)


PTRACE = """
import ctypes, errno, os

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long

class _Iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]

def _err(rc):
    return "ALLOWED" if rc >= 0 else errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))

def f(x):
    outcome = {}
    buf = ctypes.create_string_buffer(64)
    local = _Iovec(ctypes.cast(buf, ctypes.c_void_p), 64)
    with open("/proc/self/maps") as maps:  # same image, so the same addresses are likely mapped
        address = int(maps.readline().split("-")[0], 16)
    remote = _Iovec(address, 64)
    for who, pid in (("agent", 1), ("zygote", os.getppid())):
        outcome[f"PTRACE_SEIZE {who}"] = _err(libc.ptrace(0x4206, pid, None, None))
        outcome[f"PTRACE_ATTACH {who}"] = _err(libc.ptrace(16, pid, None, None))
        outcome[f"process_vm_readv {who}"] = _err(
            libc.process_vm_readv(pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0))
        outcome[f"process_vm_writev {who}"] = _err(
            libc.process_vm_writev(pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0))
        pidfd = libc.syscall(434, pid, 0)  # pidfd_open: allowed, it grants nothing alone
        if pidfd >= 0:
            for fd in (0, 1, 2):
                # pidfd_getfd would hand over the agent's host channel (its stdout).
                outcome[f"pidfd_getfd {who} {fd}"] = _err(libc.syscall(438, pidfd, fd, 0))
            os.close(pidfd)
    granted = sorted(k for k, v in outcome.items() if v == "ALLOWED")
    print("PTRACE", outcome, flush=True)
    return [] if not granted else granted
"""


def test_ptrace_and_memory_access_to_the_agent_and_zygote_are_denied(box: Sandbox) -> None:
    """The candidate (same uid as the agent) cannot trace the agent or the zygote
    (PTRACE_SEIZE, PTRACE_ATTACH), read or write their memory (process_vm_readv/writev)
    nor take their descriptors (pidfd_getfd of the agent's stdout, the host channel): the
    program's f returns the list of what it was granted and the test wants it empty
    (PASSED); the agent and zygote serve on, so the container is kept."""
    before = box.settle()
    result, _ = box.run_once(he_request(PTRACE, "def check(candidate):\n    assert candidate(None) == []\n"))
    assert result.status is Status.PASSED, describe(result)
    host_state_is_clean(box, before, recycled=False)
