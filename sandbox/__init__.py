"""Run untrusted candidate code and its tests in hardened, warm containers over gRPC.

The package root is the client side and needs only grpcio and protobuf; the server
lives in :mod:`sandbox.server` (docker, prometheus_client, structlog), and the
in-container agent in :mod:`sandbox.agent` (stdlib only).
"""

from sandbox.client import AsyncClient, Client, Refused, RetryPolicy
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
    Output,
    RunResult,
    Status,
    TestResult,
    TestStatus,
)
from sandbox.errors import (
    DeadlineExceededError,
    InfrastructureError,
    InvalidRequestError,
    OverloadedError,
    SandboxError,
)
from sandbox.humaneval import estimate_pass_at_k, pass_at_k
from sandbox.limits import Limits

__all__ = [
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
