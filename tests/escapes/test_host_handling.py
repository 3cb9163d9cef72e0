"""Host-side handling of what the container controls (DESIGN.md, attack class D: the
Judge0 CVE-2024-28185/28189 class, where the host followed a symlink the submission
planted in its sandbox directory and wrote through it as root).

Here the host never opens anything inside a container: it reads only the agent's JSON
frames over the attached stdio, and the agent (not root, on a read-only root) scrubs
scratch itself. These tests plant everything a host-side reader could trip over and then
check *on the host* that nothing outside the container changed: a canary file in a host
temporary directory (which the candidate names through symlinks), the host's /tmp and
working directory (no entry named by the candidate appears), /etc/passwd; that the agent
removed it all (the container is kept and the next runs are pristine); and that odd
request contents (NUL bytes, path-like entry points, the largest program, odd ids) are
refused with INVALID_ARGUMENT or handled as plain data.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator

import grpc
import pytest

from sandbox.client import NO_RETRY, Client
from sandbox.convert import MAX_SOURCE_BYTES
from sandbox.domain import ExecuteRequest, Status, TestStatus
from tests.conftest import CHECK_F, Sandbox, assert_pristine, describe, he_request

pytestmark = pytest.mark.escape


def refusal(box: Sandbox, request: ExecuteRequest) -> grpc.RpcError:
    """The error the server answers ``request`` with (the test fails if it runs it)."""
    with Client(box.server.target, retry=NO_RETRY) as client:
        try:
            result = client.execute(request, timeout_s=60.0)
        except grpc.RpcError as exc:
            return exc
    raise AssertionError(f"the request was run instead of refused: {describe(result)}")


def kept_and_pristine(box: Sandbox, before: set[str]) -> None:
    """The pool holds the same containers as ``before`` (none replaced, none stray) and
    every one is pristine, from inside and (runc) from the host."""
    after = box.settle()
    assert after == before, f"the pool changed: before {sorted(before)}, after {sorted(after)}"
    if box.runtime == "runc":
        processes = box.host_processes()
        assert all(len(p) == 2 for p in processes.values()), f"docker top of the pool: {processes}"
    assert_pristine(box.probe_all())


def entries_named(directory: str, token: str) -> list[str]:
    """Entries of ``directory`` (not recursive) whose name contains ``token``."""
    try:
        return [name for name in os.listdir(directory) if token in name]
    except FileNotFoundError:
        return []


@pytest.fixture
def canary() -> Iterator[str]:
    """A file in a fresh host temporary directory that nothing may touch."""
    directory = tempfile.mkdtemp(prefix="sandbox-canary-")
    path = os.path.join(directory, "canary.txt")
    with open(path, "w") as f:
        f.write("untouched\n")
    try:
        yield path
    finally:
        shutil.rmtree(directory)


# ------------------------------------------------------------------ planted entries

PLANT = r'''
import os

TOKEN = TOKEN_VALUE
CANARY = CANARY_PATH

def _plant(top):
    links = {
        "passwd": "/etc/passwd", "root": "/proc/self/root", "up": "../../..", "canary": CANARY,
        "canary-dir": os.path.dirname(CANARY), "host-tmp": "/tmp/../../../tmp", "agent-stdout": "/proc/1/fd/1",
        "agent-root": "/proc/1/root", "docker.sock": "/var/run/docker.sock", "loop": f"{TOKEN}-loop",
        "dangling": "/nonexistent/" + TOKEN,
    }
    for name, target in links.items():
        os.symlink(target, os.path.join(top, f"{TOKEN}-{name}"))
    # Names a host-side collector might read, as links and FIFOs.
    for name in ("result.json", "stdout", "stderr", "records", "output.txt"):
        os.symlink("/etc/passwd", os.path.join(top, f"{name}"))
        os.mkfifo(os.path.join(top, f"{name}.{TOKEN}.fifo"))
    odd = [f"{TOKEN}\nnewline", f"{TOKEN}-\u00e9\u4e2d\U0001f600\u202e", f"..{TOKEN}..", f"{TOKEN} -rf *",
           f"{TOKEN}\\..\\..\\x", f"-{TOKEN}", f"{TOKEN}\t\r\x1b[2J", TOKEN + "x" * (255 - len(TOKEN))]
    for name in odd:
        with open(os.path.join(top, name), "w") as fh:
            fh.write("odd")
    with open(os.path.join(os.fsencode(top), os.fsencode(TOKEN) + b"-\xff\xfe-not-utf8"), "w") as fh:
        fh.write("odd")
    deep = os.path.join(top, f"{TOKEN}-deep")
    for _ in range(40):
        deep = os.path.join(deep, "d" * 60)
    os.makedirs(deep)
    with open(os.path.join(top, f"{TOKEN}-sparse"), "wb") as fh:
        fh.truncate(15 * 1024 * 1024)
    os.link(os.path.join(top, f"{TOKEN}-sparse"), os.path.join(top, f"{TOKEN}-hardlink"))

def f(x):
    for top in (os.getcwd(), "/tmp", "/dev/shm"):
        _plant(top)
    with open(f"{TOKEN}-dense", "wb") as fh:
        fh.write(os.urandom(8 * 1024 * 1024))
    wrote = []
    for path in (f"/tmp/{TOKEN}-canary", f"/tmp/{TOKEN}-canary-dir/{TOKEN}-new", CANARY,
                 os.path.join(os.path.dirname(CANARY), f"{TOKEN}-new")):
        try:
            with open(path, "a") as fh:
                fh.write("PWNED")
        except OSError:
            continue
        wrote.append(path)
    # Output a host-side reader must take as data: not UTF-8, NUL, terminal escapes, a fake frame.
    os.write(1, b"\xff\xfe\x00\x1b]0;owned\x07\x1b[2J\x00\x00\x00\x10{\"op\":\"result\"}\n")
    os.write(2, os.fsencode(f"{TOKEN}\n") + b"\xed\xa0\x80\n")
    return x + 1 if not wrote else wrote
'''


# f returns the paths it could write through its links instead of the right answer.
SHOW_WRITES = "def check(candidate):\n    got = candidate(1)\n    assert got == 2, got\n"


def test_planted_links_fifos_and_odd_names_are_never_followed(box: Sandbox, canary: str) -> None:
    """The candidate plants, in its scratch directory, /tmp and /dev/shm: symlinks to
    /etc/passwd, /proc/self/root, ../../.., /proc/1/fd/1, the Docker socket and to a
    canary file and directory *on the host* (their host paths), result-like names
    (result.json, stdout, records) as links and FIFOs, names with newlines, terminal
    escapes, RTL marks, invalid UTF-8 and ``..``, a 255-byte name, a 40-deep tree, a
    15 MiB sparse file with a hard link and an 8 MiB dense one; it writes through the
    canary links and prints non-UTF-8 bytes, NUL and a fake frame. The run PASSES (the
    links lead nowhere on the host), its output arrives as replaced text, and on the
    host: the canary is untouched, nothing new is in its directory, in /tmp or in the
    server's working directory, /etc/passwd is unchanged; the agent scrubbed it all, so
    the container is kept and the next runs are pristine."""
    token = f"plant{uuid.uuid4().hex[:10]}"
    canary_dir = os.path.dirname(canary)
    canary_stat = os.stat(canary)
    passwd_stat = os.stat("/etc/passwd")
    host_tmp = set(os.listdir("/tmp"))
    program = PLANT.replace("TOKEN_VALUE", repr(token)).replace("CANARY_PATH", repr(canary))
    before = box.settle()
    result, _ = box.run_once(he_request(program, SHOW_WRITES, timeout_s=20.0))
    assert result.status is Status.PASSED, f"{describe(result)}; {[t.message for t in result.tests]}"
    assert "\ufffd" in result.stdout.text and "\x00" in result.stdout.text, describe(result)
    assert token in result.stderr.text, describe(result)

    with open(canary) as f:
        assert f.read() == "untouched\n"
    now = os.stat(canary)
    assert (now.st_ino, now.st_size, now.st_mtime_ns) == (canary_stat.st_ino, canary_stat.st_size,
                                                          canary_stat.st_mtime_ns)
    assert os.listdir(canary_dir) == ["canary.txt"], os.listdir(canary_dir)
    assert os.stat("/etc/passwd").st_mtime_ns == passwd_stat.st_mtime_ns
    assert not entries_named("/tmp", token), entries_named("/tmp", token)
    assert not [n for n in set(os.listdir("/tmp")) - host_tmp if n in ("result.json", "stdout", "records")]
    assert not entries_named(os.getcwd(), token), entries_named(os.getcwd(), token)
    kept_and_pristine(box, before)
    assert not [p for r in box.probe_all() for p in r["files"] if token in p]


# ------------------------------------------------------------------ request contents

def _humaneval(program: str = "def f(x):\n    return x + 1\n", test: str = CHECK_F, entry_point: str = "f",
               request_id: str = "") -> ExecuteRequest:
    return he_request(program, test, entry_point, timeout_s=5.0, request_id=request_id)


_HEAD = "def f(x):\n    return x + 1\n#"


REFUSED = {
    "nul-in-program": (_humaneval(program="def f(x):\n    return x + 1\n# \x00 hidden\n"), "program"),
    "nul-in-test": (_humaneval(test=CHECK_F + "# \x00\n"), "humaneval.test"),
    "entry-point-path": (_humaneval(entry_point="../../etc/passwd"), "entry_point"),
    "entry-point-code": (_humaneval(entry_point="f)\nimport os\nos.system('id')\n#"), "entry_point"),
    "entry-point-expression": (_humaneval(entry_point="__import__('os').system"), "entry_point"),
    "entry-point-keyword": (_humaneval(entry_point="import"), "entry_point"),
    "entry-point-empty": (_humaneval(entry_point=""), "entry_point"),
    "program-over-4-mib": (
        _humaneval(program=_HEAD + "x" * (MAX_SOURCE_BYTES - len(_HEAD)) + "\n"),
        "program",
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_bad_request_contents_are_invalid_argument(sandbox: Sandbox, case: str) -> None:
    """A program or test with a NUL byte (which Python source cannot hold), an entry
    point that is a path, code, an expression, a keyword or empty, and a program one
    byte over 4 MiB are refused with INVALID_ARGUMENT and a message naming the field;
    nothing reaches a container (the pool is the same, every container pristine).
    Validation is the servicer's, the same for both runtimes, so runc alone is used."""
    request, field = REFUSED[case]
    before = sandbox.settle()
    error = refusal(sandbox, request)
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, f"{error.code()}: {error.details()}"
    assert field in (error.details() or ""), error.details()
    if case == "program-over-4-mib":
        assert str(MAX_SOURCE_BYTES) in (error.details() or ""), error.details()
    kept_and_pristine(sandbox, before)


def test_a_program_of_exactly_4_mib_is_run(box: Sandbox) -> None:
    """A program of exactly the largest accepted size (4 MiB: a right f and a comment)
    is carried into the container and judged like any other: PASSED, the container
    kept."""
    program = _HEAD + "x" * (MAX_SOURCE_BYTES - len(_HEAD) - 1) + "\n"
    assert len(program.encode()) == MAX_SOURCE_BYTES
    before = box.settle()
    result, _ = box.run_once(he_request(program, timeout_s=20.0))
    assert result.status is Status.PASSED, describe(result)
    assert [t.status for t in result.tests] == [TestStatus.PASSED]
    kept_and_pristine(box, before)


def test_odd_request_ids_are_only_keys(box: Sandbox) -> None:
    """A request id shaped like a path with control characters, terminal escapes, an RTL
    mark and a NUL is only a key: the request runs (PASSED), and no file named after it
    appears on the host (its /tmp, the server's working directory) or in the container."""
    token = uuid.uuid4().hex[:10]
    request_id = f"../../../../tmp/{token}/..\\..\\\n\r\x1b[2J\u202e\x00{token}"
    before = box.settle()
    result, _ = box.run_once(_humaneval(request_id=request_id))
    assert result.status is Status.PASSED, describe(result)
    assert not entries_named("/tmp", token), entries_named("/tmp", token)
    assert not entries_named(os.getcwd(), token), entries_named(os.getcwd(), token)
    kept_and_pristine(box, before)
