"""Proxy-RLHF as a vectorized Gymnasium environment.

>>> import gymnasium as gym, proxy_env
>>> "proxy_env/ProxyRLHF-v1" in gym.registry
True
"""

from __future__ import annotations

from proxy_env.config import Action, EnvConfig
from proxy_env.errors import ProxyEnvError

ENV_ID = "proxy_env/ProxyRLHF-v1"
__version__ = "0.2.0"
__all__ = ["ENV_ID", "Action", "EnvConfig", "ProxyEnvError", "register_envs"]


def register_envs() -> None:
    """Register ``proxy_env/ProxyRLHF-v1`` (idempotent)."""
    import gymnasium as gym

    if ENV_ID not in gym.registry:
        gym.register(
            id=ENV_ID,
            entry_point="proxy_env.env:ProxyRLHFEnv",
            vector_entry_point="proxy_env.vector.vector_env:ProxyRLHFVectorEnv",
            kwargs={},  # the defaults are EnvConfig's: one declaration, read by the constructor
        )


register_envs()
