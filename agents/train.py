"""``proxy-rlhf train`` (the default backend): train a proxy with any registered SB3 / sb3-contrib algorithm.

>>> from proxy_env.config import EnvConfig
>>> cfg = SB3Config(env=EnvConfig(model="tiny", prompts=["Hi!"], max_new_tokens=4), num_envs=2, total_timesteps=64,
...                 n_steps=16, batch_size=16, eval_freq=0)
>>> result = train(cfg, reward=lambda prompts, responses: [0.0] * len(responses))
>>> result.model.num_timesteps >= 64 and result.params.proxy < 20_000
True
"""

from __future__ import annotations

import importlib.util
import logging
import math
import warnings
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.callbacks import BaseCallback, CallbackList

import proxy_env
from agents.algos import get_algo
from agents.callbacks import (
    CheckpointCallback,
    CriticWarmupCallback,
    EpisodeStatsCallback,
    EvalCallback,
    TimeLimitCallback,
    TqdmCallback,
)
from agents.interrupt import GracefulStop, StopOnSignalCallback
from agents.kl_control import KLController, KLPenaltyCallback
from agents.policies import copy_policy, init_accept_bias, param_report, proxy_policy_kwargs
from agents.saving.checkpoint import check_lm, load_checkpoint, periodic_save, plain, read_meta, save_or_rescue
from agents.training import (
    RLConfig,
    TrainResult,
    check_int,
    check_number,
    config_dict,
    env_kwargs,
    help_text,
    resolve_lm,
    run_training,
    save_agent,
    saved_env_kwargs,
)
from proxy_env.adapters.sb3 import SB3VecEnv
from proxy_env.engine.lm import FrozenLM
from proxy_env.errors import ConfigError
from proxy_env.prompts import load_prompts
from proxy_env.wrappers import RejectCost

logger = logging.getLogger(__name__)

__all__ = ["SB3Config", "build_agent", "make_sb3_env", "train"]


@dataclass(kw_only=True)
class SB3Config(RLConfig):
    """``proxy-rlhf train --backend sb3``: the shared settings plus SB3's; each field is a flag."""

    kl_target: float | None = field(
        default=None,
        metadata=help_text(
            "adapt β toward this KL per response in nats (TRL's adaptive controller); None keeps --kl-coef fixed"
        ),
    )
    kl_horizon: int = field(
        default=10_000,
        metadata=help_text("decisions over which the adaptive controller moves β by at most a factor of 1.2"),
    )
    reject_cost: float = field(
        default=0.0,
        metadata=help_text("reward subtracted per rejection while training (proxy_env.wrappers.RejectCost; 0: none)"),
    )
    eval_prompts: str = field(
        default="default-eval", metadata=help_text("held-out prompts for periodic evaluation ('' disables)")
    )
    eval_freq: int = field(default=0, metadata=help_text("evaluate on eval_prompts every this many steps (0: never)"))
    eval_episodes: int = field(default=16, metadata=help_text("episodes per evaluation"))
    resume: str | None = field(default=None, metadata=help_text("continue training from this checkpoint folder"))
    init_from: str | None = field(
        default=None,
        metadata=help_text(
            "start the policy from this checkpoint folder's weights (a tilt fit, say) with this run's "
            "hyper-parameters and a fresh optimiser (--init-accept-prob is not applied); --resume instead continues "
            "that checkpoint's own run"
        ),
    )
    critic_warmup: int = field(
        default=0,
        metadata=help_text(
            "on-policy algorithms: the first this many updates train the value head only, the actor frozen "
            "(a critic for a policy loaded by --init-from before it moves)"
        ),
    )
    trust_checkpoint: bool = field(
        default=False,
        metadata=help_text(
            "allow --resume from an SB3 proxy.zip (format 1), whose loading unpickles Python objects and can run code"
        ),
    )
    verbose: int = field(default=0, metadata=help_text("SB3 verbosity: 0, 1 (log tables) or 2"))

    def validate(self) -> None:
        """The shared checks, then SB3's: raise :class:`ConfigError` naming the field, before any model loads."""
        get_algo(self.algo)
        super().validate()
        check_int("eval_episodes", self.eval_episodes, minimum=1)
        check_int("eval_freq", self.eval_freq, minimum=0, hint="0 disables")
        if self.eval_freq and self.eval_prompts:  # a bad file is named as eval_prompts, before training starts
            load_prompts(self.eval_prompts, arg="eval_prompts")
        KLController(self.env.kl_coef, target=self.kl_target, horizon=self.kl_horizon)  # validates the three
        if self.resume is not None and not Path(self.resume).expanduser().is_dir():
            read_meta(self.resume)  # raises, naming a copy a killed save left aside if there is one
            raise ConfigError(
                f"resume={self.resume!r} is not a checkpoint folder; pass a folder written by --save-dir."
            )
        check_number("reject_cost", self.reject_cost, lambda v: v >= 0, ">= 0 (0: no cost)")
        self._check_init()
        for key, (ok, what) in _ALGO_RANGES.items():
            if key in self.algo_kwargs and not (_is_number(self.algo_kwargs[key]) and ok(self.algo_kwargs[key])):
                raise ConfigError(f"algo_kwargs[{key!r}]={self.algo_kwargs[key]!r} must be {what}.")
        _check_resume(self)

    def _check_init(self) -> None:
        check_int("critic_warmup", self.critic_warmup, minimum=0, hint="0: the actor learns from the first update")
        if self.critic_warmup and (not get_algo(self.algo).on_policy or self.algo.lower() == "trpo"):
            raise ConfigError(
                f"critic_warmup={self.critic_warmup} needs an on-policy actor-critic trained by one optimiser (ppo, "
                f"a2c, recurrentppo); algo={self.algo!r} has no value head to warm up alone (TRPO moves its actor by "
                "its own natural-gradient step): pass --critic-warmup 0."
            )
        if self.init_from is None:
            return
        if self.resume is not None:
            raise ConfigError(
                f"init_from={self.init_from!r} and resume={self.resume!r} both given: --resume continues a run "
                "(its hyper-parameters, optimiser and step count), --init-from starts a new one from its weights; pass one."
            )
        if not Path(self.init_from).expanduser().is_dir():
            raise ConfigError(
                f"init_from={self.init_from!r} is not a checkpoint folder; pass a folder written by --save-dir."
            )
        warn_settings(f"init_from={self.init_from!r}", read_meta(self.init_from).env_kwargs, self)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# algo_kwargs SB3 would take and then fail on deep inside training (or train nothing with)
_ALGO_RANGES: dict[str, tuple[Any, str]] = {
    "n_epochs": (lambda v: isinstance(v, int) and v >= 1, "an int >= 1"),
    "n_steps": (lambda v: isinstance(v, int) and v >= 1, "an int >= 1"),
    "batch_size": (lambda v: isinstance(v, int) and v >= 2, "an int >= 2"),
    "buffer_size": (lambda v: isinstance(v, int) and v >= 1, "an int >= 1"),
    "learning_starts": (lambda v: isinstance(v, int) and v >= 0, "an int >= 0"),
    "learning_rate": (lambda v: 0 < v <= 1, "a number in (0, 1]"),
    "gamma": (lambda v: 0 <= v <= 1, "a number in [0, 1]"),
    "gae_lambda": (lambda v: 0 <= v <= 1, "a number in [0, 1]"),
    "clip_range": (lambda v: v > 0, "a number > 0"),
    "ent_coef": (lambda v: v >= 0, "a number >= 0"),
    "vf_coef": (lambda v: v >= 0, "a number >= 0"),
    "max_grad_norm": (lambda v: v > 0, "a number > 0"),
}


def make_sb3_env(
    kwargs: dict[str, Any], num_envs: int, *, seed: int | None = None, reject_cost: float = 0.0
) -> SB3VecEnv:
    """A :class:`SB3VecEnv` over ``gym.make_vec(ENV_ID, num_envs, **kwargs)``; ``"tiny"`` models resolved.

    ``reject_cost > 0`` wraps the vector env in :class:`proxy_env.wrappers.RejectCost` first.
    """
    kwargs = dict(kwargs)
    if kwargs.get("model") == "tiny":
        kwargs["model"] = resolve_lm("tiny")
    venv = gym.make_vec(proxy_env.ENV_ID, num_envs=num_envs, vectorization_mode="vector_entry_point", **kwargs)
    env = SB3VecEnv(RejectCost(venv, reject_cost) if reject_cost else venv)
    if seed is not None:
        env.seed(seed)
    return env


def _algo_kwargs(cfg: SB3Config) -> dict[str, Any]:
    spec = get_algo(cfg.algo)
    out: dict[str, Any] = {"gamma": cfg.gamma}
    if cfg.learning_rate is not None:
        out["learning_rate"] = cfg.learning_rate
    if cfg.batch_size is not None and cfg.algo not in ("a2c",):
        out["batch_size"] = cfg.batch_size
    if cfg.n_steps is not None:
        if not spec.on_policy:
            raise ConfigError(
                f"n_steps={cfg.n_steps} applies to on-policy algorithms only, not algo={cfg.algo!r}; leave it unset."
            )
        out["n_steps"] = cfg.n_steps
    return {**out, **cfg.algo_kwargs}


def build_agent(cfg: SB3Config, env: SB3VecEnv) -> Any:
    """A fresh agent, or the one in ``cfg.resume`` attached to ``env``."""
    if cfg.resume is not None:
        checkpoint = load_checkpoint(cfg.resume, env=env, device=cfg.policy_device, trust=cfg.trust_checkpoint)
        checkpoint.model.tensorboard_log = cfg.tensorboard_log
        return checkpoint.model
    spec = get_algo(cfg.algo)
    policy_kwargs = proxy_policy_kwargs(cfg.algo.lower(), features_dim=cfg.features_dim, hidden=tuple(cfg.hidden))
    cls, extra = spec.load_class(), _algo_kwargs(cfg)
    _check_algo_kwargs(cls, cfg.algo, extra)
    try:
        agent = cls(
            spec.policy,
            env,
            policy_kwargs=policy_kwargs,
            seed=cfg.seed,
            device=cfg.policy_device,
            tensorboard_log=cfg.tensorboard_log,
            verbose=cfg.verbose,
            **extra,
        )
    except (AssertionError, ValueError, TypeError) as exc:  # SB3 checks its hyper-parameters with asserts
        raise ConfigError(f"{cls.__name__} (algo={cfg.algo!r}) refused its hyper-parameters {extra}: {exc}") from exc
    if cfg.init_from is not None:
        source = load_checkpoint(cfg.init_from, device=cfg.policy_device, trust=cfg.trust_checkpoint)
        copy_policy(
            agent, source.model, where=f"init_from={cfg.init_from!r}", source_algo=source.meta.algo, algo=cfg.algo
        )
    elif cfg.init_accept_prob is not None:
        init_accept_bias(agent, cfg.init_accept_prob)
    return agent


def _check_algo_kwargs(cls: Any, algo: str, kwargs: dict[str, Any]) -> None:
    """Every key of ``algo_kwargs`` must be a keyword of the algorithm: a did-you-mean error names the bad one."""
    import inspect

    from proxy_env.errors import did_you_mean

    known = [name for name in inspect.signature(cls.__init__).parameters if name not in ("self", "policy", "env")]
    for key in kwargs:
        if key not in known:
            raise ConfigError(
                f"algo_kwargs has {key!r}, which is not a keyword of {cls.__name__} (algo={algo!r})."
                + did_you_mean(key, known)
                + f" Its keywords: {known}."
            )


def _progress(cfg: SB3Config) -> tuple[bool, list[BaseCallback]]:
    """SB3's own bar when tqdm and rich are installed, else a plain tqdm callback."""
    if not cfg.progress_bar:
        return False, []
    if _installed("rich") and _installed("tqdm"):
        return True, []
    return False, [TqdmCallback()]


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _check_resume(cfg: SB3Config) -> None:
    """The resume checkpoint's algorithm and format, checked before any model is loaded."""
    if cfg.resume is None:
        return
    meta = read_meta(cfg.resume)
    if meta.algo != cfg.algo.lower():
        raise ConfigError(
            f"resume={cfg.resume!r} holds a {meta.algo!r} checkpoint but algo={cfg.algo!r}; "
            f"pass algo={meta.algo!r} (--algo {meta.algo})."
        )
    if meta.format_version == 1 and not cfg.trust_checkpoint:
        load_checkpoint(cfg.resume, trust=False)  # raises the error that explains the risk and the flag
    warn_settings(f"resume={cfg.resume!r}", meta.env_kwargs, cfg)


def warn_settings(where: str, saved: dict[str, Any], cfg: SB3Config) -> None:
    """Warn, naming them, where this run's env settings differ from a checkpoint's (``--resume``, ``--init-from``)."""
    now = plain(env_kwargs(cfg))
    differ = sorted(k for k in set(saved) | set(now) if k not in ("model", "reward") and saved.get(k) != now.get(k))
    if differ:  # allowed (a curriculum changes the budget, say), but never silently
        warnings.warn(
            f"{where}: the env settings differ from the checkpoint's ("
            + ", ".join(f"{k} {saved.get(k)!r} -> {now.get(k)!r}" for k in differ)
            + "); training continues with the new ones, and the checkpoint it saves records them.",
            stacklevel=4,
        )


def train(
    cfg: SB3Config, *, model: FrozenLM | None = None, reward: Any = None, callbacks: list[BaseCallback] | None = None
) -> TrainResult:
    """Train a proxy as configured by ``cfg``.

    Before anything is loaded the configuration, the resume checkpoint and the save folder are
    checked, and the save folder is locked for this run (a second run on it fails at once). The
    first SIGINT or SIGTERM stops training after the current step and the checkpoint is still
    saved (``TrainResult.interrupted`` names the signal); a second one interrupts at once. If the
    final save fails, the proxy is saved beside ``save_dir`` instead and the error names both.

    Args:
        cfg: the configuration (validated before any model is loaded).
        model: an already loaded :class:`FrozenLM` used instead of ``cfg.env.model`` (shared, not copied).
        reward: a reward callable ``(prompts, responses) -> floats`` used instead of ``cfg.env.reward``.
        callbacks: extra SB3 callbacks.

    Returns:
        The trained algorithm, the final checkpoint folder (if ``cfg.save_dir``), the parameter
        report, the periodic evaluations and the signal that stopped training, if any.
    """
    return run_training(cfg, lambda stop: _train(cfg, model, reward, list(callbacks or []), stop))


def _train(
    cfg: SB3Config, model: FrozenLM | None, reward: Any, callbacks: list[BaseCallback], stop: GracefulStop
) -> TrainResult:
    lm = resolve_lm(model if model is not None else cfg.env.model, cfg.llm_device)
    kwargs = {**env_kwargs(cfg), "model": lm, "reward": reward if reward is not None else cfg.env.reward}
    penalty = (
        {"kl_coef": cfg.env.kl_coef} if cfg.env.kl_coef else {}
    )  # training only: checkpoints and evaluation envs pay no KL
    env = make_sb3_env({**kwargs, **penalty}, cfg.num_envs, seed=cfg.seed, reject_cost=cfg.reject_cost)
    evaluator = None
    kl_callback = (
        KLPenaltyCallback(KLController(cfg.env.kl_coef, target=cfg.kl_target, horizon=cfg.kl_horizon))
        if cfg.env.kl_coef
        else None
    )
    try:
        for source in (cfg.resume, cfg.init_from):
            if source is not None:
                check_lm(read_meta(source), lm, source)
        _check_rollout_memory(cfg, env)
        agent = build_agent(cfg, env)
        extra: list[BaseCallback] = [EpisodeStatsCallback(), StopOnSignalCallback(stop)]
        if kl_callback is not None:
            extra.append(kl_callback)
        if cfg.critic_warmup:
            extra.append(CriticWarmupCallback(cfg.critic_warmup))
        if cfg.eval_freq > 0 and cfg.eval_prompts:
            eval_env = make_sb3_env({**kwargs, "prompts": cfg.eval_prompts}, cfg.num_envs, reject_cost=cfg.reject_cost)
            evaluator = EvalCallback(eval_env, cfg.eval_freq, cfg.eval_episodes, seed=cfg.seed)
            extra.append(evaluator)
        saved = saved_env_kwargs(cfg, model, reward)
        save = (
            partial(save_agent, path=cfg.save_dir, env_kwargs=saved, seed=cfg.seed, config=config_dict(cfg), lm=lm)
            if cfg.save_dir
            else None
        )
        if save is not None and cfg.save_freq > 0:
            extra.append(CheckpointCallback(partial(periodic_save, save), cfg.save_freq))
        if cfg.time_limit_s > 0:
            extra.append(TimeLimitCallback(cfg.time_limit_s))
        progress_bar, bars = _progress(cfg)
        agent.learn(
            cfg.total_timesteps,
            callback=CallbackList(extra + bars + callbacks),
            progress_bar=progress_bar,
            reset_num_timesteps=cfg.resume is None,
            tb_log_name=cfg.algo.lower(),
        )
        path = save_or_rescue(save, agent, cfg.save_dir) if save is not None and cfg.save_dir else None
    finally:
        env.close()
        if evaluator is not None:
            evaluator.env.close()
    return TrainResult(
        agent,
        path,
        param_report(agent, lm.num_parameters),
        evaluator.history if evaluator else [],
        kl_callback.history if kl_callback is not None else [],
        stop.received,
    )


def _check_rollout_memory(cfg: SB3Config, env: SB3VecEnv) -> None:
    """An on-policy rollout buffer holds n_steps x num_envs observations: refuse one that cannot fit in memory."""
    from proxy_env.guards import available_bytes, gib

    spec = get_algo(cfg.algo)
    n_steps = cfg.n_steps or int(cfg.algo_kwargs.get("n_steps", 0) or 0)
    if not spec.on_policy or not n_steps:
        return
    dim = int(np.prod(env.observation_space.shape or ()))
    need = n_steps * cfg.num_envs * (dim + 8) * 4  # float32 obs + a few scalars per step
    free = available_bytes(None)
    if free is not None and need > free:
        raise ConfigError(
            f"n_steps={n_steps} x num_envs={cfg.num_envs} rollouts of {dim}-float observations "
            f"need ~{gib(need)} GiB, more than the {gib(free)} GiB of memory available; lower n_steps or num_envs."
        )
