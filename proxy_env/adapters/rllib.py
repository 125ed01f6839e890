"""Ray RLlib's view of the env: the creator each EnvRunner calls, with ``NEXT_STEP`` autoreset forced.

RLlib's new API stack builds envs with ``gym.make_vec`` in each EnvRunner
(``gym_env_vectorize_mode="vector_entry_point"``), so a runner holds one native
:class:`~proxy_env.vector.vector_env.ProxyRLHFVectorEnv`. It assumes ``NEXT_STEP`` autoreset and never
checks it: :func:`make_rllib_env` forces that mode and refuses any other. The env settings arrive as
plain data (a model name or path, never a loaded model). Ray itself is not imported here; the training
side is :mod:`agents.rllib`.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
from gymnasium.vector import AutoresetMode

import proxy_env
from proxy_env.errors import check_autoreset_mode


def is_plain_data(value: Any) -> bool:
    """Whether ``value`` is JSON-like data (None, bool, numbers, str, lists and dicts of them): what a runner can be sent."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(is_plain_data(v) for v in value)
    return isinstance(value, dict) and all(is_plain_data(v) for v in value.values())


def make_rllib_env(config: dict[str, Any]) -> gym.vector.VectorEnv:
    """The env creator registered with ``tune.register_env``: one native vector env of ``config["num_envs"]`` rows.

    ``config`` is :func:`agents.rllib.backend.env_config`'s plain data plus RLlib's ``num_envs``; ``autoreset_mode`` must be
    ``"next_step"`` (what RLlib's EnvRunner assumes); any other raises
    :class:`~proxy_env.errors.AutoresetModeError` instead of training on misaligned episodes.
    """
    import torch

    kwargs = dict(config)
    num_envs = int(kwargs.pop("num_envs", 1))
    mode = kwargs.pop("autoreset_mode", "next_step")
    why = "RLlib's EnvRunner treats the observation after a done as the next episode's first, and ignores one action there"
    if mode not in (AutoresetMode.NEXT_STEP, AutoresetMode.NEXT_STEP.value, "next_step", "NEXT_STEP"):
        check_autoreset_mode("the rllib backend", mode, AutoresetMode.NEXT_STEP, why)  # raises, naming the mode
    torch.set_num_threads(int(kwargs.pop("threads", 1)))
    device_map = kwargs.pop("device_map", None)
    if device_map is not None:  # one LLM spread over this runner's GPUs
        from proxy_env.engine.lm import FrozenLM

        kwargs.pop("device", None)
        kwargs["model"] = FrozenLM(kwargs["model"], device_map=device_map)
    elif kwargs.get("model") == "tiny":
        from proxy_env.engine.models import as_frozen_lm

        kwargs["model"] = as_frozen_lm("tiny", device=kwargs.pop("device", None))
    venv = gym.make_vec(
        proxy_env.ENV_ID,
        num_envs=num_envs,
        vectorization_mode="vector_entry_point",
        autoreset_mode=AutoresetMode.NEXT_STEP,
        **kwargs,
    )
    check_autoreset_mode("the rllib backend", venv.metadata.get("autoreset_mode"), AutoresetMode.NEXT_STEP, why)
    return venv
