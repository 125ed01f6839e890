"""A reward scored by a pool of worker processes: :class:`ProcessPoolReward` (the env's ``reward_workers``).

A reward that reads text on the CPU (VADER, the instruction checkers) runs in one Python thread at ~14,000 responses
a second (VADER, measured on this project's CPU). At GPU rates (10⁵–10⁶ decisions a second, ~30 decisions an
episode) that is a large share of a step. This wrapper splits each batch of finished responses into contiguous
chunks scored at once by ``workers`` processes, each holding its own copy of the reward source, resolved from its
name (a spawned process: safe beside CUDA). The scores are the source's own, in order.

>>> reward = ProcessPoolReward("vader", workers=2)
>>> [round(x, 4) for x in reward(["hi", "hi"], ["I love it!", "I hate it."])]
[0.6696, -0.5719]
>>> reward.close()
"""

from __future__ import annotations

import itertools
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np

from proxy_env.errors import ConfigError

# below this many responses per worker, scoring in the env's own process is faster than a round trip
MIN_CHUNK = 8

_SOURCE: Any = None  # in a worker: its reward source


def _start(spec: str) -> None:
    global _SOURCE
    from proxy_env.rewards.resolve import resolve_reward

    _SOURCE = resolve_reward(spec, device="cpu")


def _score(chunk: tuple[list[str], list[str]]) -> list[float]:
    from proxy_env.rewards import score

    return [float(x) for x in score(_SOURCE, chunk[0], chunk[1])]


class ProcessPoolReward:
    """The reward named ``spec`` scored by ``workers`` processes (contiguous chunks of each batch, in order).

    ``spec`` must name a reward scored on the CPU (``"vader"``, a task's reward): a callable cannot be sent to a
    process, the ``"pairwise"`` judge needs the env's LLM, and a model reward belongs on the LLM's device.
    """

    def __init__(self, spec: str, workers: int) -> None:
        from proxy_env.tasks import REWARDS as TASK_REWARDS

        if not isinstance(spec, str) or spec not in ("default", "vader", *TASK_REWARDS):
            raise ConfigError(
                f"reward_workers={workers} needs a reward scored on the CPU and named by a string ('default'/'vader' or "
                f"a task's reward: {list(TASK_REWARDS)}), got reward={spec!r}; pass reward_workers=0 to score in the "
                "env's process (a model reward runs there, on the LLM's device)."
            )
        from proxy_env.rewards.resolve import resolve_reward

        self.spec, self.workers = spec, workers
        self.local = resolve_reward(spec, device="cpu")  # small batches, and the name checked before any worker starts
        self.pool = ProcessPoolExecutor(
            workers, mp_context=multiprocessing.get_context("spawn"), initializer=_start, initargs=(spec,)
        )

    def __call__(self, prompts: list[str], responses: list[str]) -> list[float]:
        from proxy_env.rewards import score

        n = len(responses)
        if n < 2 * MIN_CHUNK:
            return score(self.local, prompts, responses).tolist()
        parts = min(self.workers, n // MIN_CHUNK)
        bounds = np.linspace(0, n, parts + 1).astype(int)
        chunks = [(list(prompts[a:b]), list(responses[a:b])) for a, b in itertools.pairwise(bounds)]
        return [x for part in self.pool.map(_score, chunks) for x in part]

    def close(self) -> None:
        """Stop the worker processes."""
        self.pool.shutdown(wait=True, cancel_futures=True)

    def __repr__(self) -> str:
        return f"ProcessPoolReward({self.spec!r}, workers={self.workers})"
