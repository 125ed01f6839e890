"""The single environment: a ``num_envs=1`` view of :class:`ProxyRLHFVectorEnv`, with no logic of its own."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import logger
from gymnasium.vector import AutoresetMode

from proxy_env.errors import ActionError, StateError
from proxy_env.vector.seeding import single_seed
from proxy_env.vector.vector_env import ProxyRLHFVectorEnv


class ProxyRLHFEnv(gym.Env):
    """Proxy-RLHF, one episode at a time. Same arguments and semantics as :class:`ProxyRLHFVectorEnv`.

    >>> import gymnasium as gym, proxy_env
    >>> from proxy_env.engine.tiny import tiny_lm
    >>> env = gym.make("proxy_env/ProxyRLHF-v1", model=tiny_lm(), prompts=["Hi!"], max_new_tokens=4, info_text=True)
    >>> obs, info = env.reset(seed=0)
    >>> done, steps = False, 0
    >>> while not done:
    ...     obs, reward, terminated, truncated, info = env.step(proxy_env.Action.ACCEPT)
    ...     done, steps = terminated or truncated, steps + 1
    >>> steps <= 4 and isinstance(info["response"], str)
    True
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 4}

    def __init__(self, render_mode: str | None = None, **kwargs: Any) -> None:
        if "autoreset_mode" in kwargs:  # gym.make_vec(..., vectorization_mode="sync", autoreset_mode=...) lands here
            mode = kwargs.pop("autoreset_mode")
            logger.warn(
                f"autoreset_mode={mode!r} is ignored: the single env does not reset itself. For Gymnasium's "
                "SyncVectorEnv pass vector_kwargs={'autoreset_mode': ...}; for the batched env use "
                "gym.make_vec(..., vectorization_mode='vector_entry_point', autoreset_mode=...)."
            )
        self.vector_env = ProxyRLHFVectorEnv(
            1, autoreset_mode=AutoresetMode.DISABLED, render_mode=render_mode, **kwargs
        )
        self.render_mode = self.vector_env.render_mode  # None when the mode is not supported (ignored, with a warning)
        self.observation_space = self.vector_env.single_observation_space
        self.action_space = self.vector_env.single_action_space
        self._episode_over = False  # the last step ended the episode: step() needs a reset() first

    @property
    def lm(self) -> Any:
        return self.vector_env.lm

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        seed = single_seed(seed)  # numpy ints accepted; anything else refused naming the argument
        super().reset(seed=seed)
        obs, info = self.vector_env.reset(seed=None if seed is None else [seed], options=options)
        self._episode_over = False
        return obs[0], _unbatch(info)

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        array = np.asarray(action.detach().cpu() if hasattr(action, "detach") else action)
        if array.size != 1:
            raise ActionError(
                f"action={action!r}: the single env takes one action (0 = REJECT, 1 = ACCEPT), got {array.size} "
                "values; for several envs use gym.make_vec."
            )
        if self._episode_over and not self.vector_env.closed:  # the vector env would name its reset_mask
            raise StateError("the episode ended: call reset() before step().")
        obs, reward, terminated, truncated, info = self.vector_env.step(array.reshape(1))
        self._episode_over = bool(terminated[0] or truncated[0])
        return obs[0], float(reward[0]), bool(terminated[0]), bool(truncated[0]), _unbatch(info)

    def render(self) -> str | None:  # type: ignore[override]  # ansi frames are str; RenderFrame is unbound
        frames = self.vector_env.render()
        return None if frames is None else frames[0]

    def close(self) -> None:
        self.vector_env.close()


def _unbatch(info: dict[str, Any]) -> dict[str, Any]:
    """Row 0 of a vector info dict; keys whose ``_key`` mask is False are dropped."""
    out: dict[str, Any] = {}
    for key, value in info.items():
        if key.startswith("_") or not info.get(f"_{key}", np.ones(1, bool))[0]:
            continue
        item = _unbatch(value) if isinstance(value, dict) else value[0]
        out[key] = item.item() if isinstance(item, np.generic) else item
    return out
