"""Host-side CPU per run: what the client and the server processes spend, not the containers.

Streams HumanEval's canonical solutions through ``Client.execute_many`` to a server with a
real warm pool, and reads CPU time (user + system, all threads) from the kernel, so the
figure is robust to whatever else the machine runs. Two layouts:

- ``embedded`` (default): the server on a background thread of this process, as
  ``sandbox run`` and ``sandbox eval`` do; one figure, client and server together;
- ``split``: ``sandbox serve`` as a subprocess, so client and server are measured
  apart (the server from ``/proc/PID/stat``, the client from its own rusage).

Each of ``--rounds`` rounds measures ``--runs`` runs after a warm-up; the median and
the spread of the rounds are printed. ``--profile FILE`` writes cProfiles of the
embedded layout: ``FILE.server`` (the server's event-loop thread) and ``FILE.client``.

    .venv/bin/python bench/host_cost.py [--layout embedded|split] [--runs 1640] [--rounds 3]
"""

from __future__ import annotations

import argparse
import cProfile
import itertools
import os
import resource
import statistics
import sys
import tempfile
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from run import served  # noqa: E402 - bench/run.py: ``sandbox serve`` as a subprocess

from sandbox.client import Client  # noqa: E402
from sandbox.domain import ExecuteRequest, RunResult, Status  # noqa: E402
from sandbox.humaneval import build_request, read_problems  # noqa: E402
from sandbox.limits import Limits  # noqa: E402
from sandbox.server.app import EmbeddedServer  # noqa: E402
from sandbox.server.logs import configure  # noqa: E402
from sandbox.server.settings import Settings  # noqa: E402

_TICK = os.sysconf("SC_CLK_TCK")


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _proc_cpu(pid: int) -> float:
    # utime and stime are fields 14 and 15; the command name (field 2) may hold spaces.
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def _requests(count: int, tag: str) -> list[ExecuteRequest]:
    problems = list(read_problems().values())
    limits = Limits(timeout_s=3.0)
    return [
        build_request(p, p["canonical_solution"], limits, request_id=f"{tag}-{i}")
        for i, p in enumerate(itertools.islice(itertools.cycle(problems), count))
    ]


def _drive(client: Client, requests: list[ExecuteRequest], window: int) -> None:
    bad = 0
    for _, outcome in client.execute_many(requests, window=window):
        if not isinstance(outcome, RunResult) or outcome.status is not Status.PASSED:
            bad += 1
    if bad:
        raise SystemExit(f"{bad} of {len(requests)} runs did not pass")


def _rounds(client: Client, args: argparse.Namespace, server_pid: int | None) -> list[tuple[float, float]]:
    """(client or whole-process ms per run, server ms per run or nan) for each round."""
    _drive(client, _requests(4 * args.pool_size, "warm"), args.window)
    figures = []
    for r in range(args.rounds):
        requests = _requests(args.runs, f"r{r}")
        own, server = _own_cpu(), _proc_cpu(server_pid) if server_pid else 0.0
        _drive(client, requests, args.window)
        own = (_own_cpu() - own) / args.runs * 1000
        server = (_proc_cpu(server_pid) - server) / args.runs * 1000 if server_pid else float("nan")
        figures.append((own, server))
        print(f"  round {r + 1}: {own:.3f} ms" + (f" client, {server:.3f} ms server" if server_pid else ""),
              flush=True)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layout", choices=("embedded", "split"), default="embedded")
    parser.add_argument("--runs", type=int, default=1640)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pool-size", type=int, default=8)
    parser.add_argument("--window", type=int, default=256)
    parser.add_argument("--profile", metavar="FILE",
                        help="cProfiles of the embedded layout: FILE.server (loop thread), FILE.client")
    args = parser.parse_args()
    configure("json", "warning")
    pool_name = f"host-cost-{os.getpid()}"
    if args.layout == "split":
        with tempfile.TemporaryDirectory() as logdir, served("runc", args.pool_size, pool_name, Path(logdir)) as (
            proc, target, _metrics
        ), Client(target) as client:
            pid = proc.pid
            client.wait_ready()
            figures = _rounds(client, args, pid)
    else:
        settings = Settings.from_env({}, listen="127.0.0.1:0", pool_size=args.pool_size, pool_name=pool_name)
        with EmbeddedServer(settings) as srv, Client(srv.target) as client:
            client.wait_ready()
            if args.profile:
                # cProfile hooks one thread: one profiler for the server's loop thread
                # (enabled from inside the loop), one for this thread (the client).
                server_prof, client_prof = cProfile.Profile(), cProfile.Profile()
                srv._loop.call_soon_threadsafe(server_prof.enable)
                client_prof.enable()
            figures = _rounds(client, args, None)
            if args.profile:
                client_prof.disable()
                done = threading.Event()
                srv._loop.call_soon_threadsafe(lambda: (server_prof.disable(), done.set()))
                done.wait(10)
                server_prof.dump_stats(f"{args.profile}.server")
                client_prof.dump_stats(f"{args.profile}.client")
    own = [f[0] for f in figures]
    label = "client" if args.layout == "split" else "process (client + server)"
    print(f"{label}: median {statistics.median(own):.3f} ms CPU per run (min {min(own):.3f}, max {max(own):.3f})")
    if args.layout == "split":
        server = [f[1] for f in figures]
        print(f"server: median {statistics.median(server):.3f} ms CPU per run "
              f"(min {min(server):.3f}, max {max(server):.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
