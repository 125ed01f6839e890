"""``proxy-rlhf train --backend rllib``: its config (:class:`RLlibConfig`), the RLlib algorithm config, Ray start-up.

Each RLlib EnvRunner builds its vector env with :func:`proxy_env.adapters.rllib.make_rllib_env` (registered
here with ``tune.register_env``) from plain data (:func:`env_config`: the model's name or path, never a
loaded model), with ``NEXT_STEP`` autoreset forced. The network is :class:`agents.rllib.module.ProxyRLModule`
(SB3's LayerNorm→MLP proxy), so the trained proxy is saved in our checkpoint format
(:func:`agents.rllib.train.to_sb3`) and ``generate`` / ``bench`` load it as they load an SB3 proxy.

Ray is optional: ``pip install -e '.[rllib]'``. ``RAY_AUTH_MODE=disabled`` is set before Ray starts
(else it writes ``~/.ray/auth_token``); ``address`` joins an existing cluster (``ray start --head``).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, ClassVar

from agents.training import RLConfig, check_int, check_number, env_kwargs, help_text
from proxy_env.adapters.rllib import is_plain_data, make_rllib_env
from proxy_env.errors import ConfigError, did_you_mean

ENV_NAME = "proxy_rlhf_rllib"  # the name registered with tune.register_env
INSTALL = "pip install -e '.[rllib]'"
# algorithm -> (module of its config class, class name, takes ProxyRLModule)
ALGOS: dict[str, tuple[str, str, bool]] = {
    "ppo": ("ray.rllib.algorithms.ppo", "PPOConfig", True),
    "appo": ("ray.rllib.algorithms.appo", "APPOConfig", True),
    "impala": ("ray.rllib.algorithms.impala", "IMPALAConfig", True),
    "dqn": (
        "ray.rllib.algorithms.dqn",
        "DQNConfig",
        False,
    ),  # RLlib's own Q-network: trains, cannot be saved in our format
    "sac": ("ray.rllib.algorithms.sac", "SACConfig", False),  # discrete SAC, likewise
}


@dataclass(kw_only=True)
class RLlibConfig(RLConfig):
    """``proxy-rlhf train --backend rllib``: the shared settings, RLlib's, and how training spreads over Ray.

    Each field is a flag. The env's ``kl_coef`` must be 0 (the KL charge needs the proxy's accept probabilities
    in every runner's env, which RLlib does not hand over).
    """

    refused_env_settings: ClassVar[tuple[str, ...]] = ("kl_coef",)

    num_env_runners: int = field(
        default=2, metadata=help_text("RLlib env runners (Ray actors), each with its own LLM and vector env")
    )
    num_envs_per_runner: int | None = field(
        default=None, metadata=help_text("rows of each runner's vector env (None: --num-envs)")
    )
    gpus_per_runner: float = field(
        default=0.0, metadata=help_text("GPUs per env runner (fractional: 0.5 puts two runners on a GPU)")
    )
    cpus_per_runner: float = field(default=1.0, metadata=help_text("CPUs Ray reserves per env runner"))
    threads_per_runner: int = field(
        default=1, metadata=help_text("torch threads in each env runner (and the local learner)")
    )
    num_learners: int = field(default=0, metadata=help_text("remote learner actors (0: learn in the driver process)"))
    gpus_per_learner: float = field(
        default=0.0, metadata=help_text("GPUs per learner (with --num-learners 0: the driver's learner)")
    )
    address: str | None = field(
        default=None,
        metadata=help_text("Ray cluster to join ('auto' or host:port of `ray start --head`); None starts a local Ray"),
    )
    num_cpus: int | None = field(
        default=None, metadata=help_text("CPUs of the local Ray (None: what the runners and learners need, >= 2)")
    )
    llm_device_map: str | None = field(
        default=None,
        metadata=help_text(
            "spread each runner's LLM over its GPUs with this transformers device_map ('auto', 'balanced'...); None: one device"
        ),
    )

    def validate(self) -> None:
        """The shared checks, then RLlib's and the cluster's, before Ray starts."""
        check_algo(self.algo)
        super().validate()
        if self.env.kl_coef != 0.0:
            raise ConfigError(
                f"kl_coef={self.env.kl_coef!r} is not supported by --backend rllib; leave it at 0.0 "
                "or train with --backend sb3."
            )
        for name in ("num_env_runners", "num_learners"):
            check_int(name, getattr(self, name), minimum=0)
        check_int("threads_per_runner", self.threads_per_runner, minimum=1)
        for name in ("num_envs_per_runner", "num_cpus"):
            if getattr(self, name) is not None:
                check_int(name, getattr(self, name), minimum=1)
        for name in ("gpus_per_runner", "gpus_per_learner", "cpus_per_runner"):
            check_number(name, getattr(self, name), lambda v: v >= 0, ">= 0 (fractions share a device)")
        if self.save_dir is not None and not ALGOS[check_algo(self.algo)][2]:
            raise ConfigError(
                f"algo={self.algo!r} on the rllib backend trains RLlib's own network, which our checkpoint format "
                f"cannot hold; drop save_dir or use one of {[a for a, s in ALGOS.items() if s[2]]}."
            )
        env_config(self)


def check_algo(algo: str) -> str:
    """The lower-cased RLlib algorithm name, or a :class:`ConfigError` with the closest valid one."""
    name = algo.lower()
    if name not in ALGOS:
        raise ConfigError(
            f"algo={algo!r} is not an algorithm of the rllib backend; expected one of {list(ALGOS)}."
            + did_you_mean(name, list(ALGOS))
        )
    return name


def require_ray() -> Any:
    """Import Ray (``RAY_AUTH_MODE=disabled`` first), or raise with the install command."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # else Ray writes ~/.ray/auth_token
    try:
        import ray
        import ray.rllib
    except ImportError as exc:
        raise ConfigError(f"--backend rllib needs Ray RLlib, which is not installed: {INSTALL}") from exc
    return ray


def env_config(cfg: RLlibConfig) -> dict[str, Any]:
    """The plain-data env config each runner rebuilds its vector env from."""
    config = {
        **env_kwargs(cfg),
        "autoreset_mode": "next_step",
        "threads": cfg.threads_per_runner,
        "device": cfg.llm_device,
        "device_map": cfg.llm_device_map,
    }
    bad = {k: v for k, v in config.items() if not is_plain_data(v)}
    if bad:
        raise ConfigError(
            f"the rllib backend sends env settings to its runners as plain data, but {bad} are objects; "
            "pass a reward name or folder and a model name or path (--reward, --model)."
        )
    return config


def _on_episode_end(*, episode: Any, metrics_logger: Any = None, **kwargs: Any) -> None:
    """Log the env's end-of-episode fields (SB3's rollout/rejection_rate, response_length, reward_raw)."""
    info = episode.get_infos(-1)
    decisions = info.get("decisions")
    if metrics_logger is None or decisions is None:
        return
    metrics_logger.log_value("rejection_rate", float(info["num_rejections"]) / max(1.0, float(decisions)), window=100)
    for key in ("response_length", "reward_raw"):
        if key in info:
            metrics_logger.log_value(key, float(info[key]), window=100)


def build_config(cfg: RLlibConfig) -> Any:
    """The RLlib ``AlgorithmConfig`` of ``cfg`` (the env registered under :data:`ENV_NAME`)."""
    import importlib

    from ray import tune
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    algo = check_algo(cfg.algo)
    module, cls_name, ours = ALGOS[algo]
    tune.register_env(ENV_NAME, make_rllib_env)
    envs = cfg.num_envs_per_runner or cfg.num_envs
    runners = max(1, cfg.num_env_runners)
    config = (
        getattr(importlib.import_module(module), cls_name)()
        .environment(ENV_NAME, env_config=env_config(cfg))
        .env_runners(
            num_env_runners=cfg.num_env_runners,
            num_envs_per_env_runner=envs,
            gym_env_vectorize_mode="vector_entry_point",
            num_gpus_per_env_runner=cfg.gpus_per_runner,
            num_cpus_per_env_runner=cfg.cpus_per_runner,
            rollout_fragment_length=cfg.n_steps or "auto",
        )
        .learners(num_learners=cfg.num_learners, num_gpus_per_learner=cfg.gpus_per_learner)
        .callbacks(on_episode_end=_on_episode_end)
        .debugging(seed=cfg.seed)
    )
    training: dict[str, Any] = {"gamma": cfg.gamma}
    if cfg.learning_rate is not None:
        training["lr"] = cfg.learning_rate
    if algo != "dqn" and cfg.n_steps is not None:
        training["train_batch_size_per_learner"] = cfg.n_steps * envs * runners // max(1, cfg.num_learners)
    if algo in ("ppo",) and cfg.batch_size is not None:
        training["minibatch_size"] = cfg.batch_size
    try:
        config = config.training(**{**training, **cfg.algo_kwargs})
    except TypeError as exc:
        raise ConfigError(
            f"algo_kwargs={cfg.algo_kwargs} has a key that is not a training() setting of RLlib's {cls_name}: {exc}"
        ) from exc
    if ours:
        model_config = {
            "features_dim": cfg.features_dim,
            "hidden": list(cfg.hidden),
            "init_accept_prob": cfg.init_accept_prob,
        }
        from agents.rllib.module import ProxyRLModule

        config = config.rl_module(rl_module_spec=RLModuleSpec(module_class=ProxyRLModule, model_config=model_config))
    return config


def ray_init(cfg: RLlibConfig) -> Any:
    """Start (or join, with ``address``) Ray without a dashboard; return the ``ray`` module."""
    ray = require_ray()
    if ray.is_initialized():
        return ray
    if cfg.address:
        ray.init(address=cfg.address, include_dashboard=False, log_to_driver=False)
    else:
        need = math.ceil(cfg.num_env_runners * cfg.cpus_per_runner) + cfg.num_learners
        ray.init(num_cpus=cfg.num_cpus or max(2, need), include_dashboard=False, log_to_driver=False)
    return ray


def runner_facts(algo: Any) -> list[dict[str, Any]]:
    """What each env runner holds: its env's class and autoreset mode, rows, the LLM's fingerprint and size."""

    def facts(runner: Any) -> dict[str, Any]:
        from agents.saving.format import llm_fingerprint

        env = runner.env.unwrapped
        return {
            "env": type(env).__name__,
            "autoreset_mode": env.metadata["autoreset_mode"].name,
            "num_envs": env.num_envs,
            "llm_parameters": env.lm.num_parameters,
            "fingerprint": llm_fingerprint(env.lm),
            "pid": os.getpid(),
            "obs_dim": int(env.single_observation_space.shape[0]),
        }

    remote = algo.config.num_env_runners > 0
    return algo.env_runner_group.foreach_env_runner(facts, local_env_runner=not remote)
