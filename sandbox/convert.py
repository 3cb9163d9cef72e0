"""Protobuf <-> domain conversion, with request validation.

The only module besides the generated code and the two edges (servicer, client) that
touches ``pb2`` objects.
"""

from __future__ import annotations

import keyword

from sandbox._proto.sandbox.v1 import sandbox_pb2 as pb
from sandbox.domain import (
    ExecuteRequest,
    HumanEvalTests,
    Output,
    RunResult,
    Status,
    TestResult,
    TestStatus,
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
}
_TEST_FROM_PB = {v: k for k, v in _TEST_TO_PB.items()}


def _check_source(field: str, text: str, required: bool) -> None:
    if required and not text.strip():
        raise InvalidRequestError(f"{field} is empty")
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_SOURCE_BYTES:
        raise InvalidRequestError(f"{field} is {size} bytes; the maximum is {MAX_SOURCE_BYTES}")
    if "\x00" in text:
        raise InvalidRequestError(f"{field} contains a NUL character, which Python source cannot")


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
        raise InvalidRequestError("test_suite is not set: give one of humaneval")
    if suite == "humaneval":
        he = msg.humaneval
        _check_source("humaneval.test", he.test, required=True)
        entry = he.entry_point
        if not entry.isidentifier() or keyword.iskeyword(entry):
            raise InvalidRequestError(
                f"humaneval.entry_point must be a Python identifier, got {entry!r}"
            )
        tests = HumanEvalTests(
            test=he.test, entry_point=entry, stop_at_first_failure=he.stop_at_first_failure
        )
    else:  # pragma: no cover - a oneof branch this server does not know
        raise InvalidRequestError(f"test_suite {suite!r} is not supported by this server")
    limits = resolve(
        msg.limits.timeout_s,
        msg.limits.memory_mb,
        msg.limits.max_output_bytes,
        defaults or Limits(),
        bounds or LimitBounds(),
    )
    return ExecuteRequest(program=msg.program, tests=tests, limits=limits, id=msg.id)


def request_to_pb(req: ExecuteRequest, send_limits: bool = True) -> pb.ExecuteRequest:
    """The wire form of ``req``."""
    msg = pb.ExecuteRequest(id=req.id, program=req.program)
    if send_limits:
        msg.limits.timeout_s = req.limits.timeout_s
        msg.limits.memory_mb = req.limits.memory_mb
        msg.limits.max_output_bytes = req.limits.max_output_bytes
    tests = req.tests
    msg.humaneval.test = tests.test
    msg.humaneval.entry_point = tests.entry_point
    msg.humaneval.stop_at_first_failure = tests.stop_at_first_failure
    return msg


def _output_to_pb(out: Output) -> pb.Output:
    return pb.Output(text=out.text, truncated=out.truncated, total_bytes=out.total_bytes)


def _output_from_pb(msg: pb.Output) -> Output:
    return Output(text=msg.text, truncated=msg.truncated, total_bytes=msg.total_bytes)


def result_to_pb(result: RunResult) -> pb.Result:
    return pb.Result(
        status=_STATUS_TO_PB[result.status],
        tests=[
            pb.TestResult(
                name=t.name,
                status=_TEST_TO_PB[t.status],
                message=t.message,
                traceback=t.traceback,
                duration_s=t.duration_s,
                source=t.source,
            )
            for t in result.tests
        ],
        stdout=_output_to_pb(result.stdout),
        stderr=_output_to_pb(result.stderr),
        duration_s=result.duration_s,
        human_eval_result=result.human_eval_result,
        message=result.message,
        runtime=result.runtime,
    )


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
            )
            for t in msg.tests
        ),
        stdout=_output_from_pb(msg.stdout),
        stderr=_output_from_pb(msg.stderr),
        duration_s=msg.duration_s,
        human_eval_result=msg.human_eval_result,
        message=msg.message,
        runtime=msg.runtime,
    )
