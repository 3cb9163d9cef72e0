"""Protobuf <-> domain conversion, with request validation.

The only module besides the generated code and the two edges (servicer, client) that
touches ``pb2`` objects.
"""

from __future__ import annotations

import ast
import json
import keyword
import math

from sandbox._proto.sandbox.v1 import sandbox_pb2 as pb
from sandbox.agent.rewrite import module_tests
from sandbox.domain import (
    AssertTests,
    CallCase,
    CallTests,
    CompareMode,
    ExecuteRequest,
    HumanEvalTests,
    IoCase,
    IoTests,
    ModuleTests,
    Output,
    RunResult,
    Status,
    TestResult,
    TestStatus,
    TestSuite,
)
from sandbox.errors import InvalidRequestError
from sandbox.limits import LimitBounds, Limits, resolve

MAX_ID_CHARS = 128
MAX_SOURCE_BYTES = 4 * 1024 * 1024

_STATUS_TO_PB = {
    Status.PASSED: pb.STATUS_PASSED,
    Status.FAILED: pb.STATUS_FAILED,
    Status.RUNTIME_ERROR: pb.STATUS_RUNTIME_ERROR,
    Status.COMPILE_ERROR: pb.STATUS_COMPILE_ERROR,
    Status.TIMEOUT: pb.STATUS_TIMEOUT,
    Status.MEMORY_LIMIT: pb.STATUS_MEMORY_LIMIT,
    Status.OUTPUT_LIMIT: pb.STATUS_OUTPUT_LIMIT,
    Status.EARLY_EXIT: pb.STATUS_EARLY_EXIT,
    Status.SANDBOX_ERROR: pb.STATUS_SANDBOX_ERROR,
}
_STATUS_FROM_PB = {v: k for k, v in _STATUS_TO_PB.items()}
_TEST_TO_PB = {
    TestStatus.PASSED: pb.TEST_STATUS_PASSED,
    TestStatus.FAILED: pb.TEST_STATUS_FAILED,
    TestStatus.ERROR: pb.TEST_STATUS_ERROR,
    TestStatus.SKIPPED: pb.TEST_STATUS_SKIPPED,
    TestStatus.TIMEOUT: pb.TEST_STATUS_TIMEOUT,
    TestStatus.MISSING: pb.TEST_STATUS_MISSING,
}
_TEST_FROM_PB = {v: k for k, v in _TEST_TO_PB.items()}
_COMPARE_TO_PB = {
    CompareMode.EXACT: pb.COMPARE_MODE_EXACT,
    CompareMode.WHITESPACE: pb.COMPARE_MODE_WHITESPACE,
    CompareMode.FLOAT: pb.COMPARE_MODE_FLOAT,
}
_COMPARE_FROM_PB = {v: k for k, v in _COMPARE_TO_PB.items()}
MAX_CASES = 10_000


def _check_source(field: str, text: str, required: bool) -> None:
    if required and not text.strip():
        raise InvalidRequestError(f"{field} is empty")
    # A code point is at most 4 bytes of UTF-8: only a long text needs encoding to be sized.
    if len(text) > MAX_SOURCE_BYTES // 4:
        size = len(text.encode("utf-8", "surrogatepass"))
        if size > MAX_SOURCE_BYTES:
            raise InvalidRequestError(f"{field} is {size} bytes; the maximum is {MAX_SOURCE_BYTES}")
    if "\x00" in text:
        raise InvalidRequestError(f"{field} contains a NUL character, which Python source cannot")


def _check_identifier(field: str, name: str) -> None:
    if not name.isidentifier() or keyword.iskeyword(name):
        raise InvalidRequestError(f"{field} must be a Python identifier, got {name!r}")


def _check_cases(field: str, count: int) -> None:
    if count == 0:
        raise InvalidRequestError(f"{field} is empty: give at least one case")
    if count > MAX_CASES:
        raise InvalidRequestError(f"{field} has {count} cases; the maximum is {MAX_CASES}")


def _check_seconds(field: str, value: float) -> None:
    if not math.isfinite(value) or value < 0:
        raise InvalidRequestError(f"{field} must be a non-negative number of seconds, got {value}")


def _json(field: str, text: str, kind: type | None = None) -> object:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise InvalidRequestError(f"{field} is not valid JSON: {exc}") from None
    if kind is not None and not isinstance(value, kind):
        raise InvalidRequestError(f"{field} must be a JSON {'array' if kind is list else 'object'}")
    return value


def _asserts_from_pb(msg: pb.AssertTests) -> AssertTests:
    _check_cases("asserts.asserts", len(msg.asserts))
    for i, text in enumerate(msg.asserts):
        field = f"asserts.asserts[{i}]"
        _check_source(field, text, required=True)
        try:
            body = ast.parse(text.strip()).body
        except SyntaxError as exc:
            raise InvalidRequestError(f"{field} is not valid Python: {exc.msg}") from None
        if len(body) != 1 or not isinstance(body[0], ast.Assert):
            raise InvalidRequestError(f"{field} must be exactly one assert statement")
    return AssertTests(asserts=tuple(a.strip() for a in msg.asserts), stop_at_first_failure=msg.stop_at_first_failure)


def _io_from_pb(msg: pb.IoTests) -> IoTests:
    _check_cases("io_cases.cases", len(msg.cases))
    _check_seconds("io_cases.case_timeout_s", msg.case_timeout_s)
    _check_seconds("io_cases.float_tolerance", msg.float_tolerance)
    return IoTests(
        cases=tuple(IoCase(c.stdin, c.expected_stdout, c.name) for c in msg.cases),
        compare=_COMPARE_FROM_PB.get(msg.compare, CompareMode.EXACT),
        float_tolerance=msg.float_tolerance,
        case_timeout_s=msg.case_timeout_s,
    )


def _calls_from_pb(msg: pb.CallTests) -> CallTests:
    _check_identifier("call_cases.entry_point", msg.entry_point)
    _check_cases("call_cases.cases", len(msg.cases))
    _check_seconds("call_cases.case_timeout_s", msg.case_timeout_s)
    _check_seconds("call_cases.float_tolerance", msg.float_tolerance)
    for i, c in enumerate(msg.cases):
        _json(f"call_cases.cases[{i}].args_json", c.args_json or "[]", list)
        if c.kwargs_json:
            _json(f"call_cases.cases[{i}].kwargs_json", c.kwargs_json, dict)
        _json(f"call_cases.cases[{i}].expected_json", c.expected_json)
    return CallTests(
        entry_point=msg.entry_point,
        cases=tuple(CallCase(c.args_json or "[]", c.expected_json, c.kwargs_json, c.name) for c in msg.cases),
        float_tolerance=msg.float_tolerance,
        case_timeout_s=msg.case_timeout_s,
    )


def _module_from_pb(msg: pb.ModuleTests) -> ModuleTests:
    _check_source("test_module.source", msg.source, required=True)
    try:
        tests = module_tests(msg.source)
    except SyntaxError as exc:
        raise InvalidRequestError(f"test_module.source is not valid Python: {exc.msg} (line {exc.lineno})") from None
    if not tests:
        raise InvalidRequestError("test_module.source defines no test_* function or Test* class with test methods")
    return ModuleTests(source=msg.source, stop_at_first_failure=msg.stop_at_first_failure)


def request_from_pb(
    msg: pb.ExecuteRequest, defaults: Limits | None = None, bounds: LimitBounds | None = None
) -> ExecuteRequest:
    """Validates a request and converts it.

    Raises:
        InvalidRequestError: with a message naming the field that is wrong.
    """
    if len(msg.id) > MAX_ID_CHARS:
        raise InvalidRequestError(f"id is {len(msg.id)} characters; the maximum is {MAX_ID_CHARS}")
    _check_source("program", msg.program, required=False)
    suite = msg.WhichOneof("test_suite")
    if suite is None:
        raise InvalidRequestError(
            "test_suite is not set: give one of humaneval, asserts, io_cases, call_cases, test_module"
        )
    if suite == "humaneval":
        he = msg.humaneval
        _check_source("humaneval.test", he.test, required=True)
        _check_identifier("humaneval.entry_point", he.entry_point)
        tests: TestSuite = HumanEvalTests(
            test=he.test, entry_point=he.entry_point, stop_at_first_failure=he.stop_at_first_failure,
            reliability_guard=not he.without_reliability_guard,
        )
    elif suite == "asserts":
        tests = _asserts_from_pb(msg.asserts)
    elif suite == "io_cases":
        tests = _io_from_pb(msg.io_cases)
    elif suite == "call_cases":
        tests = _calls_from_pb(msg.call_cases)
    elif suite == "test_module":
        tests = _module_from_pb(msg.test_module)
    else:  # pragma: no cover - a oneof branch this server does not know
        raise InvalidRequestError(f"test_suite {suite!r} is not supported by this server")
    limits = resolve(
        msg.limits.timeout_s,
        msg.limits.memory_mb,
        msg.limits.max_output_bytes,
        defaults or Limits(),
        bounds or LimitBounds(),
    )
    if not math.isfinite(msg.deadline_s) or msg.deadline_s < 0:
        raise InvalidRequestError(f"deadline_s must be a non-negative number of seconds, got {msg.deadline_s}")
    return ExecuteRequest(program=msg.program, tests=tests, limits=limits, id=msg.id, deadline_s=msg.deadline_s)


def request_to_pb(req: ExecuteRequest, send_limits: bool = True) -> pb.ExecuteRequest:
    """The wire form of ``req``."""
    msg = pb.ExecuteRequest(id=req.id, program=req.program, deadline_s=req.deadline_s)
    if send_limits:
        msg.limits.timeout_s = req.limits.timeout_s
        msg.limits.memory_mb = req.limits.memory_mb
        msg.limits.max_output_bytes = req.limits.max_output_bytes
    tests = req.tests
    if isinstance(tests, HumanEvalTests):
        msg.humaneval.test = tests.test
        msg.humaneval.entry_point = tests.entry_point
        msg.humaneval.stop_at_first_failure = tests.stop_at_first_failure
        msg.humaneval.without_reliability_guard = not tests.reliability_guard
    elif isinstance(tests, AssertTests):
        msg.asserts.asserts.extend(tests.asserts)
        msg.asserts.stop_at_first_failure = tests.stop_at_first_failure
    elif isinstance(tests, IoTests):
        msg.io_cases.cases.extend(pb.IoCase(stdin=c.stdin, expected_stdout=c.expected_stdout, name=c.name)
                                  for c in tests.cases)
        msg.io_cases.compare = _COMPARE_TO_PB[tests.compare]
        msg.io_cases.float_tolerance = tests.float_tolerance
        msg.io_cases.case_timeout_s = tests.case_timeout_s
    elif isinstance(tests, CallTests):
        msg.call_cases.entry_point = tests.entry_point
        msg.call_cases.cases.extend(
            pb.CallCase(args_json=c.args_json, kwargs_json=c.kwargs_json, expected_json=c.expected_json, name=c.name)
            for c in tests.cases
        )
        msg.call_cases.float_tolerance = tests.float_tolerance
        msg.call_cases.case_timeout_s = tests.case_timeout_s
    else:
        msg.test_module.source = tests.source
        msg.test_module.stop_at_first_failure = tests.stop_at_first_failure
    return msg


def _output_to_pb(out: Output, msg: pb.Output) -> None:
    msg.text = out.text
    msg.truncated = out.truncated
    msg.total_bytes = out.total_bytes


def _output_from_pb(msg: pb.Output) -> Output:
    return Output(text=msg.text, truncated=msg.truncated, total_bytes=msg.total_bytes)


def result_to_pb(result: RunResult, msg: pb.Result | None = None) -> pb.Result:
    """The wire form of ``result``, written into ``msg`` when given (``ExecuteResponse.result``).

    Filled in place: a message given to a constructor or a repeated field is copied.
    """
    if msg is None:
        msg = pb.Result()
    msg.status = _STATUS_TO_PB[result.status]
    msg.duration_s = result.duration_s
    msg.human_eval_result = result.human_eval_result
    msg.message = result.message
    msg.runtime = result.runtime
    msg.tampering.extend(result.tampering)
    _output_to_pb(result.stdout, msg.stdout)
    _output_to_pb(result.stderr, msg.stderr)
    add_test = msg.tests.add
    for t in result.tests:
        add_test(
            name=t.name,
            status=_TEST_TO_PB[t.status],
            message=t.message,
            traceback=t.traceback,
            duration_s=t.duration_s,
            source=t.source,
            actual=t.actual,
        )
    return msg


def result_from_pb(msg: pb.Result) -> RunResult:
    return RunResult(
        status=_STATUS_FROM_PB.get(msg.status, Status.SANDBOX_ERROR),
        tests=tuple(
            TestResult(
                name=t.name,
                status=_TEST_FROM_PB.get(t.status, TestStatus.ERROR),
                message=t.message,
                traceback=t.traceback,
                duration_s=t.duration_s,
                source=t.source,
                actual=t.actual,
            )
            for t in msg.tests
        ),
        stdout=_output_from_pb(msg.stdout),
        stderr=_output_from_pb(msg.stderr),
        duration_s=msg.duration_s,
        human_eval_result=msg.human_eval_result,
        message=msg.message,
        runtime=msg.runtime,
        tampering=tuple(msg.tampering),
    )
