"""What the env subtracts from a terminal reward: :class:`ReferenceBaseline` (``reward_baseline="reference"``).

The reward of the frozen LLM's own greedy response to the same prompt (ChatGLM-RLHF's reference
baseline), cached per prompt. Normalising rewards is left to Gymnasium's ``NormalizeReward`` and SB3's
``VecNormalize``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from proxy_env.rewards.builtin import RewardFn, score


class ReferenceBaseline:
    """``b(x)``: the reward of the frozen LLM's own greedy response to prompt ``x``, cached per prompt.

    This is the reference baseline of ChatGLM-RLHF: subtracting it removes the part of the reward
    that depends on the prompt alone, which cuts the variance of the policy gradient.
    """

    def __init__(self, lm: Any, reward_fn: RewardFn, config: Any, batch_size: int = 16) -> None:
        self.lm, self.reward_fn, self.config, self.batch_size = lm, reward_fn, config, batch_size
        self.cache: dict[int, float] = {}
        self.responses: dict[int, str] = {}

    def __call__(self, prompt_indices: list[int], prompts: list[str]) -> np.ndarray:
        todo = {i: p for i, p in zip(prompt_indices, prompts) if i not in self.cache}
        items = list(todo.items())
        for start in range(0, len(items), self.batch_size):
            chunk = items[start : start + self.batch_size]
            texts = self.greedy([p for _, p in chunk])
            values = score(self.reward_fn, [p for _, p in chunk], texts)
            for (i, _), text, value in zip(chunk, texts, values):
                self.cache[i], self.responses[i] = float(value), text
        return np.array([self.cache[i] for i in prompt_indices])

    def greedy(self, prompts: list[str]) -> list[str]:
        """Greedy responses of the frozen LLM (batched), ``max_new_tokens`` at most."""
        return self.lm.generate(prompts, max_new_tokens=self.config.max_new_tokens, do_sample=False)
