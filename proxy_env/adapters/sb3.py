"""The stable-baselines3 adapter: a :class:`~stable_baselines3.common.vec_env.VecEnv` over our vector env.

SB3 2.x does not accept a Gymnasium ``VectorEnv``; it needs its own ``VecEnv`` with numpy batches
and one info dict per env. :class:`SB3VecEnv` only translates: the batched MDP stays in
:class:`~proxy_env.vector.vector_env.ProxyRLHFVectorEnv`, which must run with ``SAME_STEP`` autoreset (the
semantics SB3 expects: a finished env returns its next episode's first observation, the last one
goes to ``infos[i]["terminal_observation"]``).

This module and ``agents/`` are the only places that import stable-baselines3.

>>> import gymnasium as gym, numpy as np, proxy_env
>>> from proxy_env.adapters.sb3 import SB3VecEnv
>>> from proxy_env.engine.tiny import tiny_lm
>>> venv = gym.make_vec("proxy_env/ProxyRLHF-v1", num_envs=2, vectorization_mode="vector_entry_point",
...                     model=tiny_lm(), prompts=["Hi!"], max_new_tokens=2, reward=lambda p, r: [1.0] * len(r))
>>> env = SB3VecEnv(venv)
>>> env.seed(0)
[0, 1]
>>> obs = env.reset()
>>> obs.shape, obs.dtype
((2, 64), dtype('float32'))
>>> for _ in range(2):
...     obs, rewards, dones, infos = env.step(np.ones(2, dtype=np.int64))
>>> bool(dones.all()), infos[0]["episode"]["r"], infos[0]["episode"]["l"], "terminal_observation" in infos[0]
(True, 1.0, 2, True)
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode
from stable_baselines3.common.vec_env import VecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvObs, VecEnvStepReturn

from proxy_env.adapters import check_adapted
from proxy_env.errors import ConfigError, StateError
from proxy_env.vector.infos import END_KEYS, STEP_KEYS, TEXT_END_KEYS

# per-step info keys copied into each env's info dict (they describe the candidate now on offer)
STEP_INFO_KEYS = STEP_KEYS
# end-of-episode keys copied from ``final_info`` into the info dict of a finished env (the text ones,
# ``prompt``, ``response`` and ``response_ids``, are there only when the env has ``info_text=True``;
# the KL sums only when the env charges a KL penalty)
FINAL_INFO_KEYS = TEXT_END_KEYS + END_KEYS + ("kl_paid", "kl_exact_paid", "reject_cost")


class SB3VecEnv(VecEnv):
    """A stable-baselines3 ``VecEnv`` view of a Gymnasium vector env with ``SAME_STEP`` autoreset.

    Per-env infos of a finished episode hold ``terminal_observation`` (the last observation),
    ``TimeLimit.truncated`` (Gymnasium's ``truncated``: SB3 bootstraps the value there; our env never
    truncates, since the response budget is part of the task, but a wrapper's time limit would), ``episode`` = ``{"r": return,
    "l": agent decisions, "t": seconds since the adapter was made}`` (what SB3's
    ``rollout/ep_rew_mean`` and ``ep_len_mean`` read, so no ``VecMonitor`` is needed),
    ``rejection_rate`` (rejections / decisions), ``response_length`` (tokens) and the env's
    end-of-episode fields (``reward_raw``, ``num_rejections``...; ``prompt``, ``response`` and
    ``response_ids`` when the env has ``info_text=True``). Every info holds the candidate now on
    offer (``token_id``, ``logprob``, ...).

    Args:
        venv: a vector env made with ``gym.make_vec(..., vectorization_mode="vector_entry_point")``
            (or a :class:`~proxy_env.vector.vector_env.ProxyRLHFVectorEnv`), ``autoreset_mode=SAME_STEP``;
            another mode raises :class:`~proxy_env.errors.AutoresetModeError`.
    """

    def __init__(self, venv: gym.vector.VectorEnv) -> None:
        check_adapted(
            "SB3VecEnv",
            venv,
            AutoresetMode.SAME_STEP,
            "SB3 takes the observation a finished env returns as the first of its next episode (NEXT_STEP adds a "
            "transition per episode whose action is ignored; DISABLED never resets)",
        )
        self.venv = venv
        super().__init__(venv.num_envs, venv.single_observation_space, venv.single_action_space)
        self._actions: np.ndarray | None = None
        self._returns = np.zeros(self.num_envs, dtype=np.float64)
        self._lengths = np.zeros(self.num_envs, dtype=np.int64)
        self._t_start = time.time()

    @property
    def unwrapped(self) -> Any:
        """The underlying :class:`~proxy_env.vector.vector_env.ProxyRLHFVectorEnv`."""
        return self.venv.unwrapped

    # ------------------------------------------------------------------ stepping
    def reset(self) -> VecEnvObs:
        """Reset every env; seeds set by :meth:`seed` apply to this reset only (then cleared)."""
        seeds = None if any(s is None for s in self._seeds) else [int(s) for s in self._seeds]  # type: ignore[arg-type]
        options = self._options[0] if self._options and self._options[0] else None
        # Gymnasium's vector reset takes one seed per env (documented); its annotation says int only
        obs, info = self.venv.reset(seed=seeds, options=options)  # type: ignore[arg-type]
        self._reset_seeds()
        self._reset_options()
        self._returns[:] = 0.0
        self._lengths[:] = 0
        self._actions = None
        self.reset_infos = self._per_env(info)
        return np.asarray(obs, dtype=np.float32)

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions).reshape(self.num_envs)

    def step_wait(self) -> VecEnvStepReturn:
        if self._actions is None:
            raise StateError("step_wait() called without step_async(); call step(actions) or step_async first.")
        obs, rewards, terminated, truncated, info = self.venv.step(self._actions)
        self._actions = None
        rewards = np.asarray(rewards, dtype=np.float64)
        dones = np.asarray(terminated | truncated, dtype=bool)
        self._returns += rewards
        self._lengths += 1
        infos = self._per_env(info)
        for i in np.flatnonzero(dones):
            infos[i].update(self._episode_info(int(i), info, bool(terminated[i]), bool(truncated[i])))
        self._returns[dones] = 0.0
        self._lengths[dones] = 0
        return np.asarray(obs, dtype=np.float32), rewards.astype(np.float32), dones, infos

    def _per_env(self, info: dict[str, Any]) -> list[dict[str, Any]]:
        """One dict per env with the candidate on offer (step info keys present in ``info``)."""
        keys = [k for k in STEP_INFO_KEYS if k in info]
        return [{k: _plain(info[k][i]) for k in keys} for i in range(self.num_envs)]

    def _episode_info(self, i: int, info: dict[str, Any], terminated: bool, truncated: bool) -> dict[str, Any]:
        final = info.get("final_info", {})
        out: dict[str, Any] = {k: _plain(final[k][i]) for k in FINAL_INFO_KEYS if k in final}
        decisions = int(out.get("decisions", self._lengths[i]))
        length = out.get("response_length", len(out.get("response_ids") or []))
        out.update(
            {
                "terminal_observation": np.asarray(info["final_obs"][i], dtype=np.float32),
                "TimeLimit.truncated": bool(truncated and not terminated),
                "episode": {
                    "r": round(float(self._returns[i]), 6),
                    "l": int(self._lengths[i]),
                    "t": round(time.time() - self._t_start, 6),
                },
                "rejection_rate": float(out.get("num_rejections", 0)) / decisions if decisions > 0 else 0.0,
                "response_length": int(length),
            }
        )
        return out

    # ------------------------------------------------------------------ attributes
    def _indices(self, indices: VecEnvIndices) -> list[int]:
        if indices is None:
            return list(range(self.num_envs))
        if isinstance(indices, int):
            return [indices]
        return list(indices)

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """The attribute of the (single, batched) underlying env, once per requested index."""
        value = getattr(self.venv.unwrapped, attr_name)
        return [value for _ in self._indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        """Set an attribute of the batched env; it is shared by every env, so ``indices`` must cover all."""
        self._require_all("set_attr", indices)
        setattr(self.venv.unwrapped, attr_name, value)

    def env_method(
        self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **method_kwargs: Any
    ) -> list[Any]:
        """Call a method of the batched env once (it acts on every env); its result is repeated per index.

        ``render`` returns one frame per env, so it is split per index.
        """
        self._require_all("env_method", indices)
        result = getattr(self.venv.unwrapped, method_name)(*method_args, **method_kwargs)
        if method_name == "render" and isinstance(result, Sequence) and len(result) == self.num_envs:
            return list(result)
        return [result for _ in range(self.num_envs)]

    def _require_all(self, method: str, indices: VecEnvIndices) -> None:
        chosen = self._indices(indices)
        if sorted(chosen) != list(range(self.num_envs)):
            raise ConfigError(
                f"{method}(indices={indices!r}): the {self.num_envs} envs share one batched env, so only "
                "indices=None (all envs) is supported."
            )

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        """Always False: the batched env is not made of wrapped single envs."""
        return [False for _ in self._indices(indices)]

    def render(self, mode: str | None = None) -> Any:
        """The env's ``"ansi"`` frames (one string per env), or None without ``render_mode="ansi"``."""
        return self.venv.render()

    def close(self) -> None:
        self.venv.close()


def _plain(value: Any) -> Any:
    """numpy scalars as Python scalars; everything else as is."""
    return value.item() if isinstance(value, np.generic) else value


def episode_infos(infos: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The infos of finished episodes (those with an ``episode`` entry) among per-env ``infos``."""
    return [info for info in infos if "episode" in info]
