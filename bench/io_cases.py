"""io_cases: one request with N cases against N requests of one case each.

    .venv/bin/python bench/io_cases.py [--cases 100] [--repeat 3] [--pool-size 4] [--runtime runc]

One program (read two integers, print their sum) and N stdin -> stdout cases, through a
real embedded server (warm pool, gRPC, the judge), all in one process run:

- ``batched``: ONE Execute with all N cases; the program is compiled once and each case
  runs in a process forked from the run's harness;
- ``separate, sequential``: N Execute calls of one case each, one after the other (the
  same amount of parallelism as the batched run: none);
- ``separate, streamed``: the same N requests on one ExecuteStream with ``pool-size`` in
  flight (what a client that splits its cases would do to win time back).

Every result must be PASSED (anything else is printed and the exit status is 1). Each
figure is the median of ``--repeat`` rounds after a warm-up; the printed ratios are
separate / batched. Takes well under a minute with the defaults.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable

from sandbox.client import Client, Refused
from sandbox.domain import ExecuteRequest, IoCase, IoTests, RunResult, Status
from sandbox.limits import Limits
from sandbox.server.app import EmbeddedServer
from sandbox.server.logs import configure
from sandbox.server.settings import Settings

PROGRAM = "a, b = map(int, input().split())\nprint(a + b)\n"
LIMITS = Limits(timeout_s=30.0)


def cases(n: int) -> tuple[IoCase, ...]:
    """N distinct cases with their expected outputs."""
    return tuple(IoCase(f"{i} {2 * i}\n", f"{3 * i}\n") for i in range(n))


def check(results: list[RunResult | Refused], what: str) -> int:
    """Prints every non-PASSED result; returns how many there were."""
    bad = [r for r in results if isinstance(r, Refused) or r.status is not Status.PASSED]
    for r in bad[:5]:
        print(f"  {what}: unexpected {r}", file=sys.stderr)
    return len(bad)


def timed(fn: Callable[[], list[RunResult | Refused]], what: str, repeat: int) -> tuple[float, int]:
    """Median wall time of ``repeat`` calls of ``fn`` and the number of bad results."""
    walls, bad = [], 0
    for _ in range(repeat):
        started = time.perf_counter()
        results = fn()
        walls.append(time.perf_counter() - started)
        bad += check(results, what)
    return statistics.median(walls), bad


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--cases", type=int, default=100, help="number of io cases (default 100)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds per figure; the median is shown (default 3)")
    parser.add_argument("--pool-size", type=int, default=4, help="warm containers (default 4)")
    parser.add_argument("--runtime", default="runc", choices=["runc", "runsc"])
    args = parser.parse_args()
    configure(level="warning")

    all_cases = cases(args.cases)
    # No request ids: an id is an idempotency key, and a repeated one would be answered
    # from the server's cache instead of running (execute_many makes up fresh ones).
    batched = ExecuteRequest(PROGRAM, IoTests(all_cases), LIMITS)
    singles = [ExecuteRequest(PROGRAM, IoTests((c,)), LIMITS) for c in all_cases]

    settings = Settings.from_env(
        {}, listen="127.0.0.1:0", pool_size=args.pool_size, runtime=args.runtime,
        pool_name=f"bench-io-{os.getpid()}",
    )
    started = time.perf_counter()
    with EmbeddedServer(settings) as srv, Client(srv.target) as client:
        client.wait_ready()
        print(f"server up in {time.perf_counter() - started:.2f} s "
              f"({args.runtime}, pool of {args.pool_size}, {args.cases} cases, median of {args.repeat})")

        def one_request() -> list[RunResult | Refused]:
            return [client.execute(batched, timeout_s=120)]

        def sequential() -> list[RunResult | Refused]:
            return [client.execute(r, timeout_s=120) for r in singles]

        def streamed() -> list[RunResult | Refused]:
            return [res for _, res in client.execute_many(singles, window=args.pool_size)]

        # Warm-up: every container forks a few runs before anything is timed.
        check([res for _, res in client.execute_many(singles[: 4 * args.pool_size], window=args.pool_size)], "warm-up")
        check(one_request(), "warm-up")

        t_batched, bad_b = timed(one_request, "batched", args.repeat)
        t_seq, bad_s = timed(sequential, "sequential", args.repeat)
        t_stream, bad_t = timed(streamed, "streamed", args.repeat)

    n = args.cases
    print(f"batched   : 1 request x {n} cases        {t_batched * 1000:8.1f} ms  ({t_batched / n * 1000:.2f} ms/case)")
    print(f"separate  : {n} requests x 1, sequential {t_seq * 1000:8.1f} ms  ({t_seq / n * 1000:.2f} ms/case)"
          f"  ratio {t_seq / t_batched:.2f}x")
    print(f"separate  : {n} requests x 1, window {args.pool_size:<2}  {t_stream * 1000:8.1f} ms  "
          f"({t_stream / n * 1000:.2f} ms/case)  ratio {t_stream / t_batched:.2f}x")
    bad = bad_b + bad_s + bad_t
    if bad:
        print(f"{bad} results were not PASSED", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
