"""Server configuration, read in one place: :meth:`Settings.from_env`."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping

from sandbox.errors import InvalidRequestError
from sandbox.limits import LimitBounds, Limits

RUNSC_PIDS = 512


def _default_pool_size() -> int:
    return (os.cpu_count() or 2) + 2


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything the server can be told. Defaults are the secure ones."""

    listen: str = "127.0.0.1:50051"
    """gRPC listen address, HOST:PORT (port 0 picks a free one)."""

    metrics_listen: str = ""
    """Prometheus metrics listen address, HOST:PORT; empty disables it."""

    pool_name: str = "default"
    """Name of this server's pool; several servers may share one engine."""

    pool_size: int = dataclasses.field(default_factory=_default_pool_size)
    """Warm containers kept ready."""

    runtime: str = "runc"
    """OCI runtime: "runc" or "runsc" (gVisor)."""

    image: str = ""
    """Runtime image; empty means the one built from this package's agent."""

    isolation: str = "pool"
    """"pool" reuses a container after a clean run; "fresh" uses one per run."""

    docker_host: str = ""
    """Docker endpoint (unix:// or tcp://); empty means DOCKER_HOST or the default socket."""

    container_memory_mb: int = 1024
    """Memory (and memory+swap) limit of each container, in MiB."""

    container_cpus: float = 1.0
    """CPU quota of each container, in cores."""

    container_pids: int = 128
    """Most processes and threads in one container."""

    scratch_mb: int = 64
    """Size of each container's /tmp tmpfs, in MiB."""

    shm_mb: int = 16
    """Size of each container's /dev/shm, in MiB."""

    max_queue: int = 10000
    """Requests that may wait for a container before new ones get RESOURCE_EXHAUSTED."""

    max_runs_per_container: int = 1000
    """Runs after which a container is replaced even if it stayed clean."""

    max_queue_wait_s: float = 600.0
    """Longest a request waits for a container before UNAVAILABLE (engine trouble)."""

    posture_every_runs: int = 100
    """A container's posture is read back from inside it again after this many runs."""

    refill_concurrency: int = 4
    """Containers started at once while refilling."""

    idempotency_entries: int = 50_000
    """Results kept by request id, so that a retried request runs once."""

    idempotency_ttl_s: float = 600.0
    """How long a result is kept for retries, in seconds."""

    stream_window: int = 1024
    """Requests one ExecuteStream may have in flight before the server stops reading."""

    defaults: Limits = dataclasses.field(default_factory=Limits)
    """Limits of a request that leaves a field at zero."""

    bounds: LimitBounds = dataclasses.field(default_factory=LimitBounds)
    """Largest limits a request may ask for."""

    log_format: str = "auto"
    """"json", "console", or "auto" (console on a terminal)."""

    def __post_init__(self) -> None:
        if self.runtime not in ("runc", "runsc"):
            raise InvalidRequestError(f"runtime must be runc or runsc, got {self.runtime!r}")
        if self.isolation not in ("pool", "fresh"):
            raise InvalidRequestError(f"isolation must be pool or fresh, got {self.isolation!r}")
        if self.pool_size < 1:
            raise InvalidRequestError(f"pool size must be at least 1, got {self.pool_size}")
        if self.defaults.memory_mb + 64 > self.container_memory_mb:
            raise InvalidRequestError(
                f"container memory ({self.container_memory_mb} MiB) must exceed the default "
                f"run memory ({self.defaults.memory_mb} MiB) by 64 MiB for the agent"
            )

    @property
    def max_memory_mb(self) -> int:
        """Largest per-run memory a request may ask for on this server."""
        return min(self.bounds.max_memory_mb, self.container_memory_mb - 64)

    @classmethod
    def from_env(cls, env: Mapping[str, str], **overrides: object) -> Settings:
        """Settings from ``SANDBOX_*`` variables, then explicit overrides (CLI flags)."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        values: dict[str, object] = {}
        for name, field in fields.items():
            raw = env.get(f"SANDBOX_{name.upper()}")
            if raw is None or name in ("defaults", "bounds"):
                continue
            kind = type(field.default) if field.default is not dataclasses.MISSING else int
            try:
                values[name] = kind(raw)
            except ValueError:
                raise InvalidRequestError(f"SANDBOX_{name.upper()}={raw!r} is not a valid {kind.__name__}") from None
        if "docker_host" not in values and env.get("DOCKER_HOST"):
            values["docker_host"] = env["DOCKER_HOST"]
        values.update({k: v for k, v in overrides.items() if v is not None})
        if values.get("runtime") == "runsc" and "container_pids" not in values:
            # With gVisor's ptrace platform the pids cgroup also counts the sandbox's own
            # host tasks (about 40 idle, 100 in a plain run), not just the candidate's.
            values["container_pids"] = RUNSC_PIDS
        settings = cls(**values)  # type: ignore[arg-type]
        bounds = dataclasses.replace(settings.bounds, max_memory_mb=settings.max_memory_mb)
        return dataclasses.replace(settings, bounds=bounds)
