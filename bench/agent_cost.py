"""CPU that the in-container agent (PID 1) and its zygote spend per run, read from the host.

Runs HumanEval's canonical solutions through the real pool (hardened containers, agent,
zygote), one sequential stream of runs per container with every container busy at once
(the pool saturated), and reads the CPU time of each container's agent and zygote from
the host's /proc before and after: ``se.sum_exec_runtime`` from ``/proc/PID/sched``
(nanoseconds) where the kernel has it, else utime+stime from ``/proc/PID/stat``, whose
total the kernel keeps equal to the precise runtime. The run's own child is not counted:
a process's figures never include its children. Each round is one figure per role;
repeat rounds and compare medians, never wall-clock throughput (the machine is shared).

    .venv/bin/python bench/agent_cost.py [--containers 2] [--passes 3] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sandbox.humaneval import build_request, read_problems  # noqa: E402
from sandbox.limits import Limits  # noqa: E402
from sandbox.server.backend import DockerBackend  # noqa: E402
from sandbox.server.image import ensure_image  # noqa: E402
from sandbox.server.jobs import PYTHON_MAGIC, prepare  # noqa: E402
from sandbox.server.metrics import Metrics  # noqa: E402
from sandbox.server.pool import Container, Pool  # noqa: E402
from sandbox.server.settings import Settings  # noqa: E402

_HZ = os.sysconf("SC_CLK_TCK")


def _cpu_s(pid: int) -> float:
    """CPU time of one (single-threaded) host process, in seconds."""
    try:
        for line in Path(f"/proc/{pid}/sched").read_text().splitlines():
            if line.startswith("se.sum_exec_runtime"):
                return float(line.split(":")[1]) / 1000  # the file gives milliseconds
    except OSError:
        pass
    stat = Path(f"/proc/{pid}/stat").read_text()
    rest = stat[stat.rindex(")") + 2 :].split()
    return (int(rest[11]) + int(rest[12])) / _HZ


def _agent_and_zygote(host_pid: int) -> tuple[int, int]:
    """Host pids of a container's agent and of its zygote (the agent's only own child)."""
    children = Path(f"/proc/{host_pid}/task/{host_pid}/children").read_text().split()
    if len(children) != 1:
        raise RuntimeError(f"agent {host_pid} has children {children}, expected the zygote alone")
    return host_pid, int(children[0])


async def _measure(containers: int, passes: int, rounds: int) -> list[dict[str, float]]:
    runs_per_round = 164 * passes  # HumanEval's problems, each container runs them all
    settings = Settings.from_env(
        {}, pool_size=containers, pool_name=f"bench-agent-{os.getpid()}",
        max_runs_per_container=runs_per_round * (rounds + 1) + 10,
    )
    backend = DockerBackend()
    image = await asyncio.to_thread(ensure_image, backend.api, "")
    pool = Pool(settings, backend, image, Metrics())
    await pool.start()
    requests = [
        build_request(p, p["canonical_solution"], Limits(timeout_s=5), request_id="c")
        for p in read_problems().values()
    ] * passes
    figures: list[dict[str, float]] = []
    try:
        held: list[Container] = [await pool.acquire() for _ in range(containers)]
        pids = []
        for container in held:
            info = await backend.inspect(container.id)
            pids.append(_agent_and_zygote(int(info["State"]["Pid"])))
        unclean = 0

        async def stream(container: Container) -> None:
            nonlocal unclean
            for request in requests:
                job, _ = prepare(request, container.bytecode == PYTHON_MAGIC)
                facts = await container.run(job, request.id, 60)
                if not facts.get("clean") or facts.get("anomaly"):
                    unclean += 1

        try:
            await asyncio.gather(*(stream(c) for c in held))  # warm: caches, page faults
            for _ in range(rounds):
                before = [(_cpu_s(a), _cpu_s(z)) for a, z in pids]
                await asyncio.gather(*(stream(c) for c in held))
                after = [(_cpu_s(a), _cpu_s(z)) for a, z in pids]
                runs = runs_per_round * containers
                figures.append({
                    "agent ms/run": sum(b[0] - a[0] for a, b in zip(before, after, strict=True)) / runs * 1000,
                    "zygote ms/run": sum(b[1] - a[1] for a, b in zip(before, after, strict=True)) / runs * 1000,
                })
        finally:
            for container in held:
                pool.release(container, reusable=False, reason="max_runs")
        if unclean:
            raise RuntimeError(f"{unclean} runs were not clean: the figures would not be comparable")
    finally:
        await pool.close()
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--containers", type=int, default=2, help="containers run at once")
    parser.add_argument("--passes", type=int, default=3, help="passes over HumanEval per round")
    parser.add_argument("--rounds", type=int, default=3, help="measured rounds")
    args = parser.parse_args()
    figures = asyncio.run(_measure(args.containers, args.passes, args.rounds))
    for i, row in enumerate(figures, 1):
        print(f"round {i}: " + "  ".join(f"{k} {v:.3f}" for k, v in row.items()))
    for key in figures[0]:
        print(f"{'median ' + key:>22}: {statistics.median(r[key] for r in figures):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
