"""Reward sources the env calls, and what it does with their scores.

* :mod:`~proxy_env.rewards.builtin`: the :class:`RewardFn` protocol, VADER (the default), any Hugging Face
  sequence classifier and :func:`score`; :mod:`~proxy_env.rewards.resolve`: :func:`resolve_reward` (a name,
  a folder or a callable to a source; the tasks' rewards live in :mod:`proxy_env.tasks`).
* :mod:`~proxy_env.rewards.learned` (+ :mod:`~proxy_env.rewards.encoders`): a Bradley–Terry reward model
  trained by ``proxy-rlhf rm train`` (training itself is in the :mod:`feedback` package).
* :mod:`~proxy_env.rewards.judge` and :mod:`~proxy_env.rewards.pairwise`: an LLM judge comparing the
  response with the unsteered one (``reward="pairwise"``).
* :mod:`~proxy_env.rewards.baselines`: the reference baseline and running normalisation;
  :mod:`~proxy_env.rewards.shaping`: potential-based shaping (``reward_shaping=True``).
"""

from proxy_env.rewards.baselines import ReferenceBaseline
from proxy_env.rewards.builtin import HFRewardModel, RewardFn, VaderReward, reward_name, score
from proxy_env.rewards.resolve import resolve_reward

__all__ = [
    "HFRewardModel",
    "ReferenceBaseline",
    "RewardFn",
    "VaderReward",
    "resolve_reward",
    "reward_name",
    "score",
]
