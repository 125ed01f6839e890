"""The env as other RL libraries take it: an SB3 ``VecEnv`` (:mod:`~proxy_env.adapters.sb3`), Ray RLlib's env creator (:mod:`~proxy_env.adapters.rllib`) and a tianshou ``BaseVectorEnv`` (:mod:`~proxy_env.adapters.tianshou`)."""

from __future__ import annotations

from typing import Any

from proxy_env.errors import ConfigTypeError, check_autoreset_mode


def check_adapted(client: str, venv: Any, mode: Any, why: str) -> None:
    """What every adapter checks first: ``venv`` is a Gymnasium ``VectorEnv`` whose autoreset mode is ``mode``."""
    import gymnasium as gym

    if not isinstance(venv, gym.vector.VectorEnv):
        raise ConfigTypeError(
            f"venv must be a gymnasium VectorEnv (gym.make_vec(..., vectorization_mode='vector_entry_point')), "
            f"got {type(venv).__name__}."
        )
    check_autoreset_mode(client, venv.metadata.get("autoreset_mode"), mode, why)
