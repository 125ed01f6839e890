"""``proxy-rlhf train --backend tianshou``: :class:`TianshouConfig` and :func:`train_tianshou` (tianshou 2.x PPO).

tianshou's ``Collector`` steps the batched env (one LLM, every row in one forward) through
:class:`~proxy_env.adapters.tianshou.TianshouVectorEnv`. The network is our SB3 proxy: an SB3 ``ActorCriticPolicy``
built with :func:`agents.policies.proxy_policy_kwargs` (LayerNorm → ``Linear(d, features_dim)`` → tanh, one MLP head
for the policy and one for the value, the accept bias set by :func:`agents.policies.init_accept_bias`), held by an SB3
PPO. tianshou's actor (:class:`ProxyActor`: ``obs -> logits``) and critic (:class:`ProxyCritic`) are views of that
policy and tianshou's PPO updates its tensors in place, so the trained proxy *is* the SB3 PPO, saved in our checkpoint
format (``config.backend = "tianshou"``): ``generate``, ``bench`` and the exact KL read it as they read an SB3 proxy.

The env's ``kl_coef`` must be 0 (the charge needs the proxy's accept probabilities handed to the env while it
samples, which only ``--backend sb3`` does). tianshou is optional: ``pip install -e '.[tianshou]'``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, cast

import numpy as np
import torch
from stable_baselines3.common.policies import ActorCriticPolicy
from torch import nn

from agents.interrupt import GracefulStop
from agents.training import (
    RLConfig,
    TrainResult,
    check_int,
    checkpoint_saver,
    config_dict,
    env_kwargs,
    help_text,
    resolve_lm,
    run_folder,
    run_training,
    update_loop,
)
from proxy_env.engine.lm import FrozenLM
from proxy_env.errors import ConfigError, did_you_mean

__all__ = ["TianshouConfig", "build_ppo", "sb3_proxy", "train_tianshou"]

INSTALL = "pip install -e '.[tianshou]'"
DEFAULT_N_STEPS, DEFAULT_BATCH_SIZE, DEFAULT_LEARNING_RATE = 128, 64, 3e-4
# tianshou.algorithm.PPO's keywords that algo_kwargs may set (policy, critic, optim and gamma are ours), with the
# values a number must take; SB3's defaults where tianshou's differ (ent_coef 0.01, no gradient clipping)
PPO_KWARGS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "eps_clip": (lambda v: _number(v) and v > 0, "a number > 0"),
    "dual_clip": (lambda v: v is None or (_number(v) and v > 1), "None or a number > 1"),
    "value_clip": (lambda v: isinstance(v, bool), "a bool"),
    "advantage_normalization": (lambda v: isinstance(v, bool), "a bool"),
    "recompute_advantage": (lambda v: isinstance(v, bool), "a bool"),
    "vf_coef": (lambda v: _number(v) and v >= 0, "a number >= 0"),
    "ent_coef": (lambda v: _number(v) and v >= 0, "a number >= 0"),
    "max_grad_norm": (lambda v: v is None or (_number(v) and v > 0), "None or a number > 0"),
    "gae_lambda": (lambda v: _number(v) and 0 <= v <= 1, "a number in [0, 1]"),
    "max_batchsize": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1, "an int >= 1"),
    "return_scaling": (lambda v: isinstance(v, bool), "a bool"),
}
PPO_DEFAULTS = {"ent_coef": 0.0, "max_grad_norm": 0.5}

# called with (algorithm, None) before training, then (algorithm, tianshou's EpochStats) after each rollout and update
EpochHook = Callable[[Any, Any], None]


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and bool(np.isfinite(value))


@dataclass(kw_only=True)
class TianshouConfig(RLConfig):
    """``proxy-rlhf train --backend tianshou``: the shared settings plus tianshou PPO's; each field is a flag.

    ``n_steps`` (default 128) decisions per env make one rollout of ``n_steps * num_envs``; ``algo_kwargs`` takes
    tianshou PPO's keywords (:data:`PPO_KWARGS`). The env's ``kl_coef`` must be 0.
    """

    refused_env_settings: ClassVar[tuple[str, ...]] = ("kl_coef",)

    n_epochs: int = field(
        default=10,
        metadata=help_text("passes over each rollout (tianshou's update_step_num_repetitions; SB3 PPO's n_epochs)"),
    )

    def validate(self) -> None:
        """The shared checks, then tianshou's: raise :class:`ConfigError` naming the field, before any model loads."""
        if not isinstance(self.algo, str) or self.algo.lower() != "ppo":
            raise ConfigError(
                f"algo={self.algo!r} is not an algorithm of the tianshou backend, which trains PPO; pass algo='ppo' "
                "or train another algorithm with --backend sb3." + did_you_mean(str(self.algo).lower(), ["ppo"])
            )
        super().validate()
        if self.env.kl_coef != 0.0:
            raise ConfigError(
                f"kl_coef={self.env.kl_coef!r} is not supported by --backend tianshou; leave it at 0.0 "
                "or train with --backend sb3."
            )
        check_int("n_epochs", self.n_epochs, minimum=1)
        for key, value in self.algo_kwargs.items():
            if key not in PPO_KWARGS:
                raise ConfigError(
                    f"algo_kwargs has {key!r}, which is not a keyword of tianshou's PPO."
                    + did_you_mean(key, PPO_KWARGS)
                    + f" Its keywords: {list(PPO_KWARGS)} (gamma, learning_rate, batch_size: their own fields)."
                )
            ok, what = PPO_KWARGS[key]
            if not ok(value):
                raise ConfigError(f"algo_kwargs[{key!r}]={value!r} must be {what}.")


def require_tianshou() -> Any:
    """Import tianshou, or raise with the install command."""
    try:
        import tianshou
    except ImportError as exc:
        raise ConfigError(f"--backend tianshou needs tianshou, which is not installed: {INSTALL}") from exc
    return tianshou


class ProxyActor(nn.Module):
    """tianshou's actor interface, ``(obs, state, info) -> (logits, state)``, over an SB3 ``ActorCriticPolicy``."""

    def __init__(self, policy: ActorCriticPolicy) -> None:
        super().__init__()
        self.policy = policy

    def forward(self, obs: Any, state: Any = None, info: Any = None) -> tuple[torch.Tensor, Any]:
        features = shared_features(self.policy, obs)  # (B, features_dim)
        return self.policy.action_net(self.policy.mlp_extractor.forward_actor(features)), state  # logits (B, 2)


class ProxyCritic(nn.Module):
    """tianshou's critic, ``obs -> V(obs)`` (B, 1), over the same SB3 policy (features extractor shared)."""

    def __init__(self, policy: ActorCriticPolicy) -> None:
        super().__init__()
        self.policy = policy

    def forward(self, obs: Any) -> torch.Tensor:
        features = shared_features(self.policy, obs)  # (B, features_dim)
        return self.policy.value_net(self.policy.mlp_extractor.forward_critic(features))


def shared_features(policy: ActorCriticPolicy, obs: Any) -> torch.Tensor:
    """The proxy's features of a batch of observations (numpy or torch): (B, d) -> (B, features_dim)."""
    features = policy.extract_features(torch.as_tensor(obs, dtype=torch.float32, device=policy.device))
    assert isinstance(features, torch.Tensor), "one features extractor shared by both heads (SB3's default)"
    return features


def sb3_proxy(observation_space: Any, cfg: TianshouConfig) -> Any:
    """An SB3 PPO holding a fresh proxy (accept bias from ``cfg.init_accept_prob``): what the checkpoint holds."""
    from agents.policies import fresh_ppo_proxy

    return fresh_ppo_proxy(observation_space, cfg, learning_rate=_learning_rate(cfg), n_epochs=cfg.n_epochs)


def build_ppo(policy: ActorCriticPolicy, observation_space: Any, cfg: TianshouConfig) -> Any:
    """tianshou's PPO over the SB3 ``policy`` (a Categorical over REJECT/ACCEPT from :class:`ProxyActor`'s logits)."""
    from gymnasium import spaces
    from tianshou.algorithm import PPO
    from tianshou.algorithm.modelfree.reinforce import DiscreteActorPolicy
    from tianshou.algorithm.optim import AdamOptimizerFactory

    actor: Any = ProxyActor(policy)  # duck-typed to tianshou's ActionReprNet
    ts_policy = DiscreteActorPolicy(actor=actor, action_space=spaces.Discrete(2), observation_space=observation_space)
    return PPO(
        policy=ts_policy,
        critic=ProxyCritic(policy),
        optim=AdamOptimizerFactory(lr=_learning_rate(cfg), eps=1e-5),  # SB3 PPO's Adam
        gamma=cfg.gamma,
        **{**PPO_DEFAULTS, **cfg.algo_kwargs},
    )


def _learning_rate(cfg: TianshouConfig) -> float:
    return cfg.learning_rate if cfg.learning_rate is not None else DEFAULT_LEARNING_RATE


def train_tianshou(
    cfg: TianshouConfig, *, model: FrozenLM | None = None, reward: Any = None, on_epoch: EpochHook | None = None
) -> TrainResult:
    """Train a proxy with tianshou's PPO as configured by ``cfg``.

    Runs in :func:`agents.training.run_training`: everything is validated and the save folder locked before the LLM
    loads; SIGINT/SIGTERM stop after the current rollout and update, and the checkpoint is still saved. Each rollout
    collects ``n_steps`` decisions per env, so training stops at the first rollout that reaches ``total_timesteps``.

    Args:
        cfg: the configuration.
        model: an already loaded :class:`FrozenLM` used instead of ``cfg.env.model`` (shared, not copied).
        reward: a reward callable ``(prompts, responses) -> floats`` used instead of ``cfg.env.reward``.
        on_epoch: called with ``(algorithm, None)`` before training, then ``(algorithm, stats)`` after each rollout
            and update (tianshou's ``PPO`` and its ``EpochStats``).

    Returns:
        A :class:`~agents.training.TrainResult` whose ``model`` is the proxy as an SB3 PPO (what the checkpoint holds;
        ``num_timesteps`` = decisions collected).
    """
    return run_training(cfg, lambda stop: _train(cfg, model, reward, on_epoch, stop))


def _train(
    cfg: TianshouConfig, model: FrozenLM | None, reward: Any, on_epoch: EpochHook | None, stop: GracefulStop
) -> TrainResult:
    import gymnasium as gym
    from stable_baselines3.common.utils import set_random_seed

    import proxy_env
    from agents.policies import param_report
    from proxy_env.adapters.tianshou import TianshouVectorEnv

    require_tianshou()
    from tianshou.data import Collector, CollectStats, VectorReplayBuffer
    from tianshou.trainer import OnPolicyTrainerParams

    set_random_seed(cfg.seed)
    lm = resolve_lm(model if model is not None else cfg.env.model, cfg.llm_device)
    kwargs = {**env_kwargs(cfg), "model": lm, "reward": reward if reward is not None else cfg.env.reward}
    venv = gym.make_vec(proxy_env.ENV_ID, num_envs=cfg.num_envs, vectorization_mode="vector_entry_point", **kwargs)
    env = TianshouVectorEnv(venv)
    writer = None
    try:
        agent = sb3_proxy(venv.single_observation_space, cfg)
        algorithm = build_ppo(agent.policy, venv.single_observation_space, cfg)
        rollout = (cfg.n_steps or DEFAULT_N_STEPS) * cfg.num_envs
        collector: Collector[CollectStats] = Collector(  # the adapter is duck-typed to tianshou's BaseVectorEnv
            algorithm, cast(Any, env), VectorReplayBuffer(rollout, cfg.num_envs)
        )
        writer, ts_logger = _logger(cfg.tensorboard_log)
        trainer = algorithm.create_trainer(
            OnPolicyTrainerParams(
                training_collector=collector,
                max_epochs=1 + cfg.total_timesteps // rollout,  # one epoch per rollout; the loop below stops
                epoch_num_steps=rollout,
                collection_step_num_env_steps=rollout,
                batch_size=cfg.batch_size or DEFAULT_BATCH_SIZE,
                update_step_num_repetitions=cfg.n_epochs,
                logger=ts_logger,
                verbose=False,
                show_progress=False,
            )
        )
        collector.reset(gym_reset_kwargs={"seed": cfg.seed})
        trainer.reset(reset_collectors=False)
        config = {**config_dict(cfg), "backend": "tianshou"}
        save = checkpoint_saver(cfg, model, reward, lm, config)
        if on_epoch is not None:
            on_epoch(algorithm, None)

        def update() -> int:
            stats = trainer.execute_epoch()
            agent.num_timesteps = collector.collect_step
            if on_epoch is not None:
                on_epoch(algorithm, stats)
            return agent.num_timesteps

        path = update_loop(cfg, agent, save, stop, desc="tianshou ppo", update=update)
    finally:
        if writer is not None:
            writer.close()
        env.close()
    return TrainResult(agent, path, param_report(agent, lm.num_parameters), [], [], stop.received)


def _logger(folder: str | None) -> tuple[Any, Any]:
    """A TensorBoard writer in ``folder/tianshou_ppo_<N>`` (SB3 names its runs ``ppo_<N>``) and tianshou's logger on it."""
    path = run_folder(folder, "tianshou_ppo")
    if path is None:
        return None, None
    from tianshou.utils import TensorboardLogger
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(path))
    return writer, TensorboardLogger(writer, training_interval=1, update_interval=1)
