"""``proxy-rlhf train --backend torch``: a CleanRL-style PPO loop whose rollouts never leave the device.

Every other backend copies each step's observations to numpy (SB3, RLlib, tianshou). This one steps the batched env
through its torch-native API (:meth:`~proxy_env.vector.vector_env.ProxyRLHFVectorEnv.step_tensors`): observations,
actions, log-probabilities, values, rewards and ends are kept in preallocated ``(n_steps, num_envs)`` tensors on the
policy's device, advantages are computed there (GAE), and PPO's clipped update runs on minibatches of them. Per
step, the only copy to the host is the env's (B,) ``terminated`` mask (which decides what to score).

The network is our SB3 proxy (:func:`agents.policies.fresh_ppo_proxy`) and the loop updates its tensors, so the
checkpoint is an ordinary SB3 proxy (``config.backend = "torch"``) that ``generate``, ``bench`` and the exact KL read.
The loop follows CleanRL's ``ppo.py`` (Huang et al., 2022, "The 37 implementation details of PPO"): advantage
normalisation per minibatch, the clipped surrogate, an unclipped value loss, global gradient clipping. The env's
``kl_coef`` must be 0 (the charge needs the proxy's accept probabilities handed to the env, which ``--backend sb3``
does).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from agents.interrupt import GracefulStop
from agents.training import (
    RLConfig,
    TrainResult,
    check_int,
    check_number,
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

__all__ = ["TorchPPOConfig", "UpdateStats", "train_torch_ppo"]

DEFAULT_N_STEPS, DEFAULT_BATCH_SIZE, DEFAULT_LEARNING_RATE = 128, 256, 3e-4


@dataclass(kw_only=True)
class TorchPPOConfig(RLConfig):
    """``proxy-rlhf train --backend torch``: the shared settings plus PPO's own; each field is a flag.

    ``n_steps`` (default 128) decisions per env make one rollout of ``n_steps * num_envs``; ``batch_size``
    (default 256) is the minibatch. PPO's settings are fields, so ``algo_kwargs`` must stay empty.
    """

    refused_env_settings: ClassVar[tuple[str, ...]] = ("kl_coef",)

    n_epochs: int = field(default=4, metadata=help_text("passes over each rollout"))
    clip_range: float = field(default=0.2, metadata=help_text("PPO's ratio clip ε"))
    gae_lambda: float = field(default=0.95, metadata=help_text("GAE's λ"))
    ent_coef: float = field(default=0.0, metadata=help_text("entropy bonus coefficient"))
    vf_coef: float = field(default=0.5, metadata=help_text("value loss coefficient"))
    max_grad_norm: float = field(default=0.5, metadata=help_text("global gradient-norm clip"))

    def validate(self) -> None:
        """The shared checks, then PPO's: raise :class:`ConfigError` naming the field, before any model loads."""
        if not isinstance(self.algo, str) or self.algo.lower() != "ppo":
            raise ConfigError(
                f"algo={self.algo!r} is not an algorithm of the torch backend, which trains PPO; pass algo='ppo' "
                "or train another algorithm with --backend sb3." + did_you_mean(str(self.algo).lower(), ["ppo"])
            )
        super().validate()
        if self.env.kl_coef != 0.0:
            raise ConfigError(
                f"kl_coef={self.env.kl_coef!r} is not supported by --backend torch; leave it at 0.0 "
                "or train with --backend sb3."
            )
        if self.algo_kwargs:
            raise ConfigError(
                f"algo_kwargs={self.algo_kwargs!r}: the torch backend's PPO settings are fields of their own "
                "(n_epochs, clip_range, gae_lambda, ent_coef, vf_coef, max_grad_norm); pass those instead."
            )
        check_int("n_epochs", self.n_epochs, minimum=1)
        check_number("clip_range", self.clip_range, lambda v: v > 0, "> 0")
        check_number("gae_lambda", self.gae_lambda, lambda v: 0 <= v <= 1, "in [0, 1]")
        for name in ("ent_coef", "vf_coef"):
            check_number(name, getattr(self, name), lambda v: v >= 0, ">= 0")
        check_number("max_grad_norm", self.max_grad_norm, lambda v: v > 0, "> 0")


@dataclass
class UpdateStats:
    """One rollout and its update: what ``on_update`` receives and TensorBoard logs."""

    decisions: int  # collected so far
    episodes: int  # ended in this rollout
    reward_mean: float  # mean reward_raw of those episodes (nan if none)
    accept_rate: float  # share of ACCEPT actions in the rollout
    policy_loss: float
    value_loss: float
    entropy: float
    approx_kl: float  # mean (ratio - 1) - log ratio over the last epoch (CleanRL's approx_kl)
    clip_fraction: float
    rollout_s: float
    update_s: float


UpdateHook = Callable[[Any, UpdateStats], None]


def train_torch_ppo(
    cfg: TorchPPOConfig, *, model: FrozenLM | None = None, reward: Any = None, on_update: UpdateHook | None = None
) -> TrainResult:
    """Train a proxy with the device-resident PPO loop as configured by ``cfg``.

    Runs in :func:`agents.training.run_training`: everything is validated and the save folder locked before the LLM
    loads; SIGINT/SIGTERM stop after the current rollout and update, and the checkpoint is still saved. Training stops
    at the first rollout that reaches ``total_timesteps``.

    Args:
        cfg: the configuration.
        model: an already loaded :class:`FrozenLM` used instead of ``cfg.env.model`` (shared, not copied).
        reward: a reward callable ``(prompts, responses) -> floats`` used instead of ``cfg.env.reward``.
        on_update: called with ``(SB3 PPO, UpdateStats)`` after each rollout and update.

    Returns:
        A :class:`~agents.training.TrainResult` whose ``model`` is the proxy as an SB3 PPO (``num_timesteps`` =
        decisions collected).
    """
    return run_training(cfg, lambda stop: _train(cfg, model, reward, on_update, stop))


class _Rollout:
    """``(n_steps, num_envs)`` buffers on the policy's device, filled step by step and read as flat minibatches."""

    def __init__(self, n_steps: int, num_envs: int, obs_dim: int, device: torch.device) -> None:
        def zeros(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
            return torch.zeros(n_steps, num_envs, *shape, dtype=dtype, device=device)

        self.obs = zeros(obs_dim)
        self.actions = zeros(dtype=torch.long)
        self.logp, self.values, self.rewards = zeros(), zeros(), zeros()
        self.terminal = zeros()  # 1 where the episode ended in a terminal state: nothing to bootstrap
        self.dones = zeros()  # 1 where the episode ended (terminal or truncated): GAE does not run across it
        self.next_values = zeros()  # V of what follows the step: the next obs, or a truncated episode's final obs

    def advantages(self, gamma: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
        """GAE advantages and returns, (n_steps, num_envs) each."""
        adv = torch.zeros_like(self.rewards)
        last = torch.zeros_like(self.rewards[0])
        for t in reversed(range(len(self.rewards))):
            delta = self.rewards[t] + gamma * self.next_values[t] * (1.0 - self.terminal[t]) - self.values[t]
            last = delta + gamma * lam * (1.0 - self.dones[t]) * last
            adv[t] = last
        return adv, adv + self.values


def _train(
    cfg: TorchPPOConfig, model: FrozenLM | None, reward: Any, on_update: UpdateHook | None, stop: GracefulStop
) -> TrainResult:
    import gymnasium as gym
    from stable_baselines3.common.utils import set_random_seed

    import proxy_env
    from agents.policies import fresh_ppo_proxy, param_report

    set_random_seed(cfg.seed)
    lm = resolve_lm(model if model is not None else cfg.env.model, cfg.llm_device)
    kwargs = {**env_kwargs(cfg), "model": lm, "reward": reward if reward is not None else cfg.env.reward}
    venv: Any = gym.make_vec(
        proxy_env.ENV_ID, num_envs=cfg.num_envs, vectorization_mode="vector_entry_point", **kwargs
    ).unwrapped
    writer: Any = None
    try:
        lr = cfg.learning_rate if cfg.learning_rate is not None else DEFAULT_LEARNING_RATE
        agent = fresh_ppo_proxy(venv.single_observation_space, cfg, learning_rate=lr, n_epochs=cfg.n_epochs)
        policy = agent.policy
        n_steps = cfg.n_steps or DEFAULT_N_STEPS
        buf = _Rollout(n_steps, cfg.num_envs, venv.single_observation_space.shape[0], policy.device)
        folder = run_folder(cfg.tensorboard_log, "torch_ppo")
        if folder is not None:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(folder))
        config = {**config_dict(cfg), "backend": "torch"}
        save = checkpoint_saver(cfg, model, reward, lm, config)
        obs, _ = venv.reset_tensors(seed=cfg.seed)
        obs = obs.to(policy.device)

        def update() -> int:
            nonlocal obs
            t0 = time.perf_counter()
            obs, ended = _collect(venv, policy, buf, obs)
            agent.num_timesteps += n_steps * cfg.num_envs
            t1 = time.perf_counter()
            stats = _update(cfg, policy, buf)
            rewards = np.concatenate(ended) if ended else np.zeros(0)
            summary = UpdateStats(
                agent.num_timesteps,
                len(rewards),
                float(rewards.mean()) if len(rewards) else float("nan"),
                float(buf.actions.float().mean()),
                *stats,
                rollout_s=t1 - t0,
                update_s=time.perf_counter() - t1,
            )
            _log(writer, summary)
            if on_update is not None:
                on_update(agent, summary)
            return agent.num_timesteps

        path = update_loop(cfg, agent, save, stop, desc="torch ppo", update=update)
    finally:
        if writer is not None:
            writer.close()
        venv.close()
    return TrainResult(agent, path, param_report(agent, lm.num_parameters), [], [], stop.received)


@torch.no_grad()
def _collect(venv: Any, policy: Any, buf: _Rollout, obs: torch.Tensor) -> tuple[torch.Tensor, list[np.ndarray]]:
    """Fill ``buf`` with one rollout from ``obs``; (the next observation, the rewards of the episodes that ended)."""
    ended: list[np.ndarray] = []
    policy.set_training_mode(False)
    for t in range(len(buf.rewards)):
        dist = policy.get_distribution(obs)
        action = dist.distribution.sample()  # (B,) on the policy's device
        buf.obs[t], buf.actions[t] = obs, action
        buf.logp[t], buf.values[t] = dist.log_prob(action), policy.predict_values(obs)[:, 0]
        next_obs, reward, terminated, truncated, info = venv.step_tensors(action)
        next_obs = next_obs.to(obs.device)
        buf.rewards[t] = reward.to(obs.device)
        buf.terminal[t] = terminated.to(obs.device).float()
        buf.dones[t] = (terminated | truncated).to(obs.device).float()
        following = next_obs
        if "final_obs" in info:  # SAME_STEP autoreset: a truncated episode bootstraps from its own last observation
            cut = (truncated & ~terminated).to(obs.device)
            following = torch.where(cut[:, None], info["final_obs"].to(obs.device), next_obs)
            ended.append(np.asarray(info["final_info"]["reward_raw"])[info["_final_info"]])
        buf.next_values[t] = policy.predict_values(following)[:, 0]
        obs = next_obs
    return obs, ended


def _update(cfg: TorchPPOConfig, policy: Any, buf: _Rollout) -> tuple[float, float, float, float, float]:
    """PPO's clipped update over ``buf``; (policy loss, value loss, entropy, approx KL, clip fraction) of the last epoch."""
    adv, returns = buf.advantages(cfg.gamma, cfg.gae_lambda)
    n = buf.rewards.numel()
    obs, actions = buf.obs.reshape(n, -1), buf.actions.reshape(n)
    logp_old, adv, returns = buf.logp.reshape(n), adv.reshape(n), returns.reshape(n)
    batch = min(cfg.batch_size or DEFAULT_BATCH_SIZE, n)
    policy.set_training_mode(True)
    sums = torch.zeros(5, device=obs.device)
    count = 0
    for epoch in range(cfg.n_epochs):
        order = torch.randperm(n, device=obs.device)
        last = epoch == cfg.n_epochs - 1
        for s in range(0, n, batch):
            idx = order[s : s + batch]
            values, logp, entropy = policy.evaluate_actions(obs[idx], actions[idx])
            log_ratio = logp - logp_old[idx]
            ratio = log_ratio.exp()
            a = adv[idx]
            a = (a - a.mean()) / (a.std() + 1e-8) if len(idx) > 1 else a
            policy_loss = torch.max(-a * ratio, -a * ratio.clamp(1 - cfg.clip_range, 1 + cfg.clip_range)).mean()
            value_loss = (values[:, 0] - returns[idx]).pow(2).mean()
            entropy_mean = entropy.mean() if entropy is not None else torch.zeros((), device=obs.device)
            loss = policy_loss + cfg.vf_coef * value_loss - cfg.ent_coef * entropy_mean
            policy.optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(policy.parameters(), cfg.max_grad_norm)
            policy.optimizer.step()
            if last:
                with torch.no_grad():
                    clipped = ((ratio - 1).abs() > cfg.clip_range).float().mean()
                    approx_kl = ((ratio - 1) - log_ratio).mean()
                    sums += torch.stack([policy_loss, value_loss, entropy_mean, approx_kl, clipped]).detach()
                count += 1
    means = (sums / max(count, 1)).tolist()  # one read per update, not per minibatch
    return means[0], means[1], means[2], means[3], means[4]


def _log(writer: Any, s: UpdateStats) -> None:
    if writer is None:
        return
    scalars = {
        "rollout/ep_rew_mean": s.reward_mean,
        "rollout/accept_rate": s.accept_rate,
        "train/policy_gradient_loss": s.policy_loss,
        "train/value_loss": s.value_loss,
        "train/entropy": s.entropy,
        "train/approx_kl": s.approx_kl,
        "train/clip_fraction": s.clip_fraction,
        "time/rollout_s": s.rollout_s,
        "time/update_s": s.update_s,
    }
    for key, value in scalars.items():
        if value == value:  # nan when no episode ended
            writer.add_scalar(key, value, s.decisions)
