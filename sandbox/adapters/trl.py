"""A TRL ``reward_funcs`` entry backed by the sandbox service.

TRL's GRPOTrainer calls each reward function as
``reward_func(prompts=..., completions=..., completion_ids=..., **dataset_columns)``
and expects one ``float`` or ``None`` per completion (``None``: no reward, the sample
is dropped from that function's contribution). It names the function in its logs by
``__name__``. ``completions`` are strings, or lists of ``{"role", "content"}`` messages
for conversational datasets. Async reward functions (``async def __call__``) are run
by TRL on its event loop.

Example::

    from trl import GRPOConfig, GRPOTrainer
    from sandbox.adapters.trl import SandboxReward

    reward = SandboxReward("sandbox:50051", tests_column="tests", reward="penalized")
    trainer = GRPOTrainer(model=..., reward_funcs=[reward], args=GRPOConfig(...),
                          train_dataset=dataset)  # dataset has a "tests" column

Each row's tests column holds a spec :func:`sandbox.rewards.suite_from_spec` accepts
(assert list, inputs/outputs, fn_name cases, HumanEval test + entry_point, ...).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from sandbox.client import AsyncClient, Client, RetryPolicy
from sandbox.domain import ExecuteRequest, RunResult
from sandbox.errors import InvalidRequestError
from sandbox.limits import Limits
from sandbox.rewards import REWARDS, PenaltyScheme, penalized_reward, request_for


def _scorer(reward: str | Callable[[RunResult], float | None], scheme: PenaltyScheme) -> Callable[..., Any]:
    if callable(reward):
        return reward
    if reward == "penalized":
        return lambda result: penalized_reward(result, scheme)
    if reward not in REWARDS:
        raise InvalidRequestError(f"reward must be one of {sorted(REWARDS)} or a callable, got {reward!r}")
    return REWARDS[reward]


class _Base:
    def __init__(
        self,
        tests_column: str = "tests",
        reward: str | Callable[[RunResult], float | None] = "binary",
        scheme: PenaltyScheme | None = None,
        limits: Limits | None = None,
        prompt_column: str | None = None,
        window: int = 512,
        name: str = "sandbox_reward",
    ) -> None:
        self.tests_column = tests_column
        self.score = _scorer(reward, scheme or PenaltyScheme())
        self.limits = limits or Limits(timeout_s=10.0)
        self.prompt_column = prompt_column
        self.window = window
        self.__name__ = name

    def _requests(self, completions: Sequence[Any], columns: Mapping[str, Any]) -> list[ExecuteRequest | None]:
        specs = columns.get(self.tests_column)
        if specs is None:
            raise InvalidRequestError(
                f"the dataset has no {self.tests_column!r} column (got {sorted(columns)}); "
                "pass tests_column= the column that holds the tests"
            )
        prompts = columns.get(self.prompt_column) if self.prompt_column else None
        batch = uuid.uuid4().hex[:12]
        requests: list[ExecuteRequest | None] = []
        for i, completion in enumerate(completions):
            prompt = str(prompts[i]) if prompts is not None else ""
            try:
                requests.append(request_for(completion, specs[i], self.limits, f"{batch}-{i}", prompt))
            except InvalidRequestError:
                requests.append(None)  # a row without usable tests earns no reward
        return requests

    def _rewards(
        self, requests: list[ExecuteRequest | None], outcomes: Iterable[tuple[str, Any]]
    ) -> list[float | None]:
        rewards: list[float | None] = [None] * len(requests)
        for rid, outcome in outcomes:
            index = int(rid.rsplit("-", 1)[1])
            rewards[index] = self.score(outcome) if isinstance(outcome, RunResult) else None
        return rewards


class SandboxReward(_Base):
    """Synchronous TRL reward function; see the module docstring."""

    def __init__(self, target: str | Iterable[str], **options: Any) -> None:
        super().__init__(**options)
        self.client = Client(target, retry=RetryPolicy())

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **columns: Any) -> list[float | None]:
        requests = self._requests(completions, columns)
        sent = [r for r in requests if r is not None]
        return self._rewards(requests, self.client.execute_many(sent, window=self.window))


class AsyncSandboxReward(_Base):
    """Asynchronous TRL reward function (``async def __call__``)."""

    def __init__(self, target: str | Iterable[str], **options: Any) -> None:
        super().__init__(**options)
        self._target = target
        self._client: AsyncClient | None = None

    async def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **columns: Any) -> list[float | None]:
        if self._client is None:  # the channel belongs to the loop that first calls us
            self._client = AsyncClient(self._target, retry=RetryPolicy())
        requests = self._requests(completions, columns)
        sent = [r for r in requests if r is not None]
        outcomes = [item async for item in self._client.execute_many(sent, window=self.window)]
        return self._rewards(requests, outcomes)
