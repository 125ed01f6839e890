"""Reward transforms of the env that need only the step's ``(reward, info)``: Gymnasium vector wrappers.

The env keeps what needs its internal state (potential-based shaping, the exact KL charge, the
reference baseline); what a wrapper can do from the outside is a wrapper, as in
``gymnasium/wrappers/vector/``. Normalisation is Gymnasium's ``NormalizeReward`` or SB3's ``VecNormalize``.

>>> import gymnasium as gym, numpy as np, proxy_env
>>> from proxy_env.engine.tiny import tiny_lm
>>> venv = RejectCost(gym.make_vec(proxy_env.ENV_ID, num_envs=2, vectorization_mode="vector_entry_point",
...                                model=tiny_lm(), prompts=["Hi!"], max_new_tokens=4,
...                                reward=lambda p, r: [0.0] * len(r)), cost=0.1)
>>> _ = venv.reset(seed=0)
>>> _, reward, *_ = venv.step(np.array([0, 1]))  # env 0 rejects, env 1 accepts
>>> reward.tolist()
[-0.1, 0.0]
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np

from proxy_env.errors import ConfigError


class RejectCost(gym.vector.VectorWrapper):
    """Subtract ``cost`` from the reward of every step whose action rejected the candidate (``info["rejected"]``).

    A forced candidate's step (``forced_steps``) and an autoreset step reject nothing, so they cost nothing.
    At episode end ``info["final_info"]["reject_cost"]`` holds the episode's total (SAME_STEP autoreset;
    with NEXT_STEP, ``info["reject_cost"]``).
    """

    def __init__(self, env: gym.vector.VectorEnv, cost: float) -> None:
        if isinstance(cost, bool) or not isinstance(cost, (int, float)) or not math.isfinite(cost) or cost < 0:
            raise ConfigError(f"cost={cost!r} must be a finite float >= 0 (the reward subtracted per rejection).")
        super().__init__(env)
        self.cost = float(cost)
        self._paid = np.zeros(self.num_envs)

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        mask = (kwargs.get("options") or {}).get("reset_mask")
        self._paid[slice(None) if mask is None else np.asarray(mask)] = 0.0
        return self.env.reset(**kwargs)

    def step(self, actions: Any) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(actions)
        if "rejected" not in info:
            raise ConfigError(
                "RejectCost needs info['rejected'] from the env it wraps (proxy_env's ProxyRLHFVectorEnv gives it); "
                "wrap that env directly, or below wrappers that drop info keys."
            )
        charge = self.cost * np.asarray(info["rejected"], dtype=np.float64)
        self._paid += charge
        ended = np.asarray(terminated) | np.asarray(truncated)
        if ended.any():
            end = info.get("final_info", info)  # SAME_STEP: the ended episodes' info is final_info
            end["reject_cost"], end["_reject_cost"] = np.where(ended, self._paid, 0.0), ended.copy()
            self._paid[ended] = 0.0
        return obs, np.asarray(reward, dtype=np.float64) - charge, terminated, truncated, info
