"""The env's ``reward=`` argument -> a reward source: :func:`resolve_reward`.

It sits above the sources it names (:mod:`~proxy_env.rewards.builtin`, the tasks' rewards in
:mod:`proxy_env.tasks`, the learned and judge rewards), so none of them imports it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from proxy_env.errors import ConfigError, ConfigTypeError
from proxy_env.rewards.builtin import HFRewardModel, RewardFn, VaderReward
from proxy_env.tasks import REWARDS as TASK_REWARDS
from proxy_env.tasks import task_reward


def resolve_reward(
    reward: Any = "default", *, device: str | torch.device | None = None, lm: Any = None, config: Any = None
) -> RewardFn:
    """Turn the env's ``reward`` argument into a reward callable.

    * ``"default"``/``"vader"`` -> :class:`VaderReward`;
    * a task's reward (``"instructions"``, ``"relevance"``, ``"relevance-civil"``) -> its source
      (:func:`proxy_env.tasks.task_reward`);
    * ``"pairwise"`` -> :class:`~proxy_env.rewards.pairwise.PairwiseJudgeReward`: ``lm`` judges its
      steered response against its own greedy one (needs ``lm``; ``config`` gives the budget and pool);
    * a folder holding ``reward_model.json`` -> the Bradley–Terry model saved by ``proxy-rlhf rm train``
      (an LLM-hidden-state encoder reuses ``lm``);
    * any other name or path -> :class:`HFRewardModel`; a callable as is.
    """
    if isinstance(reward, str) and reward in ("default", "vader"):
        return VaderReward()
    if isinstance(reward, str) and reward in TASK_REWARDS:
        return task_reward(reward, device=device)
    if isinstance(reward, str) and reward == "pairwise":
        if lm is None:
            raise ConfigError(
                "reward='pairwise' needs the frozen LLM (lm=...) to generate and judge the unsteered response."
            )
        from proxy_env.rewards.pairwise import PairwiseJudgeReward

        sampling = (
            {}
            if config is None
            else {k: getattr(config, k) for k in ("max_new_tokens", "top_k", "top_p", "temperature")}
        )
        return PairwiseJudgeReward(lm, **sampling)
    if isinstance(reward, (str, Path)):
        from proxy_env.engine.lm import resolve_model_path
        from proxy_env.errors import ModelNotFoundError, did_you_mean
        from proxy_env.rewards.learned import is_reward_model_dir, load_reward_model

        if is_reward_model_dir(reward):
            return load_reward_model(reward, lm=lm, device=device)
        try:
            source = resolve_model_path(str(reward), arg="reward")
        except ModelNotFoundError as exc:  # named as the reward, with the sources it could have meant
            raise ModelNotFoundError(
                f"{exc} reward= takes 'default' (VADER), a task's reward "
                f"{list(TASK_REWARDS)}, 'pairwise', a callable, an `rm train` folder or a "
                "sequence-classification model."
                + did_you_mean(str(reward), ["default", "vader", "pairwise", *TASK_REWARDS])
            ) from exc
        return HFRewardModel(source, device=device)
    if callable(reward):
        return reward
    raise ConfigTypeError(
        "reward must be 'default', 'pairwise', a callable (prompts, responses) -> floats, a saved reward-model folder "
        f"or a model id/path; got {type(reward).__name__}."
    )
