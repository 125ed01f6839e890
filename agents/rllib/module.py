"""The proxy as an RLlib ``RLModule``: SB3's own actor-critic proxy network inside, so both backends train one network.

:class:`ProxyRLModule` holds an SB3 ``ActorCriticPolicy`` built with :func:`agents.policies.proxy_policy_kwargs`
(LayerNorm → ``Linear(d, features_dim)`` → tanh, then one MLP head for the policy and one for the value),
the very network ``proxy-rlhf train --algo ppo`` trains. RLlib's learner owns the optimizer; the module
only computes logits (``Categorical`` over REJECT/ACCEPT) and values. Its ``policy.*`` tensors therefore
load 1:1 into an SB3 PPO policy, which is how :func:`agents.rllib.train.to_sb3` saves an RLlib proxy
in our checkpoint format.

It implements ``ValueFunctionAPI`` (PPO, IMPALA) and ``TargetNetworkAPI`` (APPO's old policy). Imported
only where Ray is installed (``pip install -e '.[rllib]'``).
"""

from __future__ import annotations

from typing import Any

import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.learner.utils import make_target_network
from ray.rllib.core.rl_module.apis import TARGET_NETWORK_ACTION_DIST_INPUTS, TargetNetworkAPI, ValueFunctionAPI
from ray.rllib.core.rl_module.torch import TorchRLModule

from agents.policies import init_accept_bias, proxy_policy_kwargs

# model_config keys of ProxyRLModule and their defaults (TrainConfig's)
MODEL_CONFIG = {"features_dim": 64, "hidden": [64], "init_accept_prob": 0.9}


def _zero_lr(_: float) -> float:
    return 0.0  # SB3 builds an optimizer from this schedule; RLlib's learner has its own


class ProxyRLModule(TorchRLModule, ValueFunctionAPI, TargetNetworkAPI):
    """LayerNorm→MLP proxy (SB3's ``ActorCriticPolicy`` with :class:`~agents.policies.HiddenStateExtractor`).

    ``model_config``: ``features_dim``, ``hidden`` (head widths) and ``init_accept_prob`` (the
    starting P(ACCEPT), or None for SB3's init), as in :class:`agents.train.TrainConfig`.
    """

    def setup(self) -> None:
        from stable_baselines3.common.policies import ActorCriticPolicy

        model_config = self.model_config or {}
        assert isinstance(model_config, dict), "RLModuleSpec hands the module its model_config as a dict"
        assert self.observation_space is not None and self.action_space is not None  # set by RLModuleSpec.build
        config = {**MODEL_CONFIG, **model_config}
        kwargs = proxy_policy_kwargs("ppo", features_dim=int(config["features_dim"]), hidden=tuple(config["hidden"]))
        self.policy = ActorCriticPolicy(self.observation_space, self.action_space, _zero_lr, **kwargs)
        # not a module: RLlib's learner optimises self.parameters()
        self.policy.optimizer = None  # type: ignore[assignment]  # SB3 types it as always set
        if config["init_accept_prob"] is not None:
            init_accept_bias(self, float(config["init_accept_prob"]))

    def _heads(self, obs: torch.Tensor, policy: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        policy = policy if policy is not None else self.policy
        features = policy.extract_features(obs.float())  # (B, features_dim), one extractor shared by both heads
        latent_pi, latent_vf = policy.mlp_extractor(features)  # (B, hidden[-1]) each
        return policy.action_net(latent_pi), latent_vf  # logits (B, 2)

    def _forward(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        logits, _ = self._heads(batch[Columns.OBS])
        return {Columns.ACTION_DIST_INPUTS: logits}

    def _forward_train(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        logits, latent_vf = self._heads(batch[Columns.OBS])
        return {Columns.ACTION_DIST_INPUTS: logits, Columns.EMBEDDINGS: latent_vf}

    def compute_values(self, batch: dict[str, Any], embeddings: Any = None) -> torch.Tensor:
        if embeddings is None:
            _, embeddings = self._heads(batch[Columns.OBS])
        return self.policy.value_net(embeddings).squeeze(-1)  # (B,)

    # APPO keeps a copy of the policy that lags behind (its "old" policy)
    def make_target_networks(self) -> None:
        self._old_policy = make_target_network(self.policy)

    def get_target_network_pairs(self) -> list[tuple[Any, Any]]:
        return [(self.policy, self._old_policy)]

    def forward_target(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        logits, _ = self._heads(batch[Columns.OBS], self._old_policy)
        return {TARGET_NETWORK_ACTION_DIST_INPUTS: logits}

    def get_non_inference_attributes(self) -> list[str]:
        return ["_old_policy"]
