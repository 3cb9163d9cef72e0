"""`sandbox run`: one program through an embedded server, as a user types it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

SANDBOX = str(Path(sys.executable).with_name("sandbox"))
TESTS = "def check(candidate):\n    assert candidate(1) == 2\n    assert candidate(2) == 3\n"


def _run(tmp_path: Path, program: str, *flags: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "cand.py").write_text(program)
    (tmp_path / "tests.py").write_text(TESTS)
    return subprocess.run(
        [SANDBOX, "run", str(tmp_path / "cand.py"), "--tests", str(tmp_path / "tests.py"), *flags],
        capture_output=True, text=True, timeout=180,
    )


def test_run_json_passes_and_exits_zero(tmp_path: Path) -> None:
    """A right program: exit 0 and the documented JSON result (status, tests, outputs)."""
    proc = _run(tmp_path, "def inc(x):\n    print('hi')\n    return x + 1\n", "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    assert result["status"] == "passed" and result["passed"] is True
    assert [t["status"] for t in result["tests"]] == ["passed", "passed"]
    assert result["stdout"]["text"] == "hi\nhi\n"
    assert {"status", "tests", "stdout", "stderr", "duration_s"} <= set(result)


def test_run_reports_failures_per_assert_and_exits_one(tmp_path: Path) -> None:
    """A wrong program: exit 1, each failing assert named with its source."""
    proc = _run(tmp_path, "def inc(x):\n    return x + 2\n", "--entry-point", "inc")
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert proc.stdout.startswith("failed:")
    assert "assert candidate(1) == 2" in proc.stdout and "assert candidate(2) == 3" in proc.stdout


def test_run_refuses_a_bad_entry_point_with_a_clear_message(tmp_path: Path) -> None:
    """An entry point that is not an identifier is refused, naming the field."""
    proc = _run(tmp_path, "def inc(x):\n    return x + 1\n", "--entry-point", "inc); import os; (x")
    assert proc.returncode == 2
    assert "entry_point" in proc.stderr
