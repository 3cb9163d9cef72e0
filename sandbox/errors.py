"""The one error root of the package, and the table that maps errors to gRPC codes.

A candidate that fails is a *result* (``Status.FAILED`` and friends), never an
exception. Exceptions are for requests we refuse and for infrastructure::

    SandboxError
    ├── InvalidRequestError      the request is malformed        INVALID_ARGUMENT
    ├── OverloadedError          admission queue full            RESOURCE_EXHAUSTED
    ├── DeadlineExceededError    client deadline passed queued   DEADLINE_EXCEEDED
    ├── ShuttingDownError        server is draining              UNAVAILABLE
    ├── InfrastructureError      engine, container or agent      UNAVAILABLE
    │   ├── EngineError              the Docker engine failed or is unreachable
    │   ├── HardeningError           a container is not as configured (fail closed)
    │   └── AgentError               the in-container agent broke the protocol
    └── ChannelTamperedError     a run wrote to the agent's channel (a result, never raised
                                 to clients)
"""

from __future__ import annotations


class SandboxError(Exception):
    """Root of every error this package raises."""


class InvalidRequestError(SandboxError):
    """The request is malformed; the message says which field and why."""


class OverloadedError(SandboxError):
    """The admission queue is full; retry later."""


class DeadlineExceededError(SandboxError):
    """The client's deadline passed before the run could start."""


class ShuttingDownError(SandboxError):
    """The server is draining and accepts no new work."""


class InfrastructureError(SandboxError):
    """Something on our side failed; never the candidate's fault."""


class EngineError(InfrastructureError):
    """The container engine failed or is unreachable."""


class HardeningError(InfrastructureError):
    """A container did not come up exactly as configured; it never serves."""


class AgentError(InfrastructureError):
    """The in-container agent broke the protocol or vanished."""


class ChannelTamperedError(SandboxError):
    """A frame on the agent's channel lacked the run's token: the run forged it."""


# Error type -> name of the grpc.StatusCode member. Names, not enum members, so that
# this module imports without grpcio.
GRPC_STATUS = {
    InvalidRequestError: "INVALID_ARGUMENT",
    OverloadedError: "RESOURCE_EXHAUSTED",
    DeadlineExceededError: "DEADLINE_EXCEEDED",
    ShuttingDownError: "UNAVAILABLE",
    InfrastructureError: "UNAVAILABLE",
    SandboxError: "INTERNAL",
}


def grpc_status_name(error: BaseException) -> str:
    """The gRPC status code name for ``error`` (most specific class wins)."""
    for cls in type(error).__mro__:
        if cls in GRPC_STATUS:
            return GRPC_STATUS[cls]
    return "INTERNAL"
