"""What every training backend shares: the base config, the typed result, and the one run skeleton.

A backend (:mod:`agents.train` for SB3, :mod:`agents.tilt.backend`, :mod:`agents.rllib.train`) subclasses
:class:`TrainConfig` with its own fields (as TRL's trainer configs subclass ``TrainingArguments``), so no
config and no ``proxy-rlhf train --backend X`` carries a flag that backend does not use. Each runs its
body inside :func:`run_training`: the config validated before anything loads, the save folder locked,
SIGINT/SIGTERM turned into a graceful stop, and the final save rescued beside ``save_dir`` if it fails
(:func:`agents.saving.checkpoint.save_or_rescue`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

from agents.callbacks import EvalResult
from agents.interrupt import GracefulStop
from agents.policies import ParamReport
from agents.saving.checkpoint import check_save_dir, lock_save_dir, plain, save_checkpoint
from proxy_env.config import EnvConfig
from proxy_env.engine.lm import FrozenLM
from proxy_env.engine.models import as_frozen_lm
from proxy_env.errors import ConfigError, ConfigTypeError


def help_text(text: str) -> dict[str, str]:
    """A dataclass field's metadata: its help, which the CLI flag shows (:mod:`agents.cli.flags`)."""
    return {"help": text}


@dataclass(kw_only=True)
class TrainConfig:
    """What every backend takes: the env, the budget, the proxy's shape, where to save. Each field is a flag."""

    env: EnvConfig = field(
        default_factory=EnvConfig, metadata=help_text("the env's settings: every field of proxy_env.EnvConfig")
    )
    num_envs: int = field(default=8, metadata=help_text("episodes run in parallel (rows of the batched LLM)"))
    total_timesteps: int = field(
        default=20_000, metadata=help_text("proxy decisions to train for (sb3 with --resume: additional ones)")
    )
    seed: int = field(default=0, metadata=help_text("seed of the algorithm and the environment"))
    policy_device: str = field(
        default="auto", metadata=help_text("torch device of the proxy policy: 'auto', 'cpu', 'cuda'")
    )
    llm_device: str | None = field(
        default=None, metadata=help_text("device of the frozen LLM (None: CUDA when available)")
    )
    learning_rate: float | None = field(default=None, metadata=help_text("learning rate (None: the backend's default)"))
    batch_size: int | None = field(default=None, metadata=help_text("minibatch size (None: the backend's default)"))
    features_dim: int = field(default=64, metadata=help_text("width of the proxy's projection of the hidden state"))
    hidden: tuple[int, ...] = field(default=(64,), metadata=help_text("hidden layer widths of each policy/value head"))
    init_accept_prob: float | None = field(
        default=0.9,
        metadata=help_text(
            "the proxy starts at this P(accept) (near the unsteered LLM); None keeps the library's init"
        ),
    )
    save_dir: str | None = field(
        default=None,
        metadata=help_text(
            "checkpoint folder (model.safetensors + proxy_config.json), written at the end and on Ctrl-C/SIGTERM; "
            "a folder holding anything but a checkpoint is refused"
        ),
    )
    tensorboard_log: str | None = field(default=None, metadata=help_text("TensorBoard log folder (None: no logs)"))
    progress_bar: bool = field(default=False, metadata=help_text("show a progress bar"))

    # settings of the env this backend refuses: its CLI shows no flag for them (RLlib: the KL charge)
    refused_env_settings: ClassVar[tuple[str, ...]] = ()

    def validate(self) -> None:
        """Check the values that need no model; raise :class:`ConfigError` naming the field. Backends extend it."""
        if not isinstance(self.env, EnvConfig):
            raise ConfigTypeError(
                f"env={self.env!r} must be a proxy_env.EnvConfig (its fields are the env's settings)."
            )
        for name in ("num_envs", "total_timesteps", "features_dim"):
            check_int(name, getattr(self, name), minimum=1)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**32:
            raise ConfigError(
                f"seed={self.seed!r} must be an int in [0, 2**32) (SB3 seeds numpy's global RNG, which takes no more)."
            )
        if self.learning_rate is not None:
            check_number(
                "learning_rate",
                self.learning_rate,
                lambda v: 0 < v <= 1,
                "in (0, 1] (or None for the backend's default; typical: 1e-4 to 3e-3)",
            )
        if self.batch_size is not None:
            check_int("batch_size", self.batch_size, minimum=1, hint="or None for the backend's default")
        if self.init_accept_prob is not None:
            check_number(
                "init_accept_prob", self.init_accept_prob, lambda v: 0 < v < 1, "in (0, 1) (or None to keep the init)"
            )
        if self.policy_device != "auto":
            from proxy_env.engine.lm import resolve_device

            resolve_device(self.policy_device)
        if self.save_dir is not None:
            check_save_dir(self.save_dir)


@dataclass(kw_only=True)
class RLConfig(TrainConfig):
    """What the backends that train by reinforcement learning (sb3, rllib) share, on top of :class:`TrainConfig`."""

    algo: str = field(
        default="ppo",
        metadata=help_text(
            "RL algorithm (sb3: an SB3/sb3-contrib algorithm of agents.algos; rllib: one of agents.rllib.backend.ALGOS)"
        ),
    )
    n_steps: int | None = field(
        default=None,
        metadata=help_text(
            "rollout length per env (sb3: on-policy algorithms; rllib: the fragment; None: the default)"
        ),
    )
    gamma: float = field(
        default=1.0, metadata=help_text("discount; 1.0 since episodes are short and the reward is terminal")
    )
    algo_kwargs: dict[str, Any] = field(
        default_factory=dict,
        metadata=help_text(
            "extra keyword arguments of the algorithm (sb3: its constructor; rllib: training(); CLI: JSON)"
        ),
    )
    save_freq: int = field(default=0, metadata=help_text("also checkpoint every this many steps (0: at the end only)"))
    time_limit_s: float = field(
        default=0.0, metadata=help_text("stop training after this many seconds of wall time (0: no limit)")
    )

    def validate(self) -> None:
        """The shared checks, then these fields'."""
        super().validate()
        if self.n_steps is not None:
            check_int("n_steps", self.n_steps, minimum=1, hint="or None for the algorithm's default")
        check_number("gamma", self.gamma, lambda v: 0 <= v <= 1, "in [0, 1]")
        if not isinstance(self.algo_kwargs, dict):
            raise ConfigTypeError(f"algo_kwargs={self.algo_kwargs!r} must be a dict of keyword arguments.")
        check_int("save_freq", self.save_freq, minimum=0, hint="0 disables")
        if self.save_freq and not self.save_dir:
            raise ConfigError(f"save_freq={self.save_freq} needs save_dir=...; pass a checkpoint folder.")
        check_number("time_limit_s", self.time_limit_s, lambda v: v >= 0, ">= 0 seconds (0: no limit)")


def check_number(name: str, value: Any, ok: Callable[[float], bool], what: str) -> None:
    """``value`` must be a finite real number for which ``ok`` holds; else a ConfigError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not ok(value):
        raise ConfigError(f"{name}={value!r} must be a finite number {what}.")


def check_int(name: str, value: Any, *, minimum: int, hint: str = "") -> None:
    """``value`` must be an int (not a bool) >= ``minimum``; else a ConfigError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name}={value!r} must be an int >= {minimum}" + (f" ({hint})" if hint else "") + ".")


class KLRecord(NamedTuple):
    """One point of a run's KL trace."""

    step: int  # SB3: timesteps at the end of the rollout; tilt: the fitting epoch
    beta: float  # the KL coefficient then
    kl: float  # mean KL, in nats, per what ``per`` says
    per: str  # "response" (SB3: Σ log π/q of the rollout's finished responses) or "position" (tilt: exact KL)


class TrainResult(NamedTuple):
    """What every backend's training call returns."""

    model: Any  # the trained proxy: an SB3 algorithm (RLlib's DQN: its weights)
    checkpoint: Path | None  # the final checkpoint folder, if save_dir was set
    params: ParamReport  # proxy trainable params vs the LLM's
    evaluations: list[tuple[int, EvalResult]] = []  # (timestep, result) of each periodic evaluation (SB3)
    kl_history: list[KLRecord] = []  # the KL trace (SB3 with kl_coef, tilt)
    interrupted: str | None = None  # "SIGINT"/"SIGTERM" when a signal stopped training early (the checkpoint was saved)


def run_training(cfg: TrainConfig, body: Callable[[GracefulStop], TrainResult]) -> TrainResult:
    """The skeleton of every backend: ``cfg.validate()`` before anything loads, the save folder locked for this
    run (a second run on it fails at once), then ``body(stop)`` with the first SIGINT/SIGTERM turned into
    ``stop.received`` (a second one interrupts at once)."""
    cfg.validate()
    lock = lock_save_dir(cfg.save_dir) if cfg.save_dir else None
    try:
        with GracefulStop() as stop:
            return body(stop)
    finally:
        if lock is not None:
            lock.release()


def resolve_lm(model: str | FrozenLM, device: str | None = None) -> FrozenLM:
    """``"tiny"`` -> :func:`proxy_env.engine.tiny.tiny_lm`; a :class:`FrozenLM` as is; anything else -> ``FrozenLM(model)``."""
    return as_frozen_lm(model, device=device)


def env_kwargs(cfg: TrainConfig) -> dict[str, Any]:
    """The env's keyword arguments of ``cfg`` but the KL charge, which only the training env pays."""
    return {name: value for name, value in cfg.env.kwargs().items() if name != "kl_coef"}


def saved_env_kwargs(cfg: TrainConfig, model: Any, reward: Any) -> dict[str, Any]:
    """The env kwargs a checkpoint records: a model object loaded from ``cfg.env.model`` (the demo's) is recorded by
    that name, so the checkpoint loads on its own; another model object or a reward callable as themselves."""
    recorded = model if model is not None and getattr(model, "name", None) != cfg.env.model else None
    return {
        **env_kwargs(cfg),
        **({"model": recorded} if recorded is not None else {}),
        **({"reward": reward} if reward is not None else {}),
    }


def config_dict(cfg: TrainConfig) -> dict[str, Any]:
    """``cfg`` as a dict for the checkpoint's record (``asdict`` would deep-copy a model object in ``cfg.env``)."""
    return {**{f.name: getattr(cfg, f.name) for f in fields(cfg) if f.name != "env"}, "env": cfg.env.kwargs()}


def checkpoint_saver(cfg: TrainConfig, model: Any, reward: Any, lm: FrozenLM, config: dict[str, Any]) -> Any:
    """``save(agent)`` writing ``cfg.save_dir`` with what every backend records (:func:`save_agent`); None without a folder."""
    if not cfg.save_dir:
        return None
    from functools import partial

    return partial(
        save_agent,
        path=cfg.save_dir,
        env_kwargs=saved_env_kwargs(cfg, model, reward),
        seed=cfg.seed,
        config=config,
        lm=lm,
    )


def save_agent(
    agent: Any, *, path: str, env_kwargs: dict[str, Any], seed: int, config: dict[str, Any], lm: FrozenLM | None = None
) -> Path:
    """Write ``agent`` as a checkpoint folder (:func:`agents.saving.checkpoint.save_checkpoint`)."""
    return save_checkpoint(agent, path, env_kwargs=plain(env_kwargs), seed=seed, config=config, lm=lm)


def update_loop(
    cfg: RLConfig, agent: Any, save: Any, stop: GracefulStop, *, desc: str, update: Callable[[], int]
) -> Path | None:
    """The outer loop of a backend that drives its own rollouts (:mod:`agents.torch_ppo`, :mod:`agents.tianshou_backend`):
    ``update()`` (one rollout and its update, returning the decisions collected so far) until the budget, a signal
    or ``cfg.time_limit_s``, with the progress bar and ``cfg.save_freq``'s saves; then the final save (rescued beside
    ``cfg.save_dir`` if it fails), its path or None without a folder."""
    import time

    from agents.saving.checkpoint import periodic_save, save_or_rescue

    bar = None
    if cfg.progress_bar:
        from tqdm import tqdm

        bar = tqdm(total=cfg.total_timesteps, unit="decisions", desc=desc)
    try:
        start, steps, saved_at = time.perf_counter(), 0, 0
        while steps < cfg.total_timesteps and stop.received is None:
            steps = update()
            if bar is not None:
                bar.update(min(steps, cfg.total_timesteps) - bar.n)
            if save is not None and cfg.save_freq and steps - saved_at >= cfg.save_freq:
                periodic_save(save, agent)
                saved_at = steps
            if cfg.time_limit_s and time.perf_counter() - start >= cfg.time_limit_s:
                break
    finally:
        if bar is not None:
            bar.close()
    return save_or_rescue(save, agent, cfg.save_dir) if save is not None and cfg.save_dir else None


def run_folder(folder: str | None, name: str) -> Path | None:
    """``folder/<name>_<N>`` with N one past the last run there (SB3's numbering of ``ppo_<N>``), or None without a folder."""
    if not folder:
        return None
    import glob

    root = Path(folder).expanduser()
    numbers = [p.name[len(name) + 1 :] for p in root.glob(f"{glob.escape(name)}_*")]
    return root / f"{name}_{1 + max([int(n) for n in numbers if n.isdigit()] or [0])}"
