"""The RLlib training loop of ``proxy-rlhf train --backend rllib``: TensorBoard scalars as SB3's, checkpoints in our format.

Set-up (configs, the env creator, Ray) is in :mod:`agents.rllib.backend`; the network in
:mod:`agents.rllib.module`. The proxy RLlib trains is exported as an SB3 PPO holding the same tensors
(:func:`to_sb3`), so its checkpoint is an ordinary one: ``generate``, ``bench`` and the exact KL read it
as they read an SB3 proxy (``proxy_config.json`` records ``config.backend = "rllib"``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from agents.rllib.backend import ALGOS, RLlibConfig, build_config, ray_init, require_ray, runner_facts
from agents.training import TrainResult, config_dict, env_kwargs, run_training

# RLlib learner metric -> the SB3 TensorBoard tag it corresponds to
SB3_TAGS = {
    "policy_loss": "train/policy_gradient_loss",
    "vf_loss": "train/value_loss",
    "entropy": "train/entropy",
    "mean_kl_loss": "train/approx_kl",
    "total_loss": "train/loss",
    "default_optimizer_learning_rate": "train/learning_rate",
}

# called with (algo, None) once the runners are up, then (algo, result) after every training iteration
IterationHook = Callable[[Any, "dict[str, Any] | None"], None]


def module_weights(algo: Any) -> dict[str, Any]:
    """The learner's current ``ProxyRLModule`` tensors (numpy), keyed as its ``state_dict``."""
    from ray.rllib.core import DEFAULT_MODULE_ID

    return algo.learner_group.get_weights()[DEFAULT_MODULE_ID]


def to_sb3(weights: dict[str, Any], observation_space: Any, cfg: RLlibConfig, num_timesteps: int) -> Any:
    """An SB3 PPO holding the proxy of ``weights`` (a :class:`ProxyRLModule` state): what our checkpoints and ``bench`` take."""
    import torch
    from gymnasium import spaces
    from stable_baselines3 import PPO

    from agents.policies import proxy_policy_kwargs

    kwargs = proxy_policy_kwargs("ppo", features_dim=cfg.features_dim, hidden=tuple(cfg.hidden))
    model = PPO(
        "MlpPolicy",
        None,  # type: ignore[arg-type]  # no env: SB3's own load() builds a model this way
        policy_kwargs=kwargs,
        device="cpu",
        gamma=cfg.gamma,
        _init_setup_model=False,
        learning_rate=cfg.learning_rate if cfg.learning_rate is not None else 3e-4,  # PPO's own default
    )
    model.observation_space, model.action_space, model.n_envs = observation_space, spaces.Discrete(2), 1
    model._setup_model()  # what SB3's load() does for a model without an env
    state = {k[len("policy.") :]: torch.as_tensor(v) for k, v in weights.items() if k.startswith("policy.")}
    model.policy.load_state_dict(state, strict=True)
    model.num_timesteps = int(num_timesteps)
    return model


def train_rllib(cfg: RLlibConfig, *, on_iteration: IterationHook | None = None) -> TrainResult:
    """Train a proxy with RLlib as configured by ``cfg`` (what to train, and where: runners, GPUs, cluster).

    Runs in :func:`agents.training.run_training`: everything is validated and the save folder locked before
    Ray starts; SIGINT/SIGTERM stop after the current iteration and the checkpoint is still saved. An
    iteration samples ``n_steps`` per env on every runner (RLlib's ``"auto"`` when None), so training
    stops at the first iteration that reaches ``total_timesteps``. Ray is shut down at the end when
    this call started it.

    Args:
        cfg: the configuration (``algo`` is one of :data:`agents.rllib.backend.ALGOS`).
        on_iteration: called with ``(algo, None)`` once the runners are up, then with ``(algo, result)``
            after each ``algo.train()`` (RLlib's ``Algorithm`` and its result dict).

    Returns:
        A :class:`~agents.training.TrainResult` whose ``model`` is the proxy as an SB3 PPO (what the
        checkpoint holds; ``num_timesteps`` = env steps sampled).
    """
    return run_training(cfg, lambda stop: _train(cfg, stop, on_iteration))


def _train(cfg: RLlibConfig, stop: Any, on_iteration: IterationHook | None) -> TrainResult:
    import torch

    from agents.policies import ParamReport

    ray = require_ray()
    started_here = not ray.is_initialized()
    ray_init(cfg)
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads_per_runner)  # the driver's learner, like each runner
    algo = writer = bar = None
    try:
        algo = build_config(cfg).build_algo()
        facts = runner_facts(algo)
        writer = _writer(cfg.tensorboard_log, cfg.algo.lower())
        steps, start, saved_at, path = 0, time.perf_counter(), 0, None
        save = _saver(cfg, facts[0]) if cfg.save_dir else None
        if on_iteration is not None:
            on_iteration(algo, None)
        if cfg.progress_bar:
            from tqdm import tqdm

            bar = tqdm(total=cfg.total_timesteps, unit="decisions", desc=f"rllib {cfg.algo.lower()}")
        while steps < cfg.total_timesteps and stop.received is None:
            result = algo.train()
            steps = int(
                result.get("env_runners", {}).get("num_env_steps_sampled_lifetime", 0)
                or result.get("num_env_steps_sampled_lifetime", 0)
            )
            if writer is not None:
                log_scalars(writer, result, steps, time.perf_counter() - start)
            if bar is not None:
                bar.update(min(steps, cfg.total_timesteps) - bar.n)
            if on_iteration is not None:
                on_iteration(algo, result)
            if save is not None and cfg.save_freq and steps - saved_at >= cfg.save_freq:
                from agents.saving.checkpoint import periodic_save

                periodic_save(lambda agent, n=steps, **kw: save(algo, n, **kw), RLlibWeights(steps, {}))
                saved_at = steps
            if cfg.time_limit_s and time.perf_counter() - start >= cfg.time_limit_s:
                break
        weights = module_weights(algo)
        model = (
            to_sb3(weights, _obs_space(facts[0]), cfg, steps)
            if ALGOS[cfg.algo.lower()][2]
            else RLlibWeights(steps, weights)
        )
        if save is not None and (save_dir := cfg.save_dir):
            from agents.saving.checkpoint import save_or_rescue

            path = save_or_rescue(lambda agent, **kw: save(algo, steps, **kw), model, save_dir)
        from agents.policies import count_trainable

        proxy = (
            count_trainable(model)
            if not isinstance(model, RLlibWeights)
            else sum(int(v.size) for k, v in weights.items() if "target" not in k)
        )
        params = ParamReport(proxy, int(facts[0]["llm_parameters"]))
        return TrainResult(model, path, params, [], [], stop.received)
    finally:
        if bar is not None:
            bar.close()
        if writer is not None:
            writer.close()
        if algo is not None:
            algo.stop()
        if started_here:
            ray.shutdown()
        torch.set_num_threads(threads)


class RLlibWeights(NamedTuple):
    """The result's ``model`` for an algorithm trained with RLlib's own network (DQN): its tensors, not an SB3 proxy."""

    num_timesteps: int
    weights: dict[str, Any]


def _obs_space(facts: dict[str, Any]) -> Any:
    import numpy as np
    from gymnasium import spaces

    return spaces.Box(-np.inf, np.inf, (int(facts["obs_dim"]),), np.float32)


def _saver(cfg: RLlibConfig, facts: dict[str, Any]) -> Any:
    """``save(algo, steps, path=cfg.save_dir)``: the learner's proxy written in our checkpoint format."""
    from agents.saving.checkpoint import plain, save_checkpoint

    config = {**config_dict(cfg), "backend": "rllib", "rllib_algo": cfg.algo.lower()}

    def save(algo: Any, steps: int, path: str | None = None) -> Path:
        model = to_sb3(module_weights(algo), _obs_space(facts), cfg, steps)
        target = path or cfg.save_dir
        assert target is not None  # a saver is made only with save_dir
        return save_checkpoint(
            model,
            target,
            env_kwargs=plain(env_kwargs(cfg)),
            seed=cfg.seed,
            config=config,
            llm={"fingerprint": facts["fingerprint"]},
        )

    return save


def _writer(folder: str | None, algo: str) -> Any:
    """A TensorBoard writer in ``folder/rllib_<algo>_<N>`` (SB3 names its runs ``<algo>_<N>``), or None."""
    if not folder:
        return None
    from torch.utils.tensorboard import SummaryWriter

    root = Path(folder).expanduser()
    n = 1 + max(
        [int(p.name.rsplit("_", 1)[1]) for p in root.glob(f"rllib_{algo}_*") if p.name.rsplit("_", 1)[1].isdigit()]
        or [0]
    )
    return SummaryWriter(str(root / f"rllib_{algo}_{n}"))


def log_scalars(writer: Any, result: dict[str, Any], steps: int, seconds: float) -> None:
    """SB3's TensorBoard tags from one RLlib result (rollout/ep_rew_mean, train/value_loss, time/fps...)."""
    runners = result.get("env_runners", {})
    scalars = {
        "rollout/ep_rew_mean": runners.get("episode_return_mean"),
        "rollout/ep_len_mean": runners.get("episode_len_mean"),
        "time/fps": steps / seconds if seconds > 0 else None,
    }
    for key in ("rejection_rate", "response_length", "reward_raw"):
        scalars[f"rollout/{key}"] = runners.get(key)
    learner = result.get("learners", {}).get("default_policy", {})
    for key, tag in SB3_TAGS.items():
        scalars[tag] = learner.get(key)
    for tag, value in scalars.items():
        if isinstance(value, (int, float)) and math.isfinite(value):
            writer.add_scalar(tag, float(value), steps)
    writer.flush()
