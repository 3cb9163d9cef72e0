"""How many requests one asyncio process keeps in flight, and whether its loop stays live.

Starts an embedded server (or uses --target), then streams N requests through one
AsyncClient with a large window while a ticker task measures event-loop lag. Requests
sleep briefly in the sandbox so that many wait at once. Prints the peak number in
flight (sent, not yet answered), throughput and the worst loop lag.

    .venv/bin/python bench/async_inflight.py [--requests 3000] [--window 1000] [--target HOST:PORT]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sandbox.client import AsyncClient  # noqa: E402
from sandbox.domain import ExecuteRequest, HumanEvalTests, RunResult  # noqa: E402
from sandbox.limits import Limits  # noqa: E402

PROGRAM = "import time\ndef f(x):\n    time.sleep(0.05)\n    return x + 1\n"
TEST = "def check(candidate):\n    assert candidate(1) == 2\n"


@contextlib.contextmanager
def _server(args: argparse.Namespace) -> Iterator[str]:
    if args.target:
        yield args.target
        return
    from sandbox.server.app import EmbeddedServer
    from sandbox.server.settings import Settings

    settings = Settings.from_env(os.environ, listen="127.0.0.1:0", pool_size=args.pool_size,
                                 pool_name=f"bench-async-{os.getpid()}")
    with EmbeddedServer(settings) as srv:
        yield srv.target


async def _drive(target: str, n: int, window: int) -> dict[str, float]:
    sent = answered = peak = 0
    lag = 0.0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal lag
        while not stop.is_set():
            t = time.perf_counter()
            await asyncio.sleep(0.005)
            lag = max(lag, time.perf_counter() - t - 0.005)

    def requests() -> Iterator[ExecuteRequest]:
        nonlocal sent, peak
        for i in range(n):
            sent += 1
            peak = max(peak, sent - answered)
            yield ExecuteRequest(PROGRAM, HumanEvalTests(TEST, "f"), Limits(timeout_s=5), id=f"a{os.getpid()}-{i}")

    tick = asyncio.create_task(ticker())
    started = time.perf_counter()
    passed = 0
    async with AsyncClient(target) as client:
        async for _, outcome in client.execute_many(requests(), window=window):
            answered += 1
            passed += isinstance(outcome, RunResult) and outcome.passed
    elapsed = time.perf_counter() - started
    stop.set()
    await tick
    return {"requests": n, "passed": passed, "peak_in_flight": peak, "seconds": elapsed,
            "runs_per_s": n / elapsed, "max_loop_lag_ms": lag * 1000}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--window", type=int, default=1000)
    parser.add_argument("--pool-size", type=int, default=4)
    parser.add_argument("--target", default="")
    args = parser.parse_args()
    with _server(args) as target:
        figures = asyncio.run(_drive(target, args.requests, args.window))
    for key, value in figures.items():
        print(f"{key:>16}: {value:.1f}" if isinstance(value, float) else f"{key:>16}: {value}")
    ok = figures["passed"] == figures["requests"] and figures["peak_in_flight"] >= 500
    print("in-flight target (>= 500, all passed):", "met" if ok else "NOT met")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
