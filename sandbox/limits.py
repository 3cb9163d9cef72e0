"""Resource limits of one run: one declarative schema whose defaults are the secure ones."""

from __future__ import annotations

import dataclasses
import math

from sandbox.errors import InvalidRequestError


@dataclasses.dataclass(frozen=True)
class Limits:
    """What one run may use. Every field has its unit in its name."""

    timeout_s: float = 10.0
    """Wall-clock limit of the run, in seconds, measured outside the candidate."""

    memory_mb: int = 512
    """Address-space limit of the candidate's process, in MiB."""

    max_output_bytes: int = 8 * 1024 * 1024
    """Bytes of stdout plus stderr after which the run is stopped (OUTPUT_LIMIT)."""

    file_size_mb: int = 16
    """Largest file the candidate may write, in MiB (RLIMIT_FSIZE)."""

    open_files: int = 256
    """Most descriptors the candidate may hold open (RLIMIT_NOFILE)."""


@dataclasses.dataclass(frozen=True)
class LimitBounds:
    """The largest limits a server accepts from a request."""

    max_timeout_s: float = 300.0
    """Longest wall-clock limit a request may ask for, in seconds."""

    max_memory_mb: int = 4096
    """Most memory a request may ask for, in MiB; also bounded by the container's."""

    max_output_bytes: int = 64 * 1024 * 1024
    """Largest output limit a request may ask for, in bytes."""


def resolve(
    timeout_s: float,
    memory_mb: int,
    max_output_bytes: int,
    defaults: Limits,
    bounds: LimitBounds,
) -> Limits:
    """Fills zero fields from ``defaults`` and rejects values outside ``bounds``.

    Raises:
        InvalidRequestError: a limit is negative, not finite or above its bound.
    """
    if not math.isfinite(timeout_s) or timeout_s < 0:
        raise InvalidRequestError(f"limits.timeout_s must be a positive number of seconds, got {timeout_s}")
    if timeout_s > bounds.max_timeout_s:
        raise InvalidRequestError(
            f"limits.timeout_s={timeout_s} exceeds this server's maximum of {bounds.max_timeout_s} s"
        )
    if memory_mb > bounds.max_memory_mb:
        raise InvalidRequestError(
            f"limits.memory_mb={memory_mb} exceeds this server's maximum of {bounds.max_memory_mb} MiB"
        )
    if memory_mb and memory_mb < 32:
        raise InvalidRequestError(f"limits.memory_mb={memory_mb} is below the minimum of 32 MiB")
    if max_output_bytes > bounds.max_output_bytes:
        raise InvalidRequestError(
            f"limits.max_output_bytes={max_output_bytes} exceeds this server's maximum of "
            f"{bounds.max_output_bytes} bytes"
        )
    return dataclasses.replace(
        defaults,
        timeout_s=timeout_s or defaults.timeout_s,
        memory_mb=memory_mb or defaults.memory_mb,
        max_output_bytes=max_output_bytes or defaults.max_output_bytes,
    )
