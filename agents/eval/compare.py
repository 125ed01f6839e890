"""Paired comparison of agents on the same held-out prompts and seeds (used by the demo and benchmarks).

Every agent generates one response per prompt with the same env seed, so differences between
agents are paired per prompt; the 95% confidence intervals use the normal approximation
(``mean ± 1.96 · sd / sqrt(n)``), fine for the n >= 50 prompts this is run on.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from agents.generate import Generation, ProxyGenerator
from proxy_env.engine.lm import FrozenLM
from proxy_env.rewards import RewardFn, score


class AgentResult(NamedTuple):
    """One agent's responses and their rewards."""

    name: str
    generations: list[Generation]
    rewards: np.ndarray  # (n,) one per prompt
    seconds: float

    @property
    def rejection_rate(self) -> float:
        decisions = sum(g.decisions for g in self.generations)
        return sum(g.rejections for g in self.generations) / max(decisions, 1)

    @property
    def mean_length(self) -> float:
        return float(np.mean([len(g.token_ids) for g in self.generations]))


def mean_ci(values: np.ndarray) -> tuple[float, float, float]:
    """Mean and its 95% confidence interval (normal approximation)."""
    values = np.asarray(values, dtype=np.float64)
    half = 1.96 * values.std(ddof=1) / math.sqrt(len(values)) if len(values) > 1 else float("nan")
    return float(values.mean()), float(values.mean() - half), float(values.mean() + half)


def paired_gain(rewards: np.ndarray, base: np.ndarray) -> tuple[float, float, float, float]:
    """Mean paired difference ``rewards - base`` with its 95% CI, and the win rate (ties count half)."""
    d, lo, hi = mean_ci(np.asarray(rewards) - np.asarray(base))
    return d, lo, hi, float(np.mean(rewards > base) + 0.5 * np.mean(rewards == base))


def run_agents(
    lm: FrozenLM,
    agents: dict[str, Any],
    prompts: Sequence[str],
    reward_fn: RewardFn,
    *,
    seed: int = 0,
    batch_size: int = 32,
    **env_kwargs: Any,
) -> list[AgentResult]:
    """Generate with each agent on ``prompts`` (same seeds) and score every response."""
    results = []
    for name, agent in agents.items():
        start = time.perf_counter()
        generations = ProxyGenerator(lm, agent, batch_size=batch_size, seed=seed, **env_kwargs).generate(list(prompts))
        rewards = score(reward_fn, list(prompts), [g.text for g in generations])
        results.append(AgentResult(name, generations, rewards, time.perf_counter() - start))
    return results


def table(results: list[AgentResult], reference: str | None = None) -> str:
    """A Markdown table: reward with 95% CI, paired difference to ``reference``, rejection rate, length."""
    base = next((r for r in results if r.name == reference), None)
    lines = [
        "| agent | mean reward [95% CI] | vs reference [95% CI] | win rate | rejection rate | tokens | s/response |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        m, lo, hi = mean_ci(r.rewards)
        diff = win = "—"
        if base is not None and r is not base:
            d, dlo, dhi, w = paired_gain(r.rewards, base.rewards)
            diff, win = f"{d:+.3f} [{dlo:+.3f}, {dhi:+.3f}]", f"{w:.2f}"
        lines.append(
            f"| {r.name} | {m:+.3f} [{lo:+.3f}, {hi:+.3f}] | {diff} | {win} | {r.rejection_rate:.3f} | "
            f"{r.mean_length:.1f} | {r.seconds / len(r.rewards):.2f} |"
        )
    return "\n".join(lines)
