"""A verl ``compute_score`` backed by the sandbox service.

verl's reward manager calls ``compute_score(data_source, solution_str, ground_truth,
extra_info=None)`` for each response and takes a float (or a dict with ``"score"``).
Point verl at this module's function in its config::

    custom_reward_function:
      path: /path/to/site-packages/sandbox/adapters/verl.py
      name: compute_score

and set ``SANDBOX_TARGET`` (``HOST:PORT``, or several comma-separated) in the
workers' environment. ``ground_truth`` holds the tests in any shape
:func:`sandbox.rewards.suite_from_spec` accepts: assert statements (a list, or lines
of a string), or input/output cases (``{"inputs": [...], "outputs": [...]}``, with
``"fn_name"`` for call-based cases), as a dict or as JSON text.

verl has no "no reward" value: a sample whose run keeps failing for infrastructure
reasons after retries raises :class:`~sandbox.errors.InfrastructureError` instead of
being scored 0.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from sandbox.client import Client, RetryPolicy
from sandbox.errors import InfrastructureError, InvalidRequestError
from sandbox.limits import Limits
from sandbox.rewards import binary_reward, fraction_reward, request_for

_clients: dict[str, Client] = {}
_lock = threading.Lock()


def _client(target: str) -> Client:
    with _lock:
        if target not in _clients:
            addresses = [t.strip() for t in target.split(",") if t.strip()]
            _clients[target] = Client(addresses if len(addresses) > 1 else addresses[0], retry=RetryPolicy())
        return _clients[target]


def compute_score(
    data_source: str, solution_str: str, ground_truth: Any, extra_info: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Runs ``solution_str`` against ``ground_truth``; returns verl's score dict.

    ``score`` is 1.0 when every test passed, else 0.0; ``pass_fraction`` is the dense
    share of passed tests and ``status`` the sandbox verdict, for logging.
    ``extra_info`` may carry ``timeout_s`` and ``memory_mb``.
    """
    target = os.environ.get("SANDBOX_TARGET", "127.0.0.1:50051")
    info = extra_info or {}
    limits = Limits(timeout_s=float(info.get("timeout_s", 10.0)), memory_mb=int(info.get("memory_mb", 512)))
    try:
        request = request_for(solution_str, ground_truth, limits)
    except InvalidRequestError as exc:
        raise InvalidRequestError(f"{data_source}: ground_truth is not a test spec: {exc}") from None
    result = _client(target).execute(request)
    score = binary_reward(result)
    if score is None:
        raise InfrastructureError(f"the sandbox kept failing for this sample: {result.message}")
    return {"score": score, "pass_fraction": fraction_reward(result), "status": result.status.value}
