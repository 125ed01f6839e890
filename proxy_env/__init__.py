"""Proxy-RLHF as a vectorized Gymnasium environment.

>>> import gymnasium as gym, proxy_env
>>> "proxy_env/ProxyRLHF-v1" in gym.registry
True
>>> gym.spec("proxy_env/Instructions-v0").kwargs
{'prompts': 'instructions', 'reward': 'instructions'}

``proxy_env/ProxyRLHF-v1`` is the paper's setting with every default (VADER positivity on the
chatterbot turns); each task of :mod:`proxy_env.tasks` has its own id (``proxy_env/Sentiment-v0``,
``Instructions-v0``, ``Relevance-v0``, ``CivilRelevance-v0``) with its prompts and reward.
"""

from __future__ import annotations

from proxy_env.config import Action, EnvConfig
from proxy_env.errors import ProxyEnvError

ENV_ID = "proxy_env/ProxyRLHF-v1"
__version__ = "0.2.0"
__all__ = ["ENV_ID", "Action", "EnvConfig", "ProxyEnvError", "register_envs"]


def register_envs() -> None:
    """Register ``proxy_env/ProxyRLHF-v1`` and every task's id (idempotent)."""
    import gymnasium as gym

    from proxy_env.tasks import TASKS

    # the defaults are EnvConfig's (one declaration, read by the constructor); a task names its prompts and reward
    for env_id, kwargs in [(ENV_ID, {}), *((t.env_id, t.env_kwargs) for t in TASKS.values())]:
        if env_id not in gym.registry:
            gym.register(
                id=env_id,
                entry_point="proxy_env.env:ProxyRLHFEnv",
                vector_entry_point="proxy_env.vector.vector_env:ProxyRLHFVectorEnv",
                kwargs=kwargs,
            )


register_envs()
