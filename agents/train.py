"""Train a proxy with any registered SB3 / sb3-contrib algorithm; checkpoints and TensorBoard logs.

>>> from proxy_env.config import EnvConfig
>>> cfg = TrainConfig(env=EnvConfig(model="tiny", prompts=["Hi!"], max_new_tokens=4), num_envs=2, total_timesteps=64,
...                   n_steps=16, batch_size=16, eval_freq=0)
>>> result = train(cfg, reward=lambda prompts, responses: [0.0] * len(responses))
>>> result.model.num_timesteps >= 64 and result.params.proxy < 20_000
True
"""

from __future__ import annotations

import importlib.util
import logging
import math
from dataclasses import dataclass, field, fields
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import gymnasium as gym
from stable_baselines3.common.callbacks import BaseCallback, CallbackList

import proxy_env
from agents.algos import get_algo
from agents.callbacks import (
    CheckpointCallback,
    EpisodeStatsCallback,
    EvalCallback,
    EvalResult,
    TimeLimitCallback,
    TqdmCallback,
)
from agents.interrupt import GracefulStop, StopOnSignalCallback
from agents.kl_control import KLController, KLPenaltyCallback
from agents.policies import ParamReport, init_accept_bias, param_report, proxy_policy_kwargs
from agents.saving.checkpoint import (
    CheckpointError,
    check_lm,
    check_save_dir,
    load_checkpoint,
    lock_save_dir,
    periodic_save,
    plain,
    read_meta,
    save_checkpoint,
    save_or_rescue,
)
from proxy_env.adapters.sb3 import SB3VecEnv
from proxy_env.config import EnvConfig
from proxy_env.engine.lm import FrozenLM
from proxy_env.engine.models import as_frozen_lm
from proxy_env.errors import ConfigError, ConfigTypeError

logger = logging.getLogger(__name__)

__all__ = [
    "CheckpointError",
    "TrainConfig",
    "TrainResult",
    "env_kwargs",
    "load_checkpoint",
    "make_sb3_env",
    "resolve_lm",
    "train",
]


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class TrainConfig:
    """Everything ``train`` needs; each field is a ``proxy-rlhf train`` flag (``--field-name``)."""

    algo: str = field(default="ppo", metadata=_help("RL algorithm: ppo, a2c, dqn, qrdqn, recurrentppo or trpo"))
    env: EnvConfig = field(
        default_factory=EnvConfig, metadata=_help("the env's settings: every field of proxy_env.EnvConfig is a flag")
    )
    eval_prompts: str = field(
        default="default-eval", metadata=_help("held-out prompts for periodic evaluation ('' disables)")
    )
    kl_target: float | None = field(
        default=None,
        metadata=_help(
            "adapt β toward this KL per response in nats (TRL's adaptive controller); None keeps --kl-coef fixed"
        ),
    )
    kl_horizon: int = field(
        default=10_000,
        metadata=_help("decisions over which the adaptive controller moves β by at most a factor of 1.2"),
    )
    num_envs: int = field(default=8, metadata=_help("episodes run in parallel (rows of the batched LLM)"))
    total_timesteps: int = field(
        default=20_000, metadata=_help("proxy decisions to train for (with --resume: additional ones)")
    )
    seed: int = field(default=0, metadata=_help("seed of the algorithm and the environment"))
    policy_device: str = field(
        default="auto", metadata=_help("torch device of the proxy policy: 'auto', 'cpu', 'cuda'")
    )
    llm_device: str | None = field(default=None, metadata=_help("device of the frozen LLM (None: CUDA when available)"))
    learning_rate: float | None = field(default=None, metadata=_help("learning rate (None: the algorithm's default)"))
    n_steps: int | None = field(
        default=None, metadata=_help("on-policy rollout length per env (None: the algorithm's default)")
    )
    batch_size: int | None = field(default=None, metadata=_help("minibatch size (None: the algorithm's default)"))
    gamma: float = field(
        default=1.0, metadata=_help("discount; 1.0 since episodes are short and the reward is terminal")
    )
    features_dim: int = field(default=64, metadata=_help("width of the proxy's projection of the hidden state"))
    hidden: tuple[int, ...] = field(default=(64,), metadata=_help("hidden layer widths of each policy/value head"))
    bootstrap_truncated: bool = field(
        default=False,
        metadata=_help(
            "bootstrap the value at the response budget; off by default since the reward model scores the truncated response and nothing follows"
        ),
    )
    algo_kwargs: dict[str, Any] = field(
        default_factory=dict, metadata=_help("extra keyword arguments of the algorithm (CLI: JSON)")
    )
    tensorboard_log: str | None = field(default=None, metadata=_help("TensorBoard log folder (None: no logs)"))
    progress_bar: bool = field(default=False, metadata=_help("show a progress bar"))
    eval_freq: int = field(default=0, metadata=_help("evaluate on eval_prompts every this many steps (0: never)"))
    eval_episodes: int = field(default=16, metadata=_help("episodes per evaluation"))
    save_dir: str | None = field(
        default=None,
        metadata=_help(
            "checkpoint folder (model.safetensors + proxy_config.json), written at the end and on Ctrl-C/SIGTERM; "
            "a folder holding anything but a checkpoint is refused"
        ),
    )
    save_freq: int = field(default=0, metadata=_help("also checkpoint every this many steps (0: at the end only)"))
    resume: str | None = field(default=None, metadata=_help("continue training from this checkpoint folder"))
    trust_checkpoint: bool = field(
        default=False,
        metadata=_help(
            "allow --resume from an SB3 proxy.zip (format 1), whose loading unpickles Python objects and can run code"
        ),
    )
    init_accept_prob: float | None = field(
        default=0.9,
        metadata=_help("actor-critic proxies start at this P(accept) (near the unsteered LLM); None keeps SB3's init"),
    )
    time_limit_s: float = field(
        default=0.0, metadata=_help("stop training after this many seconds of wall time (0: no limit)")
    )
    verbose: int = field(default=0, metadata=_help("SB3 verbosity: 0, 1 (log tables) or 2"))

    def validate(self) -> None:
        """Check the values that do not need a model loaded; raise :class:`ConfigError` naming the field."""
        get_algo(self.algo)
        for name in ("num_envs", "total_timesteps", "eval_episodes", "features_dim"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)!r} must be an int >= 1.")
        for name in ("eval_freq", "save_freq"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}={getattr(self, name)!r} must be >= 0 (0 disables).")
        if self.save_freq and not self.save_dir:
            raise ConfigError(f"save_freq={self.save_freq} needs save_dir=...; pass a checkpoint folder.")
        if not isinstance(self.env, EnvConfig):
            raise ConfigTypeError(
                f"env={self.env!r} must be a proxy_env.EnvConfig (its fields are the env's settings)."
            )
        KLController(self.env.kl_coef, target=self.kl_target, horizon=self.kl_horizon)  # validates the three
        if self.resume is not None and not Path(self.resume).expanduser().is_dir():
            raise ConfigError(
                f"resume={self.resume!r} is not a checkpoint folder; pass a folder written by --save-dir."
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**32:
            raise ConfigError(
                f"seed={self.seed!r} must be an int in [0, 2**32) (SB3 seeds numpy's global RNG, which takes no more)."
            )
        _number("time_limit_s", self.time_limit_s, lambda v: v >= 0, ">= 0 seconds (0: no limit)")
        _number("gamma", self.gamma, lambda v: 0 <= v <= 1, "in [0, 1]")
        if self.learning_rate is not None:
            _number(
                "learning_rate",
                self.learning_rate,
                lambda v: 0 < v <= 1,
                "in (0, 1] (or None for the algorithm's default; typical: 1e-4 to 3e-3)",
            )
        if self.policy_device != "auto":
            from proxy_env.engine.lm import resolve_device

            resolve_device(self.policy_device)
        for key, (ok, what) in _ALGO_RANGES.items():
            if key in self.algo_kwargs and not (_is_number(self.algo_kwargs[key]) and ok(self.algo_kwargs[key])):
                raise ConfigError(f"algo_kwargs[{key!r}]={self.algo_kwargs[key]!r} must be {what}.")
        if self.init_accept_prob is not None:
            _number(
                "init_accept_prob", self.init_accept_prob, lambda v: 0 < v < 1, "in (0, 1) (or None to keep SB3's init)"
            )
        for name in ("n_steps", "batch_size"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"{name}={value!r} must be an int >= 1 (or None for the algorithm's default).")
        if self.save_dir is not None:
            check_save_dir(self.save_dir)


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


def _number(name: str, value: Any, ok: Any, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not ok(value):
        raise ConfigError(f"{name}={value!r} must be a finite number {what}.")


class TrainResult(NamedTuple):
    """What :func:`train` returns."""

    model: Any  # the trained SB3 algorithm
    checkpoint: Path | None  # the final checkpoint folder, if save_dir was set
    params: ParamReport  # proxy trainable params vs the LLM's
    evaluations: list[tuple[int, EvalResult]]  # (timestep, result) of each periodic evaluation
    kl_history: list[tuple[int, float, float]] = []  # with kl_coef: (timestep, β, mean KL per response) per rollout
    interrupted: str | None = (
        None  # "SIGINT"/"SIGTERM" when a signal stopped training early (the checkpoint was still saved)
    )


def resolve_lm(model: str | FrozenLM, device: str | None = None) -> FrozenLM:
    """``"tiny"`` -> :func:`proxy_env.engine.tiny.tiny_lm`; a :class:`FrozenLM` as is; anything else -> ``FrozenLM(model)``."""
    return as_frozen_lm(model, device=device)


def env_kwargs(cfg: TrainConfig) -> dict[str, Any]:
    """The env's keyword arguments of ``cfg`` but the KL charge, which only the training env pays."""
    return {name: value for name, value in cfg.env.kwargs().items() if name != "kl_coef"}


def config_dict(cfg: TrainConfig) -> dict[str, Any]:
    """``cfg`` as a dict for the checkpoint's record (``asdict`` would deep-copy a model object in ``cfg.env``)."""
    return {**{f.name: getattr(cfg, f.name) for f in fields(cfg) if f.name != "env"}, "env": cfg.env.kwargs()}


def make_sb3_env(
    kwargs: dict[str, Any], num_envs: int, *, seed: int | None = None, bootstrap_truncated: bool = True
) -> SB3VecEnv:
    """A :class:`SB3VecEnv` over ``gym.make_vec(ENV_ID, num_envs, **kwargs)``; ``"tiny"`` models resolved."""
    kwargs = dict(kwargs)
    if kwargs.get("model") == "tiny":
        kwargs["model"] = resolve_lm("tiny")
    venv = gym.make_vec(proxy_env.ENV_ID, num_envs=num_envs, vectorization_mode="vector_entry_point", **kwargs)
    env = SB3VecEnv(venv, bootstrap_truncated=bootstrap_truncated)
    if seed is not None:
        env.seed(seed)
    return env


def _algo_kwargs(cfg: TrainConfig) -> dict[str, Any]:
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


def build_agent(cfg: TrainConfig, env: SB3VecEnv) -> Any:
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
    if cfg.init_accept_prob is not None:
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


def _progress(cfg: TrainConfig) -> tuple[bool, list[BaseCallback]]:
    """SB3's own bar when tqdm and rich are installed, else a plain tqdm callback."""
    if not cfg.progress_bar:
        return False, []
    if _installed("rich") and _installed("tqdm"):
        return True, []
    return False, [TqdmCallback()]


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _check_resume(cfg: TrainConfig) -> None:
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


def train(
    cfg: TrainConfig, *, model: FrozenLM | None = None, reward: Any = None, callbacks: list[BaseCallback] | None = None
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
    cfg.validate()
    _check_resume(cfg)
    lock = lock_save_dir(cfg.save_dir) if cfg.save_dir else None
    try:
        with GracefulStop() as stop:
            return _train(cfg, model, reward, list(callbacks or []), stop)
    finally:
        if lock is not None:
            lock.release()


def _train(
    cfg: TrainConfig, model: FrozenLM | None, reward: Any, callbacks: list[BaseCallback], stop: GracefulStop
) -> TrainResult:
    lm = resolve_lm(model if model is not None else cfg.env.model, cfg.llm_device)
    kwargs = {**env_kwargs(cfg), "model": lm, "reward": reward if reward is not None else cfg.env.reward}
    penalty = (
        {"kl_coef": cfg.env.kl_coef} if cfg.env.kl_coef else {}
    )  # training only: checkpoints and evaluation envs pay no KL
    env = make_sb3_env({**kwargs, **penalty}, cfg.num_envs, seed=cfg.seed, bootstrap_truncated=cfg.bootstrap_truncated)
    evaluator = None
    kl_callback = (
        KLPenaltyCallback(KLController(cfg.env.kl_coef, target=cfg.kl_target, horizon=cfg.kl_horizon))
        if cfg.env.kl_coef
        else None
    )
    try:
        if cfg.resume is not None:
            check_lm(read_meta(cfg.resume), lm, cfg.resume)
        _check_rollout_memory(cfg, env)
        agent = build_agent(cfg, env)
        extra: list[BaseCallback] = [EpisodeStatsCallback(), StopOnSignalCallback(stop)]
        if kl_callback is not None:
            extra.append(kl_callback)
        if cfg.eval_freq > 0 and cfg.eval_prompts:
            eval_env = make_sb3_env(
                {**kwargs, "prompts": cfg.eval_prompts}, cfg.num_envs, bootstrap_truncated=cfg.bootstrap_truncated
            )
            evaluator = EvalCallback(eval_env, cfg.eval_freq, cfg.eval_episodes, seed=cfg.seed)
            extra.append(evaluator)
        # a model object loaded from cfg.env.model (the demo's) is recorded by that name, so the checkpoint loads on its own
        recorded = model if model is not None and getattr(model, "name", None) != cfg.env.model else None
        saved = {
            **env_kwargs(cfg),
            **({"model": recorded} if recorded is not None else {}),
            **({"reward": reward} if reward is not None else {}),
        }
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
        path = save_or_rescue(save, agent, cfg.save_dir) if save is not None else None
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


def _check_rollout_memory(cfg: TrainConfig, env: SB3VecEnv) -> None:
    """An on-policy rollout buffer holds n_steps x num_envs observations: refuse one that cannot fit in memory."""
    from proxy_env.guards import available_bytes, gib

    spec = get_algo(cfg.algo)
    n_steps = cfg.n_steps or int(cfg.algo_kwargs.get("n_steps", 0) or 0)
    if not spec.on_policy or not n_steps:
        return
    need = (
        n_steps * cfg.num_envs * (int(env.observation_space.shape[0]) + 8) * 4
    )  # float32 obs + a few scalars per step
    free = available_bytes(None)
    if free is not None and need > free:
        raise ConfigError(
            f"n_steps={n_steps} x num_envs={cfg.num_envs} rollouts of {env.observation_space.shape[0]}-float observations "
            f"need ~{gib(need)} GiB, more than the {gib(free)} GiB of memory available; lower n_steps or num_envs."
        )


def save_agent(
    agent: Any, *, path: str, env_kwargs: dict[str, Any], seed: int, config: dict[str, Any], lm: FrozenLM | None = None
) -> Path:
    return save_checkpoint(agent, path, env_kwargs=plain(env_kwargs), seed=seed, config=config, lm=lm)
