"""The package's public surface is frozen, and the client never imports the server."""

from __future__ import annotations

import subprocess
import sys

import sandbox


def test_exported_names_are_frozen() -> None:
    """Adding or removing a public name is a deliberate change to this list."""
    assert sandbox.__all__ == [
        "AssertTests",
        "AsyncClient",
        "CallCase",
        "CallTests",
        "Client",
        "CompareMode",
        "DeadlineExceededError",
        "ExecuteRequest",
        "HumanEvalTests",
        "InfrastructureError",
        "InvalidRequestError",
        "IoCase",
        "IoTests",
        "Limits",
        "ModuleTests",
        "Output",
        "OverloadedError",
        "Refused",
        "RetryPolicy",
        "RunResult",
        "SandboxError",
        "Status",
        "TestResult",
        "TestStatus",
        "estimate_pass_at_k",
        "pass_at_k",
    ]
    assert sandbox.__all__ == sorted(sandbox.__all__)


def test_client_side_imports_no_server_dependency() -> None:
    """Importing the package and its client pulls in neither docker nor the server."""
    code = (
        "import sys, sandbox, sandbox.client, sandbox.humaneval, sandbox.evaluate\n"
        "bad = [m for m in ('docker', 'prometheus_client', 'structlog', 'sandbox.server') if m in sys.modules]\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
