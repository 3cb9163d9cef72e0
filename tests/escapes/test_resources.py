"""Resource exhaustion (DESIGN.md, attack class A): thread bombs, many processes, memory,
disk, /dev/shm, inodes, output floods, descriptors and huge files.

Each test runs one hostile program under runc and under runsc and checks the verdict, the
host-measured wall time, and what the run leaves behind: the pool back at its size with no
stray container, the run's container kept or replaced as the verdict requires, and every
container pristine seen from inside (a probe) and, under runc, from the host (``docker
top``).

Requests go through a client that never retries: a ``sandbox_error`` must show up as it
is, not be hidden (or multiplied, since the server retries an agent loss once itself)
by client retries.

The fork bomb is in ``test_basic_escapes.py``.
"""

from __future__ import annotations

import ast
import threading

import pytest

from sandbox.domain import RunResult, Status, TestStatus
from sandbox.limits import Limits
from tests.conftest import (
    Sandbox,
    describe,
    he_request,
    host_state_is_clean,
    known_bug,
    mem_available_bytes,
)

pytestmark = pytest.mark.escape

MIB = 1024 * 1024
# What the agent keeps of each output stream (sandbox/agent/agent.py, _CAPTURE_BYTES).
CAPTURE_BYTES = 64 * 1024


def stdout_value(result: RunResult, tag: str) -> str:
    """The text after ``tag`` on the line of stdout that starts with it."""
    line = next((ln for ln in result.stdout.text.splitlines() if ln.startswith(tag + " ")), None)
    assert line is not None, f"no {tag} line on stdout: {describe(result)}"
    return line[len(tag) + 1 :]


class HostMemory:
    """Samples the host's MemAvailable in the background while a run is in flight."""

    def __init__(self) -> None:
        self.before = mem_available_bytes()
        self.lowest = self.before
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.lowest = min(self.lowest, mem_available_bytes())
            self._stop.wait(0.05)

    def __enter__(self) -> HostMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def drop_mib(self) -> float:
        return (self.before - self.lowest) / MIB


def server_rss_bytes() -> int:
    """VmRSS of this process, which hosts the embedded sandbox servers."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


# ----------------------------------------------------------------------------- threads

THREAD_BOMB = """
import _thread, threading, time

def f(x):
    # Small stacks, so that the address-space limit is not what stops the bomb first;
    # _thread directly, so that a thread dying of MemoryError cannot hang start().
    threading.stack_size(64 * 1024)
    started = 0
    try:
        while True:
            _thread.start_new_thread(time.sleep, (1000,))
            started += 1
    except (RuntimeError, MemoryError) as exc:
        print("THREADS", started, type(exc).__name__, flush=True)
    return x + 1
"""


def test_thread_bomb_is_capped(box: Sandbox, request: pytest.FixtureRequest) -> None:
    """Threads started until the system refuses (each sleeping forever) are capped: the
    program gets RuntimeError, carries on and PASSES long before its wall clock; the
    sleeping threads die with the run's process, so the container stays clean and is
    kept. Under runc the cap is the container's pids limit; under runsc (whose pids limit
    counts gVisor's host tasks, 512 by default) the address-space limit stops them first."""
    before = box.settle()
    result, elapsed = box.run_once(he_request(THREAD_BOMB, timeout_s=10.0))
    assert result.status is Status.PASSED, describe(result)
    assert elapsed < 5.0, f"the thread bomb held the run for {elapsed:.1f} s"
    started = int(stdout_value(result, "THREADS").split()[0])
    host_state_is_clean(box, before, recycled=False)
    assert started < box.settings.container_pids, (
        f"{started} threads started, the container's pids limit is {box.settings.container_pids}"
    )


MANY_PROCESSES = """
import os, time

def f(x):
    children = []
    for _ in range(50):
        pid = os.fork()
        if pid == 0:
            time.sleep(0.5)
            os._exit(0)
        children.append(pid)
    for pid in children:
        os.waitpid(pid, 0)
    return x + 1
"""


def test_fifty_processes_under_the_pids_limit_are_not_a_sandbox_error(
    box: Sandbox, request: pytest.FixtureRequest
) -> None:
    """Fifty child processes alive at once, well under the container's pids limit (128),
    are an ordinary program (multiprocessing does as much): the run PASSES and, its
    children all reaped, the container is kept."""
    assert 50 < box.settings.container_pids
    before = box.settle()
    result, elapsed = box.run_once(he_request(MANY_PROCESSES, timeout_s=10.0))
    assert result.status is Status.PASSED, describe(result)
    assert elapsed < 8.0, f"answered after {elapsed:.1f} s"
    host_state_is_clean(box, before, recycled=False)


# ------------------------------------------------------------------------------ memory

MEMORY_IN_ONE_PROCESS = """
import time

def f(x):
    hog = []
    while True:
        hog.append(bytearray(16 * 1024 * 1024))
        time.sleep(0.005)
"""


def test_memory_growth_in_one_process_is_memory_limit(box: Sandbox) -> None:
    """A program that grows 16 MiB at a time without end is stopped at its memory limit
    (RLIMIT_AS of the run): MEMORY_LIMIT, well before its wall clock, without the host
    losing more than the run's limit; the container is replaced (a run that hit a limit
    never leaves its container in the pool)."""
    limit_mb = 256
    before = box.settle()
    with HostMemory() as host:
        result, elapsed = box.run_once(he_request(MEMORY_IN_ONE_PROCESS, timeout_s=8.0, memory_mb=limit_mb))
    assert result.status is Status.MEMORY_LIMIT, describe(result)
    assert elapsed < 6.0, f"answered after {elapsed:.1f} s"
    # Other suites share this host, so the bound has slack; a missing limit would let the
    # program take several GiB in the 8 s it had.
    assert host.drop_mib < limit_mb + 1024, f"host MemAvailable dropped by {host.drop_mib:.0f} MiB"
    host_state_is_clean(box, before, recycled=True)


MEMORY_TO_THE_CONTAINER_LIMIT = """
import os, time

def _grow(mib):
    hog = []
    for _ in range(mib // 16):
        hog.append(bytearray(16 * 1024 * 1024))
        time.sleep(0.01)
    time.sleep(1000)

def f(x):
    # Each process stays under the run's address-space limit, together they want ~3.5 GiB,
    # several times the container's memory; the main process keeps growing until it is
    # the biggest, so the kernel's OOM killer (not RLIMIT_AS) is what stops the run.
    for _ in range(6):
        if os.fork() == 0:
            try:
                _grow(400)
            finally:
                os._exit(0)
    time.sleep(0.5)
    hog = []
    while True:
        hog.append(bytearray(16 * 1024 * 1024))
        time.sleep(0.01)
"""


def test_memory_growth_to_the_container_limit_is_memory_limit(box: Sandbox, request: pytest.FixtureRequest) -> None:
    """Several processes that grow together far past the container's memory (each under
    the run's own limit) meet the container's cgroup limit: the OOM killer stops the run,
    the agent sees its counter move, and the verdict is MEMORY_LIMIT (not TIMEOUT);
    the host never loses much more than the container's limit; the container is replaced
    and no process of the run survives."""
    known_bug(request, box, "runsc",
              "under runsc, reaching the container's memory limit kills the whole gVisor sandbox (agent "
              "included): the run is answered SANDBOX_ERROR ('the agent's stream ended (container gone)') "
              "instead of MEMORY_LIMIT, and the scheduler's retry of a lost agent runs the same program on a "
              "second container, which dies too")
    before = box.settle()
    with HostMemory() as host:
        # Generous: near the limit the cgroup reclaims page cache before it kills, which
        # takes seconds on a loaded 2-core host. A run that reaches it is TIMEOUT, not this.
        result, _ = box.run_once(he_request(MEMORY_TO_THE_CONTAINER_LIMIT, timeout_s=20.0))
    assert result.status is Status.MEMORY_LIMIT, describe(result)
    assert "killed by the memory limit" in result.message, describe(result)
    bound = box.settings.container_memory_mb + 1024
    assert host.drop_mib < bound, f"host MemAvailable dropped by {host.drop_mib:.0f} MiB (bound {bound} MiB)"
    host_state_is_clean(box, before, recycled=True)


# -------------------------------------------------------------------------------- disk

DISK_FILL = """
import errno, os

def _fill(top):
    chunk = b"\\0" * (1024 * 1024)
    written, i = 0, 0
    while True:
        path = os.path.join(top, f"fill-{i}")
        i += 1
        try:
            with open(path, "wb", buffering=0) as fh:
                for _ in range(8):
                    fh.write(chunk)
                    written += len(chunk)
        except OSError as exc:
            return written, errno.errorcode.get(exc.errno, str(exc.errno))

def f(x):
    report = {}
    for top in ("/tmp", os.getcwd(), "/dev/shm"):
        written, err = _fill(top)
        st = os.statvfs(top)
        report[top] = [written, err, st.f_blocks * st.f_frsize]
    print("FILL", report, flush=True)
    return x + 1
"""


def test_filling_scratch_and_shm_hits_the_tmpfs_caps(box: Sandbox) -> None:
    """Writing /tmp, the run's scratch directory and /dev/shm full stops at each tmpfs's
    size (ENOSPC; scratch shares /tmp's cap), the program goes on and PASSES; the agent
    empties both before the container serves again, so the container is kept and the next
    run in every container sees empty scratch."""
    before = box.settle()
    result, _ = box.run_once(he_request(DISK_FILL, timeout_s=10.0))
    assert result.status is Status.PASSED, describe(result)
    report = ast.literal_eval(stdout_value(result, "FILL"))
    scratch, shm = box.settings.scratch_mb * MIB, box.settings.shm_mb * MIB
    tmp_written, tmp_err, tmp_size = report["/tmp"]
    assert tmp_err == "ENOSPC" and tmp_size == scratch and tmp_written <= scratch, report
    cwd_written, cwd_err, _ = next(v for k, v in report.items() if k.startswith("/tmp/"))
    assert cwd_err == "ENOSPC" and cwd_written == 0, f"scratch has room beyond /tmp's cap: {report}"
    shm_written, shm_err, shm_size = report["/dev/shm"]
    assert shm_err == "ENOSPC" and shm_size == shm and shm_written <= shm, report
    host_state_is_clean(box, before, recycled=False)


INODE_FLOOD = """
import os, time

def f(x):
    made = 0
    deadline = time.monotonic() + 1.0
    for top in ("/tmp/flood-a", "/dev/shm/flood-b"):
        os.mkdir(top)
    while time.monotonic() < deadline:
        for top in ("/tmp/flood-a", "/dev/shm/flood-b"):
            for _ in range(200):
                os.close(os.open(f"{top}/{made}", os.O_CREAT | os.O_WRONLY, 0o600))
                made += 1
    print("FILES", made, flush=True)
    return x + 1
"""


def test_inode_flood_is_scrubbed(box: Sandbox) -> None:
    """Tens of thousands of empty files (no blocks, only inodes) in /tmp and /dev/shm do
    not change the verdict (PASSED) nor outlive the run: the agent removes them all before
    it reports, within the report grace, and the container serves on pristine."""
    before = box.settle()
    result, elapsed = box.run_once(he_request(INODE_FLOOD, timeout_s=5.0))
    assert result.status is Status.PASSED, describe(result)
    assert int(stdout_value(result, "FILES")) > 1000, describe(result)
    assert elapsed < 5.0 + 5.0, f"answered after {elapsed:.1f} s"
    host_state_is_clean(box, before, recycled=False)


# ------------------------------------------------------------------------------ output

OUTPUT_FLOOD = {
    "stdout": """
import sys

def f(x):
    line = "A" * 1023 + "\\n"
    while True:
        sys.stdout.write(line * 64)
""",
    "stderr": """
import os

def f(x):
    block = b"\\xff\\xfe not utf-8 \\x00\\x1b[2J" * 4096
    while True:
        os.write(2, block)
""",
}


@pytest.mark.parametrize("stream", sorted(OUTPUT_FLOOD))
def test_output_flood_is_output_limit(box: Sandbox, stream: str) -> None:
    """A program that writes without end (text to stdout, or bytes that are not UTF-8 to
    stderr) is stopped as soon as the two streams together pass the request's
    output limit: OUTPUT_LIMIT within a second, the capture truncated to a few KiB per
    stream, the server's own memory unaffected; the container is replaced."""
    limit = 2 * MIB
    before = box.settle()
    rss_before = server_rss_bytes()
    result, elapsed = box.run_once(he_request(OUTPUT_FLOOD[stream], timeout_s=10.0, max_output_bytes=limit))
    assert result.status is Status.OUTPUT_LIMIT, describe(result)
    assert elapsed < 3.0, f"answered after {elapsed:.1f} s"
    total = result.stdout.total_bytes + result.stderr.total_bytes
    assert total > limit, f"stopped after {total} bytes, the limit is {limit}"
    flooded = getattr(result, stream)
    assert flooded.truncated, describe(result)
    assert len(flooded.text.encode("utf-8")) <= 4 * CAPTURE_BYTES, len(flooded.text)
    assert server_rss_bytes() - rss_before < 64 * MIB, "the server's memory grew with the flood"
    host_state_is_clean(box, before, recycled=True)


# ------------------------------------------------------------------ descriptors, files

FD_EXHAUSTION = """
import errno, os, resource, socket

def f(x):
    held, err = [], None
    try:
        while True:
            r, w = os.pipe()
            held += [r, w]
            held.append(socket.socket().detach())
    except OSError as exc:
        err = errno.errorcode.get(exc.errno)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard * 16, hard * 16))
        raised = True
    except (ValueError, OSError):
        raised = False
    print("FDS", len(held), max(held), err, soft, hard, raised, flush=True)
    for fd in held:
        os.close(fd)
    return x + 1
"""


def test_descriptor_exhaustion_stops_at_the_run_limit(box: Sandbox) -> None:
    """Opening pipes and sockets until the system refuses stops at the run's
    RLIMIT_NOFILE (EMFILE, no descriptor numbered at or above it) and the limit cannot be
    raised; the program goes on and PASSES, and the container (agent untouched) is kept."""
    before = box.settle()
    result, _ = box.run_once(he_request(FD_EXHAUSTION, timeout_s=10.0))
    assert result.status is Status.PASSED, describe(result)
    count, highest, err, soft, hard, raised = stdout_value(result, "FDS").split()
    limit = Limits().open_files
    assert err == "EMFILE", describe(result)
    assert int(soft) == int(hard) == limit, describe(result)
    assert int(highest) < limit and int(count) <= limit - 4, describe(result)
    assert raised == "False", "the candidate raised its own RLIMIT_NOFILE"
    host_state_is_clean(box, before, recycled=False)


HUGE_FILE = """
import errno, os, signal

def f(x):
    if DEFAULT_ACTION:
        signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
    written, err = 0, None
    try:
        with open("huge", "wb", buffering=0) as fh:
            chunk = b"x" * (1024 * 1024)
            while written < 256 * 1024 * 1024:
                fh.write(chunk)
                written += len(chunk)
    except OSError as exc:
        err = errno.errorcode.get(exc.errno)
    print("FILE", written, os.path.getsize("huge"), err, flush=True)
    return x + 1
"""


@pytest.mark.parametrize("default_action", [False, True], ids=["sigxfsz-ignored", "sigxfsz-default"])
def test_huge_file_stops_at_the_file_size_limit(box: Sandbox, default_action: bool) -> None:
    """One file written towards 256 MiB stops at the run's RLIMIT_FSIZE: with SIGXFSZ
    ignored (Python's default) the write fails with EFBIG at exactly the limit and the
    program PASSES; with SIGXFSZ's default action restored the kernel kills the run
    (EARLY_EXIT, killed by SIGXFSZ). Either way the file is scrubbed and the container
    kept."""
    before = box.settle()
    program = HUGE_FILE.replace("DEFAULT_ACTION", repr(default_action))
    result, _ = box.run_once(he_request(program, timeout_s=10.0))
    limit = Limits().file_size_mb * MIB
    if default_action:
        assert result.status is Status.EARLY_EXIT, describe(result)
        assert "SIGXFSZ" in result.message, describe(result)
    else:
        assert result.status is Status.PASSED, describe(result)
        assert [t.status for t in result.tests] == [TestStatus.PASSED]
        written, size, err = stdout_value(result, "FILE").split()
        assert (int(written), int(size), err) == (limit, limit, "EFBIG"), describe(result)
    host_state_is_clean(box, before, recycled=False)
