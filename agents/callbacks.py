"""SB3 callbacks for proxy training (logging, evaluation, checkpoints, progress) and an episode runner.

Everything here uses SB3's plug points only: callbacks read ``self.locals["infos"]`` and write to
``self.logger``; nothing subclasses an algorithm.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import VecEnv

# per-episode info fields logged as rollout/<name> means
EPISODE_SCALARS = ("rejection_rate", "response_length", "reward_raw")


class EpisodeStatsCallback(BaseCallback):
    """Log ``rollout/rejection_rate``, ``rollout/response_length`` and ``rollout/reward_raw`` (means over
    the episodes that finished since the last log dump) next to SB3's ``ep_rew_mean``."""

    def _on_step(self) -> bool:
        for info in self.locals.get("infos", []):
            if "episode" in info:
                for key in EPISODE_SCALARS:
                    if key in info:
                        self.logger.record_mean(f"rollout/{key}", float(info[key]))
        return True


class CriticWarmupCallback(BaseCallback):
    """The first ``updates`` updates of an on-policy actor-critic train its value head only: the actor is frozen.

    A policy loaded by ``--init-from`` (a tilt fit) comes with an untrained critic; its advantages are noise until
    the critic fits the returns, and PPO would move the actor by that noise. The actor's parameters (its head, and
    the features extractor when the critic shares it) stop taking gradients until then, or until training ends;
    Adam skips parameters without one. ``train/critic_warmup`` logs 1 while frozen.
    """

    def __init__(self, updates: int) -> None:
        super().__init__()
        self.updates = updates
        self.rollouts = 0

    def _actor(self) -> list[Any]:
        policy: Any = self.model.policy
        critic = [*policy.value_net.parameters(), *policy.mlp_extractor.value_net.parameters()]
        if not getattr(policy, "share_features_extractor", True):
            critic += list(policy.vf_features_extractor.parameters())
        for name in ("lstm_critic", "critic"):  # sb3_contrib's recurrent policies: the critic's own LSTM or layer
            if getattr(policy, name, None) is not None:
                critic += list(getattr(policy, name).parameters())
        mine = {id(p) for p in critic}
        return [p for p in policy.parameters() if id(p) not in mine]

    def _on_training_start(self) -> None:
        for param in self._actor():
            param.requires_grad_(False)

    def _on_rollout_end(self) -> None:
        self.rollouts += 1  # the update that follows is update number ``rollouts``
        frozen = self.rollouts <= self.updates
        if self.rollouts == self.updates + 1:
            for param in self._actor():
                param.requires_grad_(True)
        self.logger.record("train/critic_warmup", float(frozen))

    def _on_training_end(self) -> None:  # a run shorter than the warm-up hands back a trainable agent
        for param in self._actor():
            param.requires_grad_(True)

    def _on_step(self) -> bool:
        return True


class EvalResult(NamedTuple):
    """Means over evaluation episodes."""

    mean_reward: float
    rejection_rate: float
    response_length: float
    episodes: int


def run_episodes(agent: Any, env: VecEnv, episodes: int, *, deterministic: bool = True) -> list[dict[str, Any]]:
    """Run ``agent`` (anything with SB3's ``predict``) on the SB3 env until ``episodes`` episodes end.

    Each env contributes its first ``ceil(episodes / num_envs)`` episodes (so short episodes are not
    over-represented); the infos of the first ``episodes`` of those are returned.
    """
    n = env.num_envs
    target = -(-episodes // n)
    counts = np.zeros(n, dtype=np.int64)
    obs = env.reset()
    state, starts = None, np.ones(n, dtype=bool)
    done: list[dict[str, Any]] = []
    while (counts < target).any():
        actions, state = agent.predict(obs, state=state, episode_start=starts, deterministic=deterministic)
        obs, _, dones, infos = env.step(actions)
        starts = dones
        for i in np.flatnonzero(dones):
            if counts[i] < target:
                done.append(infos[i])
            counts[i] += 1
    return done[:episodes]


def evaluate(agent: Any, env: VecEnv, episodes: int, *, deterministic: bool = True) -> EvalResult:
    """Mean return (``episode["r"]``), rejection rate and response length over ``episodes`` episodes."""
    infos = run_episodes(agent, env, episodes, deterministic=deterministic)
    mean = lambda key: float(np.mean([i[key] for i in infos]))  # noqa: E731
    return EvalResult(
        float(np.mean([i["episode"]["r"] for i in infos])), mean("rejection_rate"), mean("response_length"), len(infos)
    )


class EvalCallback(BaseCallback):
    """Every ``eval_freq`` environment steps, evaluate the proxy on ``env`` (held-out prompts) and log
    ``eval/mean_reward``, ``eval/rejection_rate``, ``eval/response_length``; results go to ``history``."""

    def __init__(
        self, env: VecEnv, eval_freq: int, episodes: int, *, deterministic: bool = True, seed: int | None = 0
    ) -> None:
        super().__init__()
        self.env, self.eval_freq, self.episodes, self.deterministic = env, eval_freq, episodes, deterministic
        self.seed = seed
        self.history: list[tuple[int, EvalResult]] = []
        self._next = eval_freq

    def _on_step(self) -> bool:
        if self.eval_freq > 0 and self.num_timesteps >= self._next:
            self._next = (self.num_timesteps // self.eval_freq + 1) * self.eval_freq
            if self.seed is not None:
                self.env.seed(self.seed)  # the same prompts and sampling noise at every evaluation
            result = evaluate(self.model, self.env, self.episodes, deterministic=self.deterministic)
            self.history.append((self.num_timesteps, result))
            for key in ("mean_reward", "rejection_rate", "response_length"):
                self.logger.record(f"eval/{key}", getattr(result, key))
            self.logger.dump(self.num_timesteps)
        return True


class CheckpointCallback(BaseCallback):
    """Every ``save_freq`` environment steps, call ``save(model)`` (an atomic checkpoint writer)."""

    def __init__(self, save: Callable[[Any], Path | None], save_freq: int) -> None:
        super().__init__()
        self.save, self.save_freq = save, save_freq
        self._next = save_freq

    def _on_step(self) -> bool:
        if self.save_freq > 0 and self.num_timesteps >= self._next:
            self._next = (self.num_timesteps // self.save_freq + 1) * self.save_freq
            self.save(self.model)
        return True


class TqdmCallback(BaseCallback):
    """A tqdm progress bar over environment steps (SB3's own bar also needs ``rich``)."""

    def __init__(self) -> None:
        super().__init__()
        self.bar: Any = None

    def _on_training_start(self) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=self.locals["total_timesteps"] - self.model.num_timesteps, unit="step")

    def _on_step(self) -> bool:
        self.bar.update(self.training_env.num_envs)
        return True

    def _on_training_end(self) -> None:
        self.bar.close()


class TimeLimitCallback(BaseCallback):
    """Stops training once ``seconds`` of wall time have passed since training started."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds
        self._start = 0.0

    def _on_training_start(self) -> None:
        self._start = time.perf_counter()

    def _on_step(self) -> bool:
        return time.perf_counter() - self._start < self.seconds
