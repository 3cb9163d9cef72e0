"""Run untrusted candidate code and its tests in hardened, warm containers over gRPC.

The package root is the client side and needs only grpcio and protobuf; the server
lives in :mod:`sandbox.server` (docker, prometheus_client, structlog), and the
in-container agent in :mod:`sandbox.agent` (stdlib only).
"""

from sandbox.client import AsyncClient, Client, Refused
from sandbox.domain import (
    ExecuteRequest,
    HumanEvalTests,
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
    "AsyncClient",
    "Client",
    "DeadlineExceededError",
    "ExecuteRequest",
    "HumanEvalTests",
    "InfrastructureError",
    "InvalidRequestError",
    "Limits",
    "Output",
    "OverloadedError",
    "Refused",
    "RunResult",
    "SandboxError",
    "Status",
    "TestResult",
    "TestStatus",
    "estimate_pass_at_k",
    "pass_at_k",
]
