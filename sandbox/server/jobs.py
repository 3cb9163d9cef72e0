"""From a request to the agent's job, and to what the judge must see come back.

The job is what enters the container; :class:`Expectations` stays on the host: the
run's nonce, the test names that must report (where they are known before the run),
and for call and io cases the expected values, which never enter the container.
"""

from __future__ import annotations

import ast
import base64
import dataclasses
import functools
import importlib.util
import json
import marshal
import secrets
import warnings
from typing import Any

from sandbox.agent.rewrite import module_tests, rewrite_text
from sandbox.domain import AssertTests, CallTests, ExecuteRequest, HumanEvalTests, IoTests, ModuleTests


@dataclasses.dataclass(frozen=True)
class Expectations:
    """What the judge checks the run's records against."""

    nonce: str
    """Random per run; every record must carry it."""

    names: tuple[str, ...] | None = None
    """Test names that must report, in order; None when only known at run time."""

    name_bases: frozenset[str] | None = None
    """For HumanEval: the assert lines a reported name may refer to."""

    stop_at_first_failure: bool = False
    """Whether a run may legitimately end after its first failing test."""

    suite: Any = None
    """The request's test suite (expected values for call and io cases)."""


@functools.lru_cache(maxsize=4096)  # a problem's tests arrive once per sample
def _humaneval_bases(test: str) -> frozenset[str] | None:
    try:
        tree = ast.parse(test)
    except SyntaxError:
        return None
    return frozenset(f"check:{node.lineno}" for node in ast.walk(tree) if isinstance(node, ast.Assert))


PYTHON_MAGIC = importlib.util.MAGIC_NUMBER.hex()
"""This interpreter's bytecode format. A container whose Python reports the same one
(the agent's ``ready`` frame) is sent the test part already compiled."""


@functools.lru_cache(maxsize=4096)  # once per problem, not per sample
def _rewritten(
    tests: str, wrap: bool = True, filename: str = "<string>", compiled: bool = False
) -> dict[str, Any] | None:
    """The test part with its asserts rewritten, for the harness to compile as it is
    (``tests_rewritten`` of the job); None leaves the rewrite to the run's child.

    With ``compiled``, also the rewritten text compiled (from line 1; the harness moves
    it to where the test part starts), marshalled and in base64: a run's child, a
    freshly forked process, spends far more compiling it than loading it. Left out when
    compiling warns, so that the warning still reaches the run's stderr as it would.
    """
    done = rewrite_text(tests, 1, wrap)
    if done is None:
        return None
    text, spans = done
    prepared: dict[str, Any] = {"text": text, "spans": [list(span) for span in spans]}
    if compiled:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                code = compile(text, filename, "exec", dont_inherit=True)
            except (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError):
                code = None
        if code is not None and not caught:
            prepared["code"] = base64.b64encode(marshal.dumps(code)).decode("ascii")
    return prepared


@functools.lru_cache(maxsize=1024)
def _module_names(source: str) -> tuple[str, ...]:
    return tuple(name for name, _, _ in module_tests(source))


def prepare(request: ExecuteRequest, compiled: bool = False) -> tuple[dict[str, Any], Expectations]:
    """The agent's job for ``request`` and the host-side expectations of its run.

    ``compiled``: the container runs this host's Python (same bytecode format), so the
    job may carry the test part compiled.
    """
    limits = request.limits
    nonce = secrets.token_hex(16)
    job: dict[str, Any] = {
        "program": request.program,
        "nonce": nonce,
        "limits": {
            "timeout_s": limits.timeout_s,
            "memory_mb": limits.memory_mb,
            "max_output_bytes": limits.max_output_bytes,
            "file_size_mb": limits.file_size_mb,
            "open_files": limits.open_files,
        },
    }
    tests = request.tests
    if isinstance(tests, HumanEvalTests):
        job.update(format="humaneval", test=tests.test, entry_point=tests.entry_point,
                   stop_at_first_failure=tests.stop_at_first_failure, reliability_guard=tests.reliability_guard,
                   tests_rewritten=_rewritten(f"{tests.test}\ncheck({tests.entry_point})", compiled=compiled))
        return job, Expectations(nonce, None, _humaneval_bases(tests.test), tests.stop_at_first_failure, tests)
    if isinstance(tests, AssertTests):
        job.update(format="asserts", asserts=list(tests.asserts), stop_at_first_failure=tests.stop_at_first_failure,
                   tests_rewritten=_rewritten("\n".join(tests.asserts) + "\n", compiled=compiled))
        names = tuple(f"assert:{i}" for i in range(1, len(tests.asserts) + 1))
        return job, Expectations(nonce, names, None, tests.stop_at_first_failure, tests)
    if isinstance(tests, CallTests):
        cases = [{"args_json": c.args_json, "kwargs_json": c.kwargs_json, "name": c.name} for c in tests.cases]
        job.update(format="call_cases", entry_point=tests.entry_point, cases=cases,
                   case_timeout_s=tests.case_timeout_s)
        names = tuple(c.name or f"case:{i}" for i, c in enumerate(tests.cases, 1))
        return job, Expectations(nonce, names, None, False, tests)
    if isinstance(tests, IoTests):
        cases = [{"stdin": c.stdin, "name": c.name} for c in tests.cases]
        job.update(format="io_cases", cases=cases, case_timeout_s=tests.case_timeout_s)
        names = tuple(c.name or f"case:{i}" for i, c in enumerate(tests.cases, 1))
        return job, Expectations(nonce, names, None, False, tests)
    if isinstance(tests, ModuleTests):
        job.update(format="test_module", test=tests.source, stop_at_first_failure=tests.stop_at_first_failure,
                   tests_rewritten=_rewritten(tests.source, False, "test_solution.py", compiled))
        names = _module_names(tests.source)
        return job, Expectations(nonce, names, None, tests.stop_at_first_failure, tests)
    raise TypeError(f"unknown test suite {type(tests).__name__}")


def expected_value(case_json: str) -> Any:
    """The expected value of a call case (validated when the request was accepted)."""
    return json.loads(case_json)
