"""Every Prometheus metric of the server, defined in one place."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class Metrics:
    """The server's metrics, registered in their own registry (tests make many)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.runs = Counter(
            "sandbox_runs_total", "Runs finished, by verdict and runtime.", ["status", "runtime"], registry=r
        )
        self.run_duration = Histogram(
            "sandbox_run_duration_seconds",
            "Wall-clock time of a run in its container, by runtime.",
            ["runtime"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            "sandbox_queue_wait_seconds",
            "Time a request waited for a warm container.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge("sandbox_runs_in_flight", "Runs executing now.", registry=r)
        self.queue_depth = Gauge("sandbox_queue_depth", "Requests waiting for a container.", registry=r)
        self.pool_containers = Gauge(
            "sandbox_pool_containers", "Pool containers by state.", ["state"], registry=r
        )
        self.container_starts = Counter(
            "sandbox_container_starts_total", "Containers started for the pool.", registry=r
        )
        self.container_start_failures = Counter(
            "sandbox_container_start_failures_total",
            "Containers that failed to start or to pass hardening checks, by reason.",
            ["reason"],
            registry=r,
        )
        self.container_recycles = Counter(
            "sandbox_container_recycles_total",
            "Containers destroyed after use, by reason.",
            ["reason"],
            registry=r,
        )
        self.container_start_duration = Histogram(
            "sandbox_container_start_duration_seconds",
            "Time from create to a verified, ready agent.",
            buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
            registry=r,
        )
        self.sandbox_errors = Counter(
            "sandbox_errors_total", "Infrastructure failures, by kind.", ["kind"], registry=r
        )
        self.grpc_requests = Counter(
            "sandbox_grpc_requests_total", "gRPC requests by method and code.", ["method", "code"], registry=r
        )
        self.pool_target = Gauge(
            "sandbox_pool_target_size", "Warm containers the pool keeps, by runtime.", ["runtime"], registry=r
        )
        # Series exist from the start at 0, so that rate() sees the first increment.
        for kind in ("agent_lost", "run"):
            self.sandbox_errors.labels(kind)
        for reason in ("engine", "hardening"):
            self.container_start_failures.labels(reason)
        for reason in ("unclean", "timeout", "memory_limit", "output_limit", "leftover_processes", "anomaly",
                       "agent_lost", "cancelled", "unresponsive", "lost_idle", "fresh_isolation", "max_runs",
                       "tampered"):
            self.container_recycles.labels(reason)
        for method in ("Execute", "ExecuteStream"):
            for code in ("OK", "INVALID_ARGUMENT", "RESOURCE_EXHAUSTED", "UNAVAILABLE", "DEADLINE_EXCEEDED",
                         "CANCELLED"):
                self.grpc_requests.labels(method, code)
