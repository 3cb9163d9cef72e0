"""The four non-HumanEval test-suite formats, run for real: asserts, io_cases (each
CompareMode), call_cases (host-side comparison with type checks) and test_module.

For each format a correct candidate passes, a wrong one fails with per-test results that
name the failing case, a crashing one is RUNTIME_ERROR and a never-ending one TIMEOUT.
Invalid suites are refused with INVALID_ARGUMENT naming the field. Candidates that should
fail differ from a correct one only in the behaviour under test, so a lax service would
pass them.
"""

from __future__ import annotations

import grpc
import pytest

from sandbox.client import Client
from sandbox.domain import (
    AssertTests,
    CallCase,
    CallTests,
    CompareMode,
    ExecuteRequest,
    IoCase,
    IoTests,
    ModuleTests,
    RunResult,
    Status,
    TestResult,
    TestStatus,
    TestSuite,
)
from sandbox.limits import Limits
from tests.conftest import Sandbox, describe

pytestmark = pytest.mark.integration

# The wall clock of runs that are meant to time out: short, so the suite stays fast.
SHORT_TIMEOUT_S = 1.5

INC = "def f(x):\n    return x + 1\n"
WRONG_INC = "def f(x):\n    return x + 1 if x < 2 else x\n"  # right for 1, wrong for 2 and up
CRASH_INC = "def f(x):\n    return x // 0\n"
LOOP_INC = "def f(x):\n    while True:\n        pass\n"


def run(sandbox: Sandbox, program: str, tests: TestSuite, timeout_s: float = 5.0) -> RunResult:
    """Runs one request with the given wall clock; returns its result."""
    result, _ = sandbox.run(ExecuteRequest(program=program, tests=tests, limits=Limits(timeout_s=timeout_s)))
    return result


def by_name(result: RunResult) -> dict[str, TestResult]:
    """The per-test results of ``result`` keyed by name."""
    return {t.name: t for t in result.tests}


def statuses(result: RunResult) -> list[tuple[str, TestStatus]]:
    """(name, status) of each test, in the order reported."""
    return [(t.name, t.status) for t in result.tests]


def refusal(client: Client, request: ExecuteRequest) -> grpc.RpcError:
    """The RpcError the server answers ``request`` with; fails the test if it ran."""
    with pytest.raises(grpc.RpcError) as info:
        client.execute(request, timeout_s=30.0)
    return info.value


# ---------------------------------------------------------------------------------- asserts

ASSERTS_INC = AssertTests(("assert f(1) == 2", "assert f(2) == 3", "assert f(3) == 4"))


def test_asserts_correct_candidate_passes(sandbox: Sandbox) -> None:
    """A correct program passes every assert; the tests are named assert:1..3, in order,
    and carry the source of their assert statement."""
    result = run(sandbox, INC, ASSERTS_INC)
    assert result.status is Status.PASSED, describe(result)
    assert statuses(result) == [(f"assert:{i}", TestStatus.PASSED) for i in (1, 2, 3)], describe(result)
    assert [t.source for t in result.tests] == list(ASSERTS_INC.asserts)
    assert result.tampering == ()


def test_asserts_wrong_candidate_fails_naming_the_failing_asserts(sandbox: Sandbox) -> None:
    """A program wrong for some inputs is FAILED; the asserts it gets wrong are FAILED by
    name and source, the ones it gets right PASSED, and a failure does not stop the rest."""
    result = run(sandbox, WRONG_INC, ASSERTS_INC)
    assert result.status is Status.FAILED, describe(result)
    assert statuses(result) == [
        ("assert:1", TestStatus.PASSED),
        ("assert:2", TestStatus.FAILED),
        ("assert:3", TestStatus.FAILED),
    ], describe(result)
    assert by_name(result)["assert:2"].source == "assert f(2) == 3"
    assert "AssertionError" in by_name(result)["assert:2"].traceback


def test_asserts_crashing_candidate_is_a_runtime_error(sandbox: Sandbox) -> None:
    """A function that raises is RUNTIME_ERROR, each assert that called it an ERROR whose
    message is the exception's."""
    result = run(sandbox, CRASH_INC, ASSERTS_INC)
    assert result.status is Status.RUNTIME_ERROR, describe(result)
    assert {t.status for t in result.tests} == {TestStatus.ERROR}, describe(result)
    assert "division" in result.tests[0].message, describe(result)


def test_asserts_program_that_crashes_at_import_is_a_runtime_error(sandbox: Sandbox) -> None:
    """A program that raises before the asserts run is RUNTIME_ERROR, and every assert
    is MISSING (none was evaluated)."""
    result = run(sandbox, INC + "raise ValueError('boom at import')\n", ASSERTS_INC)
    assert result.status is Status.RUNTIME_ERROR, describe(result)
    assert "boom at import" in result.message
    assert {t.status for t in result.tests} == {TestStatus.MISSING}, describe(result)


def test_asserts_never_ending_candidate_times_out(sandbox: Sandbox) -> None:
    """A function that never returns is TIMEOUT at the run's wall clock."""
    result = run(sandbox, LOOP_INC, ASSERTS_INC, timeout_s=SHORT_TIMEOUT_S)
    assert result.status is Status.TIMEOUT, describe(result)
    assert SHORT_TIMEOUT_S <= result.duration_s <= SHORT_TIMEOUT_S + 1.0, result.duration_s


def test_asserts_stop_at_first_failure_stops_there(sandbox: Sandbox) -> None:
    """With stop_at_first_failure the run ends at the first failing assert: the asserts
    after it are neither run nor reported (not even as MISSING)."""
    # The third assert would print if it ran.
    asserts = ASSERTS_INC.asserts[:2] + ("assert print('THIRD RAN') is None",)
    result = run(sandbox, WRONG_INC, AssertTests(asserts, stop_at_first_failure=True))
    assert result.status is Status.FAILED, describe(result)
    assert statuses(result) == [("assert:1", TestStatus.PASSED), ("assert:2", TestStatus.FAILED)], describe(result)
    assert "THIRD RAN" not in result.stdout.text


def test_asserts_share_the_programs_namespace(sandbox: Sandbox) -> None:
    """Each assert runs in the program's namespace after the program ran once, as MBPP
    does: module-level names are visible and module-level code ran exactly once."""
    program = "CALLS = []\nCALLS.append(1)\n" + INC
    suite = AssertTests(("assert CALLS == [1]", "assert f(CALLS[0]) == 2"))
    result = run(sandbox, program, suite)
    assert result.status is Status.PASSED, describe(result)


# --------------------------------------------------------------------------------- io_cases

SUM_PROGRAM = "a, b = map(int, input().split())\nprint(a + b)\n"
SUM_CASES = (IoCase("1 2\n", "3\n"), IoCase("10 20\n", "30\n"), IoCase("-5 5\n", "0\n"))


def test_io_correct_candidate_passes_exact(sandbox: Sandbox) -> None:
    """A correct whole program passes every case in EXACT mode; tests are case:1..3 and
    ``actual`` shows what it printed."""
    result = run(sandbox, SUM_PROGRAM, IoTests(SUM_CASES))
    assert result.status is Status.PASSED, describe(result)
    assert statuses(result) == [(f"case:{i}", TestStatus.PASSED) for i in (1, 2, 3)], describe(result)
    assert [t.actual for t in result.tests] == ["3\n", "30\n", "0\n"]


def test_io_wrong_candidate_fails_naming_the_failing_case(sandbox: Sandbox) -> None:
    """A program wrong on one case is FAILED; that case, by its given name, is FAILED with
    what was printed, the others PASSED."""
    program = "a, b = map(int, input().split())\nprint(a + b if a > 0 else a - b)\n"
    cases = (IoCase("1 2\n", "3\n", "small"), IoCase("-5 5\n", "0\n", "negative"), IoCase("2 2\n", "4\n", "even"))
    result = run(sandbox, program, IoTests(cases))
    assert result.status is Status.FAILED, describe(result)
    assert statuses(result) == [
        ("small", TestStatus.PASSED),
        ("negative", TestStatus.FAILED),
        ("even", TestStatus.PASSED),
    ], describe(result)
    assert by_name(result)["negative"].actual == "-10\n"


@pytest.mark.parametrize(
    ("printed", "expected", "mode", "tolerance", "passes"),
    [
        pytest.param("3\n", "3\n", CompareMode.EXACT, 0.0, True, id="exact-same"),
        pytest.param("3 \n", "3\n", CompareMode.EXACT, 0.0, False, id="exact-trailing-space"),
        pytest.param("3", "3\n", CompareMode.EXACT, 0.0, False, id="exact-missing-newline"),
        pytest.param("3  \n\n\n", "3\n", CompareMode.WHITESPACE, 0.0, True, id="ws-trailing-ignored"),
        pytest.param("1 2\r\n3\n", "1 2\n3", CompareMode.WHITESPACE, 0.0, True, id="ws-crlf-and-final-newline"),
        pytest.param("1  2\n", "1 2\n", CompareMode.WHITESPACE, 0.0, False, id="ws-inner-spaces-count"),
        pytest.param(" 3\n", "3\n", CompareMode.WHITESPACE, 0.0, False, id="ws-leading-space-counts"),
        pytest.param("0.3333333\n", "0.333333333333\n", CompareMode.FLOAT, 0.0, True, id="float-default-1e-6"),
        pytest.param("0.3334\n", "0.3333\n", CompareMode.FLOAT, 0.0, False, id="float-outside-default"),
        pytest.param("0.3334\n", "0.3333\n", CompareMode.FLOAT, 1e-3, True, id="float-custom-tolerance"),
        pytest.param("yes 1.0\n", "yes   1\n", CompareMode.FLOAT, 0.0, True, id="float-tokens-and-words"),
        pytest.param("no 1.0\n", "yes 1\n", CompareMode.FLOAT, 0.0, False, id="float-words-exact"),
        pytest.param("1.0 2.0\n", "1.0\n", CompareMode.FLOAT, 0.0, False, id="float-token-count"),
    ],
)
def test_io_compare_modes(
    sandbox: Sandbox, printed: str, expected: str, mode: CompareMode, tolerance: float, passes: bool
) -> None:
    """Each CompareMode as the proto documents it: EXACT compares the bytes; WHITESPACE
    ignores trailing whitespace per line and trailing blank lines only; FLOAT compares
    numeric tokens within the tolerance (1e-6 by default) and other tokens exactly."""
    program = f"import sys\nsys.stdout.write({printed!r})\n"
    result = run(sandbox, program, IoTests((IoCase("", expected),), compare=mode, float_tolerance=tolerance))
    want = Status.PASSED if passes else Status.FAILED
    assert result.status is want, describe(result)
    assert result.tests[0].actual == printed


def test_io_crashing_candidate_is_a_runtime_error(sandbox: Sandbox) -> None:
    """A program that raises on one case is RUNTIME_ERROR; that case is ERROR with its exit
    status, and the other cases still run and pass."""
    program = "n = int(input())\nprint(10 // n)\n"
    cases = (IoCase("5\n", "2\n"), IoCase("0\n", "0\n"), IoCase("2\n", "5\n"))
    result = run(sandbox, program, IoTests(cases))
    assert result.status is Status.RUNTIME_ERROR, describe(result)
    assert statuses(result) == [
        ("case:1", TestStatus.PASSED),
        ("case:2", TestStatus.ERROR),
        ("case:3", TestStatus.PASSED),
    ], describe(result)
    assert "status 1" in by_name(result)["case:2"].message
    assert "ZeroDivisionError" in result.stderr.text


def test_io_sys_exit_is_a_normal_ending(sandbox: Sandbox) -> None:
    """In io_cases sys.exit(0) after printing is how a program may end: the output is
    judged (PASSED here), while a non-zero exit status is an ERROR of that case."""
    ok = run(sandbox, "import sys\nprint(int(input()) * 2)\nsys.exit(0)\n", IoTests((IoCase("2\n", "4\n"),)))
    assert ok.status is Status.PASSED, describe(ok)
    bad = run(sandbox, "import sys\nprint(int(input()) * 2)\nsys.exit(3)\n", IoTests((IoCase("2\n", "4\n"),)))
    assert bad.status is Status.RUNTIME_ERROR, describe(bad)
    assert "status 3" in bad.tests[0].message


def test_io_never_ending_candidate_times_out(sandbox: Sandbox) -> None:
    """A program that never ends, with no case limit, is TIMEOUT at the run's wall clock."""
    result = run(sandbox, "while True:\n    pass\n", IoTests(SUM_CASES), timeout_s=SHORT_TIMEOUT_S)
    assert result.status is Status.TIMEOUT, describe(result)
    assert SHORT_TIMEOUT_S <= result.duration_s <= SHORT_TIMEOUT_S + 1.0, result.duration_s


def test_io_case_timeout_stops_one_case_and_the_run_goes_on(sandbox: Sandbox) -> None:
    """case_timeout_s stops only the case that exceeds it (TIMEOUT, with what it printed so
    far); the following cases still run and pass; the run is TIMEOUT, well before its own
    wall clock."""
    program = "import time\nn = int(input())\nprint(n, flush=True)\nif n == 2:\n    time.sleep(60)\n"
    cases = (IoCase("1\n", "1\n"), IoCase("2\n", "2\n"), IoCase("3\n", "3\n"))
    result = run(sandbox, program, IoTests(cases, case_timeout_s=0.5), timeout_s=10.0)
    assert result.status is Status.TIMEOUT, describe(result)
    assert statuses(result) == [
        ("case:1", TestStatus.PASSED),
        ("case:2", TestStatus.TIMEOUT),
        ("case:3", TestStatus.PASSED),
    ], describe(result)
    assert by_name(result)["case:2"].actual == "2\n"
    assert result.duration_s < 5.0, result.duration_s


def test_io_program_runs_fresh_in_each_case(sandbox: Sandbox) -> None:
    """The program is compiled once but *runs* once per case, each time in a fresh process
    forked from a harness that never executed it: a module-level side effect on
    interpreter state (a counter kept on ``sys``) is 1 in every case, never 2 or 3."""
    program = "import sys\nsys.runs = getattr(sys, 'runs', 0) + 1\nprint(sys.runs, input())\n"
    cases = tuple(IoCase(f"{i}\n", f"1 {i}\n") for i in (1, 2, 3))
    result = run(sandbox, program, IoTests(cases))
    assert result.status is Status.PASSED, describe(result)


def test_io_compile_error_is_reported_once(sandbox: Sandbox) -> None:
    """A program that does not compile is one COMPILE_ERROR for the run (the SyntaxError
    once, in the message), not one error per case: every case is MISSING and no case
    process ever started (nothing on stderr)."""
    result = run(sandbox, "print(int(input()) +\n", IoTests(SUM_CASES))
    assert result.status is Status.COMPILE_ERROR, describe(result)
    assert result.message.startswith("SyntaxError"), describe(result)
    assert {t.status for t in result.tests} == {TestStatus.MISSING}, describe(result)
    assert result.stderr.text == "", describe(result)
    assert result.human_eval_result.count("failed:") == 1


# ------------------------------------------------------------------------------- call_cases

INC_CASES = (CallCase("[1]", "2"), CallCase("[2]", "3"), CallCase("[3]", "4"))


def test_call_correct_candidate_passes(sandbox: Sandbox) -> None:
    """A correct function passes every case; tests are case:1..3 and ``actual`` is the
    repr of what it returned."""
    result = run(sandbox, INC, CallTests("f", INC_CASES))
    assert result.status is Status.PASSED, describe(result)
    assert statuses(result) == [(f"case:{i}", TestStatus.PASSED) for i in (1, 2, 3)], describe(result)
    assert [t.actual for t in result.tests] == ["2", "3", "4"]


def test_call_wrong_candidate_fails_naming_the_failing_case(sandbox: Sandbox) -> None:
    """A function wrong on some cases is FAILED; those cases (by their given names) say
    what was returned and what was expected, the others PASSED."""
    cases = (CallCase("[1]", "2", name="one"), CallCase("[2]", "3", name="two"), CallCase("[5]", "6", name="five"))
    result = run(sandbox, WRONG_INC, CallTests("f", cases))
    assert result.status is Status.FAILED, describe(result)
    assert statuses(result) == [
        ("one", TestStatus.PASSED),
        ("two", TestStatus.FAILED),
        ("five", TestStatus.FAILED),
    ], describe(result)
    assert by_name(result)["two"].message == "returned 2, expected 3"
    assert by_name(result)["five"].actual == "5"


def test_call_crashing_candidate_is_a_runtime_error(sandbox: Sandbox) -> None:
    """A function that raises is RUNTIME_ERROR; each case is ERROR with the exception's
    message and traceback."""
    result = run(sandbox, CRASH_INC, CallTests("f", INC_CASES))
    assert result.status is Status.RUNTIME_ERROR, describe(result)
    assert {t.status for t in result.tests} == {TestStatus.ERROR}, describe(result)
    assert "division" in result.tests[0].message
    assert "ZeroDivisionError" in result.tests[0].traceback


def test_call_missing_entry_point_is_a_runtime_error(sandbox: Sandbox) -> None:
    """A program that does not define the entry point is RUNTIME_ERROR naming it."""
    result = run(sandbox, "def g(x):\n    return x + 1\n", CallTests("f", INC_CASES))
    assert result.status is Status.RUNTIME_ERROR, describe(result)
    assert "'f'" in result.message, describe(result)


def test_call_never_ending_candidate_times_out(sandbox: Sandbox) -> None:
    """A function that never returns, with no case limit, is TIMEOUT at the wall clock."""
    result = run(sandbox, LOOP_INC, CallTests("f", INC_CASES), timeout_s=SHORT_TIMEOUT_S)
    assert result.status is Status.TIMEOUT, describe(result)
    assert SHORT_TIMEOUT_S <= result.duration_s <= SHORT_TIMEOUT_S + 1.0, result.duration_s


SLOW_ON_TWO = "import time\ndef f(x):\n    if x == 2:\n        time.sleep(60)\n    return x + 1\n"


def test_call_case_timeout_stops_one_case_and_the_run_goes_on(sandbox: Sandbox) -> None:
    """case_timeout_s stops only the case that exceeds it; the cases after it still run
    and pass, and the run ends long before its own wall clock; the run is not PASSED."""
    result = run(sandbox, SLOW_ON_TWO, CallTests("f", INC_CASES, case_timeout_s=0.5), timeout_s=10.0)
    assert result.status is not Status.PASSED, describe(result)
    assert by_name(result)["case:1"].status is TestStatus.PASSED, describe(result)
    assert by_name(result)["case:3"].status is TestStatus.PASSED, describe(result)
    assert by_name(result)["case:2"].status is not TestStatus.PASSED, describe(result)
    assert "0.5 s" in by_name(result)["case:2"].message, describe(result)
    assert result.duration_s < 5.0, result.duration_s


def test_call_case_over_its_limit_is_reported_as_timeout(sandbox: Sandbox) -> None:
    """A call case that exceeds case_timeout_s is TestStatus.TIMEOUT and the run TIMEOUT,
    as the proto documents and as io_cases report it."""
    result = run(sandbox, SLOW_ON_TWO, CallTests("f", INC_CASES, case_timeout_s=0.5), timeout_s=10.0)
    assert by_name(result)["case:2"].status is TestStatus.TIMEOUT, describe(result)
    assert result.status is Status.TIMEOUT, describe(result)


@pytest.mark.parametrize(
    ("body", "case", "tolerance", "passes"),
    [
        pytest.param("return 0.1 + 0.2", CallCase("[]", "0.3"), 1e-9, True, id="float-within-tolerance"),
        pytest.param("return 0.1 + 0.2", CallCase("[]", "0.3"), 0.0, False, id="float-exact-by-default"),
        pytest.param("return 1000.5", CallCase("[]", "1000"), 1e-3, True, id="float-relative-tolerance"),
        pytest.param("return 1.5", CallCase("[]", "1"), 1e-3, False, id="float-outside-tolerance"),
        pytest.param("return 2.0", CallCase("[]", "2"), 0.0, True, id="float-equals-int"),
        pytest.param("return [0.1 + 0.2, 1]", CallCase("[]", "[0.3, 1]"), 1e-9, True, id="float-nested"),
        pytest.param("return {3, 1, 2}", CallCase("[]", "[1, 2, 3]"), 0.0, True, id="set-any-order"),
        pytest.param("return {1, 2}", CallCase("[]", "[1, 2, 3]"), 0.0, False, id="set-missing-element"),
        pytest.param("return frozenset({'a'})", CallCase("[]", '["a"]'), 0.0, True, id="frozenset"),
        pytest.param("return (1, 2)", CallCase("[]", "[1, 2]"), 0.0, True, id="tuple-matches-array"),
        pytest.param("return (2, 1)", CallCase("[]", "[1, 2]"), 0.0, False, id="tuple-order-counts"),
        pytest.param("return [1, 2]", CallCase("[]", "[1, 2, 3]"), 0.0, False, id="list-length"),
        pytest.param("return {'a': [1]}", CallCase("[]", '{"a": [1]}'), 0.0, True, id="dict"),
        pytest.param("return None", CallCase("[]", "null"), 0.0, True, id="none"),
        pytest.param("return 0", CallCase("[]", "null"), 0.0, False, id="zero-is-not-none"),
        pytest.param("return 'abc'", CallCase("[]", '"abc"'), 0.0, True, id="str"),
        pytest.param("return 1", CallCase("[]", '"1"'), 0.0, False, id="int-is-not-str"),
        pytest.param("return True", CallCase("[]", "true"), 0.0, True, id="bool"),
        pytest.param("return 1", CallCase("[]", "true"), 0.0, False, id="int-is-not-bool"),
        pytest.param("return True", CallCase("[]", "1"), 0.0, False, id="bool-is-not-int"),
        pytest.param("return False", CallCase("[]", "0"), 0.0, False, id="false-is-not-zero"),
        pytest.param("return [True]", CallCase("[]", "[1]"), 0.0, False, id="bool-is-not-int-nested"),
    ],
)
def test_call_value_comparison(sandbox: Sandbox, body: str, case: CallCase, tolerance: float, passes: bool) -> None:
    """Return values are compared on the host with type checks: floats within the
    tolerance (absolute or relative; exact when 0), sets with arrays in any order,
    tuples with arrays in order, and bool never equal to int (in either direction)."""
    program = f"def f():\n    {body}\n"
    result = run(sandbox, program, CallTests("f", (case,), float_tolerance=tolerance))
    assert result.status is (Status.PASSED if passes else Status.FAILED), describe(result)


def test_call_kwargs_and_args(sandbox: Sandbox) -> None:
    """kwargs_json is passed as keyword arguments next to the positional args_json;
    defaults apply when a keyword is left out."""
    program = "def f(a, b=10, *, scale=1):\n    return (a + b) * scale\n"
    cases = (
        CallCase("[1]", "11"),
        CallCase("[1]", "4", kwargs_json='{"b": 3}'),
        CallCase("[1, 2]", "9", kwargs_json='{"scale": 3}'),
        CallCase("[]", "6", kwargs_json='{"a": 1, "b": 2, "scale": 2}'),
    )
    result = run(sandbox, program, CallTests("f", cases))
    assert result.status is Status.PASSED, describe(result)
    wrong = run(sandbox, program, CallTests("f", (CallCase("[1]", "11", kwargs_json='{"b": 3}'),)))
    assert wrong.status is Status.FAILED, describe(wrong)


def test_call_mutating_arguments_does_not_leak_between_cases(sandbox: Sandbox) -> None:
    """Each case decodes its own arguments: a function that mutates its argument does
    not change what the next case receives."""
    program = "def f(xs):\n    xs.append(0)\n    return len(xs)\n"
    cases = (CallCase("[[1, 2]]", "3"), CallCase("[[1, 2]]", "3"))
    result = run(sandbox, program, CallTests("f", cases))
    assert result.status is Status.PASSED, describe(result)


# ------------------------------------------------------------------------------ test_module

MODULE_TESTS = '''
import unittest
from solution import f


def test_small():
    assert f(1) == 2


def helper_not_a_test():
    raise AssertionError("helpers are not collected")


class TestPlain:
    def test_two(self):
        assert f(2) == 3


class TestWithSetUp(unittest.TestCase):
    def setUp(self):
        self.base = 10
        self.events = ["setUp"]

    def tearDown(self):
        assert self.events == ["setUp", "test"]

    def test_ten(self):
        self.events.append("test")
        self.assertEqual(f(self.base), 11)

    def test_big(self):
        self.events.append("test")
        self.assertEqual(f(self.base * 10), 101)
'''
MODULE_NAMES = ["test_small", "TestPlain.test_two", "TestWithSetUp.test_ten", "TestWithSetUp.test_big"]


def test_module_correct_candidate_passes(sandbox: Sandbox) -> None:
    """A correct program passes a module of test functions, a plain Test* class and a
    unittest.TestCase with setUp/tearDown; the tests are named as the proto says, in
    source order, and helpers are not collected."""
    result = run(sandbox, INC, ModuleTests(MODULE_TESTS))
    assert result.status is Status.PASSED, describe(result)
    assert statuses(result) == [(n, TestStatus.PASSED) for n in MODULE_NAMES], describe(result)


def test_module_wrong_candidate_fails_naming_the_failing_tests(sandbox: Sandbox) -> None:
    """A program wrong for large inputs is FAILED; the unittest methods that got a wrong
    value are FAILED by name with assertEqual's message, the others PASSED."""
    program = "def f(x):\n    return x + 1 if x < 5 else x\n"
    result = run(sandbox, program, ModuleTests(MODULE_TESTS))
    assert result.status is Status.FAILED, describe(result)
    assert statuses(result) == [
        ("test_small", TestStatus.PASSED),
        ("TestPlain.test_two", TestStatus.PASSED),
        ("TestWithSetUp.test_ten", TestStatus.FAILED),
        ("TestWithSetUp.test_big", TestStatus.FAILED),
    ], describe(result)
    assert "10 != 11" in by_name(result)["TestWithSetUp.test_ten"].message


def test_module_setup_runs_before_each_test(sandbox: Sandbox) -> None:
    """setUp runs before every test method on a fresh instance: state set by one test is
    not seen by the next, and a failing setUp makes its test an ERROR."""
    tests = '''
import unittest
from solution import f

class TestState(unittest.TestCase):
    def setUp(self):
        self.seen = []

    def test_a(self):
        self.seen.append("a")
        self.assertEqual(self.seen, ["a"])

    def test_b(self):
        self.seen.append("b")
        self.assertEqual(self.seen, ["b"])

class TestBrokenSetUp(unittest.TestCase):
    def setUp(self):
        raise RuntimeError("setUp broke")

    def test_never(self):
        pass
'''
    result = run(sandbox, INC, ModuleTests(tests))
    assert statuses(result) == [
        ("TestState.test_a", TestStatus.PASSED),
        ("TestState.test_b", TestStatus.PASSED),
        ("TestBrokenSetUp.test_never", TestStatus.ERROR),
    ], describe(result)
    assert result.status is Status.RUNTIME_ERROR, describe(result)
    assert "setUp broke" in result.tests[2].message


def test_module_crashing_candidate_is_a_runtime_error(sandbox: Sandbox) -> None:
    """A function that raises is RUNTIME_ERROR; each test that called it is ERROR with
    the exception's message."""
    result = run(sandbox, CRASH_INC, ModuleTests(MODULE_TESTS))
    assert result.status is Status.RUNTIME_ERROR, describe(result)
    assert {t.status for t in result.tests} == {TestStatus.ERROR}, describe(result)
    assert "division" in result.tests[0].message


def test_module_never_ending_candidate_times_out(sandbox: Sandbox) -> None:
    """A function that never returns is TIMEOUT at the run's wall clock."""
    result = run(sandbox, LOOP_INC, ModuleTests(MODULE_TESTS), timeout_s=SHORT_TIMEOUT_S)
    assert result.status is Status.TIMEOUT, describe(result)
    assert SHORT_TIMEOUT_S <= result.duration_s <= SHORT_TIMEOUT_S + 1.0, result.duration_s


def test_module_stop_at_first_failure_stops_there(sandbox: Sandbox) -> None:
    """With stop_at_first_failure the run ends at the first failing test: the tests after
    it are neither run nor reported."""
    tests = '''
from solution import f

def test_one():
    assert f(1) == 2

def test_two():
    assert f(2) == 3

def test_three():
    print("THIRD RAN")
'''
    result = run(sandbox, WRONG_INC, ModuleTests(tests, stop_at_first_failure=True))
    assert result.status is Status.FAILED, describe(result)
    assert statuses(result) == [("test_one", TestStatus.PASSED), ("test_two", TestStatus.FAILED)], describe(result)
    assert "THIRD RAN" not in result.stdout.text
    without = run(sandbox, WRONG_INC, ModuleTests(tests))
    assert [t.name for t in without.tests] == ["test_one", "test_two", "test_three"], describe(without)
    assert "THIRD RAN" in without.stdout.text


def test_module_program_names_are_visible_without_import(sandbox: Sandbox) -> None:
    """The program's names are visible to the tests without an import, and the program
    is importable as ``solution``."""
    tests = "import solution\n\ndef test_both():\n    assert f(1) == solution.f(1) == 2\n"
    result = run(sandbox, INC, ModuleTests(tests))
    assert result.status is Status.PASSED, describe(result)


# ------------------------------------------------------------------------ invalid requests


@pytest.mark.parametrize(
    ("tests", "field"),
    [
        pytest.param(AssertTests(("x = f(1)",)), "asserts.asserts[0]", id="asserts-not-an-assert"),
        pytest.param(AssertTests(("assert f(1) == 2", "assert f(1)\nassert f(2)")), "asserts.asserts[1]",
                     id="asserts-two-statements"),
        pytest.param(AssertTests(("assert f(1) ==",)), "asserts.asserts[0]", id="asserts-syntax-error"),
        pytest.param(AssertTests(()), "asserts.asserts", id="asserts-empty"),
        pytest.param(CallTests("f", (CallCase("[1]", "2"), CallCase('{"x": 1}', "2"))),
                     "call_cases.cases[1].args_json", id="call-args-not-an-array"),
        pytest.param(CallTests("f", (CallCase("1", "2"),)), "call_cases.cases[0].args_json",
                     id="call-args-scalar"),
        pytest.param(CallTests("f", (CallCase("[1]", "2", kwargs_json="[1]"),)), "call_cases.cases[0].kwargs_json",
                     id="call-kwargs-not-an-object"),
        pytest.param(CallTests("f", (CallCase("[1]", "nope"),)), "call_cases.cases[0].expected_json",
                     id="call-expected-not-json"),
        pytest.param(CallTests("not an identifier", (CallCase("[1]", "2"),)), "call_cases.entry_point",
                     id="call-bad-entry-point"),
        pytest.param(CallTests("f", ()), "call_cases.cases", id="call-no-cases"),
        pytest.param(IoTests(()), "io_cases.cases", id="io-no-cases"),
        pytest.param(IoTests((IoCase("", ""),), case_timeout_s=-1.0), "io_cases.case_timeout_s",
                     id="io-negative-case-timeout"),
        pytest.param(ModuleTests("def helper():\n    pass\n"), "test_module.source", id="module-without-tests"),
        pytest.param(ModuleTests("def test_x(:\n"), "test_module.source", id="module-syntax-error"),
    ],
)
def test_invalid_suites_are_refused_naming_the_field(client: Client, tests: TestSuite, field: str) -> None:
    """A malformed suite never runs: the RPC fails with INVALID_ARGUMENT and a message
    that names the offending field."""
    error = refusal(client, ExecuteRequest(program=INC, tests=tests, limits=Limits(timeout_s=5.0)))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, (error.code(), error.details())
    assert field in (error.details() or ""), error.details()
