"""What the env subtracts from or divides into a terminal reward: baselines that cut the variance.

* :class:`ReferenceBaseline` (``reward_baseline="reference"``): the reward of the frozen LLM's own greedy
  response to the same prompt (ChatGLM-RLHF's reference baseline), cached per prompt.
* :class:`RunningMeanStd` (``reward_normalize=True``): running statistics that standardise terminal rewards.
"""

from __future__ import annotations

import math
import sys
from typing import Any

import numpy as np

from proxy_env.errors import RewardError
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


class RunningMeanStd:
    """Welford's running mean and standard deviation of a stream of finite floats, safe for any of them.

    * **No overflow.** Values are held in units of ``scale``, the largest magnitude kept so far (at
      least 1), so rewards of ±1e308 give finite statistics; plain Welford squares them (inf, then NaN).
      While every value has magnitude <= 1 the scale stays 1 and this is plain Welford.
    * **No collapse.** Once the spread is known (two values, std > 0), a value more than ``clip``
      standard deviations from the mean enters the statistics as ``mean ± clip·std`` (winsorised),
      so one extreme reward (±1e200) cannot inflate the std and flatten every later normalised
      reward to 0. The first two values, and a value arriving while all earlier ones were equal,
      are kept as they are: there is no spread yet to judge them by.

    ``std`` is 1 until two values have been seen, and at least ``eps``. :meth:`normalize`
    standardises and clips to ``±clip``; it never returns NaN or inf.
    """

    def __init__(self, eps: float = 1e-4, clip: float = 10.0) -> None:
        self.count, self.eps, self.clip = 0, eps, clip
        self._scale, self._mean, self._m2 = 1.0, 0.0, 0.0  # mean and M2 in units of _scale (M2 in _scale**2)

    @property
    def mean(self) -> float:
        return self._mean * self._scale

    @property
    def m2(self) -> float:
        with np.errstate(over="ignore"):
            return float(np.float64(self._m2) * self._scale * self._scale)

    def _std_units(self) -> float:
        if self.count < 2:
            return 1.0 / self._scale
        return max(math.sqrt(self._m2 / (self.count - 1)), self.eps / self._scale)

    @property
    def std(self) -> float:
        return min(self._std_units() * self._scale, sys.float_info.max)

    def update(self, values: np.ndarray) -> None:
        for value in np.asarray(values, dtype=np.float64).reshape(-1):
            if not math.isfinite(value):
                raise RewardError(f"RunningMeanStd.update got {value}; rewards must be finite.")
            x = float(value) / self._scale  # finite: |value| is finite and _scale >= 1
            if self.count > 1:
                spread = math.sqrt(self._m2 / (self.count - 1))
                if spread > 0:
                    x = min(max(x, self._mean - self.clip * spread), self._mean + self.clip * spread)
            if abs(x) > 1.0:  # a new largest magnitude: re-express everything in its units
                shrink = 1.0 / abs(x)
                self._mean *= shrink
                self._m2 *= shrink * shrink
                self._scale *= abs(x)  # = |the value kept|, so finite
                x = math.copysign(1.0, x)
            self.count += 1
            delta = x - self._mean
            self._mean += delta / self.count
            self._m2 += delta * (x - self._mean)

    def normalize(self, values: np.ndarray) -> np.ndarray:
        """``(values - mean) / std`` clipped to ``±clip``, computed in units of ``scale`` (finite for any finite input)."""
        with np.errstate(over="ignore", invalid="ignore"):
            z = (np.asarray(values, dtype=np.float64) / self._scale - self._mean) / self._std_units()
        return np.clip(np.nan_to_num(z, nan=0.0), -self.clip, self.clip)
